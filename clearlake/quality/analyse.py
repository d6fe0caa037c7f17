"""One image's bytes in, its checksum, decode outcome and metrics out.

`analyse` is the per-image unit of work shared by the local `score` command
and the distributed pipeline: it hashes, decodes once (`decode.decode`) and
measures (`metrics.measure`). Bad input never raises — it comes back as a
typed outcome with a reason; programming errors do propagate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from clearlake.quality import decode as decoding
from clearlake.quality import metrics
from clearlake.quality.types import Outcome

ANALYSIS_VERSION = f"{metrics.METRIC_SET_VERSION}+dec{decoding.DECODER_VERSION}"
"""Identifies what `analyse` computes: the metric set and the decoding rules.

Cached analyses are valid only under the same version (a change of decoding
rules changes pixels, hence metrics, even when the metric code is unchanged).
"""


@dataclass(frozen=True)
class Analysis:
    """The result of analysing one image's bytes.

    Attributes:
        sha256: hex SHA-256 of the bytes (the content key metrics are cached under).
        size: number of bytes.
        outcome: how decoding went.
        reason: why decoding failed; empty when `outcome` is OK.
        width: width in pixels after orientation (from the header when the image
            was refused; 0 when not even the header could be read).
        height: height in pixels, likewise.
        metrics: ``{name: value}`` in `metrics.METRIC_NAMES` order, or None
            unless `outcome` is OK.
    """

    sha256: str
    size: int
    outcome: Outcome
    reason: str = ""
    width: int = 0
    height: int = 0
    metrics: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        """True when the image decoded and was measured."""
        return self.outcome is Outcome.OK


def analyse(data: bytes, *, max_pixels: int | None = None, sha256: str | None = None) -> Analysis:
    """Hash, decode and measure one image.

    Args:
        data: the image file's bytes.
        max_pixels: pixel limit for decoding (see `decode.decode`); None means
            the configured default (`CLEARLAKE_MAX_PIXELS`, else the 52.7 megapixels
            that the 2.75 GiB per-image memory budget allows).
        sha256: the hex SHA-256 of `data` when the caller has just computed it
            (to look the bytes up in a cache), so it is not computed twice.

    Returns:
        The analysis; never raises for bad image bytes.
    """
    digest = sha256 if sha256 is not None else hashlib.sha256(data).hexdigest()
    result = decoding.decode(data, max_pixels=max_pixels)
    if result.outcome is not Outcome.OK or result.image is None:
        # The header's size, where it could be read, says whether a cached refusal
        # still holds under another pixel limit; reading it again costs microseconds.
        width = height = 0
        header, _ = decoding.read_header(data)
        if header is not None:
            width, height = header.width, header.height
            if header.orientation in (5, 6, 7, 8):
                width, height = height, width
        return Analysis(digest, len(data), result.outcome, result.reason, width, height)
    image = result.image
    return Analysis(
        sha256=digest,
        size=len(data),
        outcome=Outcome.OK,
        width=image.width,
        height=image.height,
        metrics=metrics.measure(image),
    )
