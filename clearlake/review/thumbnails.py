"""Thumbnails of images, made server-side with OpenCV and cached on disk by SHA-256.

An image is decoded with clearlake's own decoder (`quality.decode`: orientation,
8 bits, and the pixel limit checked from the header before anything is allocated),
shrunk to fit a square of 256 (grid) or 1024 (image page) pixels, and encoded as
JPEG. The cache file is named by the SHA-256 of the image's bytes and the size, so
the same bytes on any path, branch or repository are shrunk once. An image that
cannot be decoded gets a typed placeholder (SVG) naming its outcome instead.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clearlake.quality.decode import decode
from clearlake.quality.types import Outcome

SIZES = (256, 1024)
JPEG_QUALITY = 85
SHA256 = re.compile(r"[0-9a-f]{64}")
# Decoding an image may take up to the per-image memory budget (2.75 GiB): the bridge
# decodes one at a time, and a cached thumbnail costs no decode at all.
_DECODING = threading.Semaphore(1)
OUTCOME_COLOURS = {"corrupt": "#b42318", "unsupported": "#7a5af8", "too_large": "#b54708",
                   "failed": "#475467", "unverified": "#344054"}


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail to send: its bytes and media type."""

    data: bytes
    media_type: str


def shrink(image: np.ndarray, size: int) -> np.ndarray:
    """`image` scaled to fit a `size` × `size` square (never enlarged)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return image
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, target, interpolation=cv2.INTER_AREA)


def render(data: bytes, size: int) -> Thumbnail:
    """A JPEG thumbnail of image bytes, or a placeholder naming why there is none."""
    with _DECODING:
        result = decode(data)
        if result.outcome != Outcome.OK or result.image is None:
            return placeholder(str(result.outcome), result.reason)
        pixels = result.image.colour if result.image.colour is not None else result.image.grey
        ok, encoded = cv2.imencode(".jpg", shrink(pixels, size),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        return placeholder("corrupt", "OpenCV could not encode a thumbnail")
    return Thumbnail(encoded.tobytes(), "image/jpeg")


def placeholder(outcome: str, reason: str = "", size: int = 256) -> Thumbnail:
    """A square SVG that says what happened to an image instead of showing it."""
    colour = OUTCOME_COLOURS.get(outcome, "#475467")
    words, lines = [w[:30] for w in reason.split()], ["", ""]
    for line in range(len(lines)):  # two lines of the reason, at most 34 characters each
        while words and len(lines[line]) + len(words[0]) < 34:
            lines[line] += words.pop(0) + " "
    if words:
        lines[1] = lines[1].rstrip() + "…"
    detail = "".join(
        f'<text x="128" y="{156 + 14 * i}" text-anchor="middle" font-family="sans-serif" '
        f'font-size="11" fill="#475467">{html.escape(text.strip())}</text>'
        for i, text in enumerate(lines) if text)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 256 256" role="img" aria-label="{html.escape(outcome)}">'
        f'<rect width="256" height="256" fill="#f2f4f7"/>'
        f'<rect x="8" y="8" width="240" height="240" rx="12" fill="none" stroke="{colour}" '
        f'stroke-width="3" stroke-dasharray="10 6"/>'
        f'<text x="128" y="128" text-anchor="middle" font-family="sans-serif" font-size="26" '
        f'font-weight="700" fill="{colour}">{html.escape(outcome)}</text>{detail}</svg>'
    )
    return Thumbnail(svg.encode(), "image/svg+xml")


class ThumbnailCache:
    """JPEG thumbnails on disk, `<root>/<sha[:2]>/<sha>-<size>.jpg`.

    Args:
        root: the cache directory (under the stack's state directory).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, sha256: str, size: int) -> Path:
        if not SHA256.fullmatch(sha256) or size not in SIZES:
            raise ValueError("not a SHA-256 and thumbnail size")
        return self.root / sha256[:2] / f"{sha256}-{size}.jpg"

    def get(self, sha256: str, size: int) -> Thumbnail | None:
        """The cached thumbnail of these bytes at this size, if made before."""
        try:
            return Thumbnail(self._file(sha256, size).read_bytes(), "image/jpeg")
        except FileNotFoundError:
            return None

    def make(self, data: bytes, size: int) -> Thumbnail:
        """The thumbnail of image bytes, from the cache or made (and cached if a JPEG)."""
        sha256 = hashlib.sha256(data).hexdigest()
        if (cached := self.get(sha256, size)) is not None:
            return cached
        thumbnail = render(data, size)
        if thumbnail.media_type == "image/jpeg":
            path = self._file(sha256, size)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            partial.write_bytes(thumbnail.data)
            os.replace(partial, path)  # readers see a whole file or none
        return thumbnail
