"""The one image decoder: bytes in, a `DecodeResult` out, never an exception for bad input.

Every path that turns stored bytes into pixels (the local `score` command, the
distributed pipeline, the tests) calls `decode`, so that the same bytes always
give the same pixels and the same typed outcome.

How it works, and why:

1. **Sniff** the format from its magic bytes (never from a file name).
   Unknown bytes are `corrupt` ("not an image"); a recognised format that this
   decoder does not read (HEIC, SVG, PSD, JPEG XL, …) is `unsupported`.
2. **Read the header only** — JPEG frame header, PNG IHDR and GIF descriptors
   are parsed here; WebP, TIFF, BMP, PNM, JPEG 2000 and AVIF go through
   Pillow's lazy `Image.open`, which reads the header and decodes nothing — and
   refuse more than `max_pixels` pixels as `too_large` *before* any pixel
   buffer is allocated, so a decompression bomb costs a few microseconds.
   The default limit is derived from a per-image memory budget (below); TIFF
   tiles count too, since OpenCV allocates a whole tile however small the image.
   The same pass finds truncation that OpenCV would otherwise paper over
   (a JPEG with no end-of-image marker after its scan data, a PNG without
   IEND) and the EXIF orientation.
3. **Decode once** with `cv2.imdecode(…, IMREAD_UNCHANGED)` (full resolution,
   never the `IMREAD_REDUCED_*` modes), then normalise deterministically:

   - **16-bit samples** become 8-bit by keeping the high byte (`v >> 8`), the
     rule `cv2.imread` itself applies, so a 16-bit copy of an 8-bit image
     (`v·257`) decodes to exactly the 8-bit pixels. Floating-point and other
     sample types are `unsupported` (they have no defined display range).
   - **Alpha** is composited over white, `(c·a + 255·(255−a) + 127) // 255`,
     i.e. what a viewer shows on a white page; the colour under fully
     transparent pixels is often garbage and must not be measured.
   - **CMYK JPEGs** (including Adobe's inverted CMYK) are converted to BGR by
     OpenCV's JPEG decoder, which matches Pillow's conversion to ±1–2 levels.
   - **Greyscale sources** (JPEG with one component, PNG colour types 0 and 4,
     Pillow modes without colour) give `colour=None` and the plane as `grey`.
   - **EXIF orientation** (JPEG APP1, PNG eXIf, WebP/AVIF EXIF) is applied
     here with exact pixel transposes/flips; OpenCV's TIFF decoder already
     applies the TIFF orientation tag itself, so it is not applied twice.
   - **Animated or multi-frame files** (GIF, APNG, WebP, TIFF, AVIF with more
     than one frame) are `unsupported`: one frame does not stand for the file,
     and which frame would be arbitrary. A single-frame GIF is decoded (by
     OpenCV, when its build reads GIF; otherwise it is `unsupported`).

`grey` is `cv2.cvtColor(colour, COLOR_BGR2GRAY)`. The returned arrays are
read-only, since several metrics share them.

**Memory budget.** Decoding and measuring one image takes, above the
process's baseline, about 28–31 bytes per pixel for photographs and up to
51 B/px for the worst content found (stripes one or two pixels wide, which
make every pixel an edge for `metrics.calc_edge_width`), measured with VmHWM
at 24–100 MP; images under 16.8 MP cost more per pixel (the metrics keep
their scratch buffers) but stay under 0.9 GiB. The default pixel limit is
`IMAGE_MEMORY_BUDGET // BYTES_PER_PIXEL` = 2.75 GiB / 56 B = 52,728,393
pixels: cameras up to ~50 MP are analysed (a 50 MP photograph peaks at about
1.35 GiB), and no image the default limit admits, whatever its content, takes
more than 2.75 GiB of a worker. The 16-bit and alpha normalisation runs in row
bands, so decoding needs little more than the decoder's own output.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from clearlake.quality.types import DecodedImage, DecodeResult, Outcome

IMAGE_MEMORY_BUDGET = 11 << 28
"""Memory (bytes, 2.75 GiB) one image may take to decode and measure, above the baseline."""

BYTES_PER_PIXEL = 56
"""Peak bytes per pixel of decoding and measuring an image over 16.8 MP, worst content.

Measured: 28–31 for photographs, 51 for pixel-wide stripes; rounded up for margin.
"""

DEFAULT_MAX_PIXELS = IMAGE_MEMORY_BUDGET // BYTES_PER_PIXEL
"""Default pixel limit (width × height from the header): 52,728,393, about 52.7 MP.

Derived from the memory budget; it admits the largest full-frame cameras
(8688 × 5792 = 50.3 MP) and refuses 61 MP and medium-format 100 MP files,
which need `CLEARLAKE_MAX_PIXELS` raised (and up to 56 bytes per pixel of memory).
"""

MAX_PIXELS_ENV = "CLEARLAKE_MAX_PIXELS"
"""Environment variable that overrides `DEFAULT_MAX_PIXELS` (and so the memory budget)."""

DECODER_VERSION = "1"
"""Bumped whenever a rule above changes the pixels or outcome for some bytes."""

if TYPE_CHECKING:
    from types import ModuleType

# JPEG frame headers (SOF0–SOF15 except DHT=C4, JPG=C8, DAC=CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112

# Pillow formats whose header Pillow reads lazily, and the OpenCV build-info
# key of the codec that decodes them.
_PIL_FORMATS = {
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "BMP": None,  # always built into OpenCV
    "JPEG2000": "JPEG 2000",
    "PPM": "PXM",
    "AVIF": "AVIF",
}
# OpenCV's TIFF decoder applies the orientation tag by itself.
_DECODER_ORIENTS = frozenset({"TIFF"})
# Samples per step of the 16-bit/alpha normalisation: its temporaries stay a few MiB.
_BAND_ELEMENTS = 1 << 20
# TIFF tags of the tile size.
_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 322, 323
# Pillow modes that carry no colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# ISO-BMFF brands (the `ftyp` box of HEIF-family files).
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

# Recognised formats this decoder refuses, by magic prefix.
_UNSUPPORTED_MAGIC = (
    (b"8BPS", "Photoshop PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "Windows ICO"),
    (b"\x00\x00\x02\x00", "Windows CUR"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR (floating point)"),
    (b"#?RGBE", "Radiance HDR (floating point)"),
    (b"qoif", "QOI"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"PF\n", "PFM (floating point)"),
    (b"Pf\n", "PFM (floating point)"),
    (b"II\xbc", "JPEG XR"),
    (b"DDS ", "DirectDraw surface"),
)


class _Reject(Exception):
    """Raised inside this module to stop decoding with a typed outcome."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image says, read without decoding any pixel.

    Attributes:
        format: short format name (``JPEG``, ``PNG``, ``GIF``, ``WEBP``, …).
        width: stored width in pixels (before orientation).
        height: stored height in pixels (before orientation).
        grey: True when the source has no colour planes.
        orientation: EXIF orientation 1–8 still to be applied (1 = none).
        frames: number of frames, counted up to 2 where counting is costly.
        tile_pixels: pixels of one TIFF tile (0 when not tiled); OpenCV allocates a
            whole tile, however small the image.
    """

    format: str
    width: int
    height: int
    grey: bool
    orientation: int = 1
    frames: int = 1
    tile_pixels: int = 0

    @property
    def pixels(self) -> int:
        """Width × height as stored (the largest buffer a decoder would allocate per plane)."""
        return self.width * self.height


def default_max_pixels() -> int:
    """The configured pixel limit: `CLEARLAKE_MAX_PIXELS` if set, else `DEFAULT_MAX_PIXELS`.

    Raises:
        ValueError: the environment variable is set but is not a positive integer.
    """
    from clearlake.settings import settings

    return settings().max_pixels or DEFAULT_MAX_PIXELS


def decode(data: bytes, *, max_pixels: int | None = None) -> DecodeResult:
    """Decode image bytes into 8-bit BGR (or grey) planes, orientation applied.

    Args:
        data: the file's bytes.
        max_pixels: refuse images whose header announces more pixels than
            this (`too_large`) before decoding; None means `default_max_pixels()`.

    Returns:
        A `DecodeResult`: outcome `ok` with the image, or `corrupt`,
        `unsupported` or `too_large` with a one-line reason.
    """
    limit = default_max_pixels() if max_pixels is None else max_pixels
    try:
        header = _probe(data)
        _check_limit(header, limit)
        image = _decode_pixels(data, header)
    except _Reject as reject:
        return DecodeResult(reject.outcome, None, reject.reason)
    return DecodeResult(Outcome.OK, image, "")


def _probe(data: bytes) -> ImageHeader:
    """Read an image's header without decoding pixels; `_Reject` when that is not possible."""
    if not data:
        raise _Reject(Outcome.CORRUPT, "empty file (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_header(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png_header(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif_header(data)
    pil_format = _pil_format(data)
    if pil_format is not None:
        return _pil_header(data, pil_format)
    raise _Reject(*_unrecognised(data))


def read_header(data: bytes) -> tuple[ImageHeader | None, DecodeResult | None]:
    """Read an image's header without decoding any pixel.

    Args:
        data: the file's bytes.

    Returns:
        ``(header, None)`` when the header could be read, else ``(None, result)``.
    """
    try:
        return _probe(data), None
    except _Reject as reject:
        return None, DecodeResult(reject.outcome, None, reject.reason)


# --- format sniffing -----------------------------------------------------------------


def _pil_format(data: bytes) -> str | None:
    """The Pillow format name for formats read through Pillow's header parser, if any."""
    head = data[:32]
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if re.match(rb"P[1-6]\s", head):
        return "PPM"
    if head[4:8] == b"ftyp" and _ftyp_brands(data) & _AVIF_BRANDS:
        return "AVIF"
    return None


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF `ftyp` box."""
    size = int.from_bytes(data[:4], "big")
    box = data[8 : min(size, 256)]
    return {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # skip minor version


def _unrecognised(data: bytes) -> tuple[Outcome, str]:
    """Outcome and reason for bytes that no supported format claims."""
    if data[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if brands & _HEIF_BRANDS:
            return Outcome.UNSUPPORTED, "HEIF/HEIC image: OpenCV cannot decode it"
        if brands & _AVIF_BRANDS:  # AVIF whose header Pillow could not take
            return Outcome.UNSUPPORTED, "AVIF image: no AVIF support in this build"
        return Outcome.UNSUPPORTED, "ISO media file (video or unknown HEIF variant), not an image"
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return Outcome.UNSUPPORTED, f"{name}: not a format clearlake decodes"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in text:
        return Outcome.UNSUPPORTED, "SVG (vector drawing): not a raster image"
    return Outcome.CORRUPT, "not an image: no known image signature at the start of the file"


# --- header parsers -------------------------------------------------------------------


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (1–8) of an EXIF/TIFF structure; 1 when absent or malformed."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            break
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag != _EXIF_ORIENTATION_TAG:
            continue
        if kind == 3:  # SHORT, as the standard says
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
        elif kind == 4:  # LONG, seen in some writers
            (value,) = struct.unpack_from(order + "I", tiff, entry + 8)
        else:
            return 1
        return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_header(data: bytes) -> ImageHeader:
    """Walk JPEG marker segments up to the first scan; check the scan data is complete."""
    size = len(data)
    pos = 2
    frame: tuple[int, int, int] | None = None  # height, width, components
    orientation = 1
    exif_seen = False
    scan_start = -1
    while pos < size:
        if data[pos] != 0xFF:
            raise _Reject(Outcome.CORRUPT, f"corrupt JPEG: expected a marker at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise _Reject(Outcome.CORRUPT, "corrupt JPEG: end-of-image before any image data")
        if pos + 2 > size:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            break
        if marker in _JPEG_SOF and frame is None:
            if length < 8:
                raise _Reject(Outcome.CORRUPT, "corrupt JPEG: short frame header")
            _, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            frame = (height, width, components)
        elif marker == 0xE1 and not exif_seen and data[pos + 2 : pos + 8] == b"Exif\x00\x00":
            exif_seen = True  # the first EXIF block is the image's own
            orientation = _exif_orientation(data[pos + 8 : pos + length])
        elif marker == 0xDA:
            scan_start = pos + length
            break
        pos += length
    if scan_start < 0:
        raise _Reject(Outcome.CORRUPT, "truncated JPEG: the file ends inside its headers")
    if frame is None:
        raise _Reject(Outcome.CORRUPT, "corrupt JPEG: no frame header before the image data")
    height, width, components = frame
    if width == 0 or height == 0:
        raise _Reject(Outcome.UNSUPPORTED, "JPEG whose height is set after the data (DNL)")
    # Entropy-coded data escapes 0xFF as FF00, so FFD9 after the first scan can
    # only be the end-of-image marker. OpenCV fills a truncated scan with grey
    # in some versions, so its absence is the truncation test.
    if data.rfind(b"\xff\xd9", scan_start) < 0:
        raise _Reject(Outcome.CORRUPT, "truncated JPEG: no end-of-image marker after the scan data")
    return ImageHeader("JPEG", width, height, components == 1, orientation)


def _png_header(data: bytes) -> ImageHeader:
    """Walk PNG chunks: IHDR for size and colour type, eXIf, acTL (animation), IEND."""
    size = len(data)
    pos = len(_PNG_SIGNATURE)
    ihdr: tuple[int, int, int] | None = None
    orientation = 1
    frames = 1
    while True:
        if pos + 8 > size:
            raise _Reject(Outcome.CORRUPT, "truncated PNG: the file ends before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > size:
            raise _Reject(Outcome.CORRUPT, f"truncated PNG: chunk {kind!r} runs past the end")
        if ihdr is None:
            if kind != b"IHDR" or length < 13:
                raise _Reject(Outcome.CORRUPT, "corrupt PNG: the first chunk is not IHDR")
            width, height, _depth, colour_type = struct.unpack_from(">IIBB", data, pos + 8)
            ihdr = (width, height, colour_type)
        elif kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8 : pos + 8 + length])
        elif kind == b"acTL" and length >= 8:
            (frames,) = struct.unpack_from(">I", data, pos + 8)
        elif kind == b"IEND":
            break
        pos = end
    width, height, colour_type = ihdr
    if width == 0 or height == 0:
        raise _Reject(Outcome.CORRUPT, "corrupt PNG: zero width or height")
    return ImageHeader("PNG", width, height, colour_type in (0, 4), orientation, max(frames, 1))


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    """Position after a chain of GIF data sub-blocks starting at `pos`."""
    size = len(data)
    while pos < size:
        block = data[pos]
        pos += 1
        if block == 0:
            return pos
        pos += block
    raise _Reject(Outcome.CORRUPT, "truncated GIF: the file ends inside a data block")


def _gif_header(data: bytes) -> ImageHeader:
    """Count GIF frames (up to 2) and take the largest extent any frame reaches."""
    size = len(data)
    if size < 13:
        raise _Reject(Outcome.CORRUPT, "truncated GIF: no screen descriptor")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while True:
        if pos >= size:
            raise _Reject(Outcome.CORRUPT, "truncated GIF: no trailer")
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            if pos + 10 > size:
                raise _Reject(Outcome.CORRUPT, "truncated GIF: short image descriptor")
            left, top, frame_w, frame_h, frame_flags = struct.unpack_from("<HHHHB", data, pos + 1)
            # A frame may extend past the logical screen; the decoder allocates for it.
            width, height = max(width, left + frame_w), max(height, top + frame_h)
            frames += 1
            if frames > 1:
                break  # animated: no need to read further
            pos += 10
            if frame_flags & 0x80:
                pos += 3 << ((frame_flags & 7) + 1)
            pos = _skip_gif_sub_blocks(data, pos + 1)  # +1: LZW minimum code size
        else:
            raise _Reject(Outcome.CORRUPT, f"corrupt GIF: unknown block 0x{block:02x}")
    if frames == 0 or width == 0 or height == 0:
        raise _Reject(Outcome.CORRUPT, "corrupt GIF: no image in the file")
    return ImageHeader("GIF", width, height, grey=False, frames=frames)


@functools.cache
def _pillow() -> ModuleType:
    """`PIL.Image`, imported on first use: JPEG, PNG and GIF headers never need it, and
    the import would add some 40 ms to the start of every `clearlake score`."""
    from PIL import Image

    # This module enforces its own pixel limit before Pillow is asked anything, and
    # reports damaged files as outcomes: Pillow's bomb warning (at ~89 MP) and its
    # TIFF plugin's warnings about damaged tags would only be noise on stderr.
    # (Process-wide filters, not `catch_warnings`, which is not thread-safe.)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
    return Image


def _pil_header(data: bytes, pil_format: str) -> ImageHeader:
    """Header of a format whose header Pillow parses lazily (no pixel decoding)."""
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data), formats=[pil_format]) as image:
            width, height = image.size
            mode = image.mode
            frames = getattr(image, "n_frames", 1)
            orientation = 1
            if pil_format not in _DECODER_ORIENTS:
                orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
            tile_pixels = 0
            if pil_format == "TIFF":
                tags = image.tag_v2
                tile_w, tile_h = tags.get(_TIFF_TILE_WIDTH), tags.get(_TIFF_TILE_LENGTH)
                if isinstance(tile_w, int) and isinstance(tile_h, int):
                    tile_pixels = tile_w * tile_h
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (2× its MAX_IMAGE_PIXELS) fires before it reports a size.
        raise _Reject(Outcome.TOO_LARGE, f"{pil_format}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        raise _Reject(Outcome.CORRUPT, f"corrupt {pil_format}: {exc}") from None
    except (TypeError, RuntimeError) as exc:
        # Found by fuzzing: Pillow's TIFF plugin raises TypeError("Missing dimensions")
        # and its AVIF plugin RuntimeError("Failed to decode image: …") on damaged headers.
        raise _Reject(Outcome.CORRUPT, f"corrupt {pil_format}: {exc}") from None
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    grey = mode in _GREY_MODES
    return ImageHeader(pil_format, width, height, grey, orientation, frames, tile_pixels)


# --- limits and decoding --------------------------------------------------------------


def too_large_reason(width: int, height: int, limit: int) -> str:
    """The reason given for a `too_large` refusal (one wording, wherever it is decided).

    Args:
        width: width in pixels, after orientation.
        height: height in pixels, after orientation.
        limit: the pixel limit exceeded.

    Returns:
        A one-line reason naming the memory budget the limit stands for.
    """
    return (
        f"{width}×{height} = {width * height:,} pixels exceeds the limit of {limit:,}"
        f" {_budget_note(limit)}"
    )


def _budget_note(limit: int) -> str:
    """``(per-image memory budget …)``: what a pixel limit means in memory."""
    memory = limit * BYTES_PER_PIXEL
    if memory >= 2**30:
        amount = f"{memory / 2**30:.2f}".rstrip("0").rstrip(".") + " GiB"
    else:
        amount = f"{memory / 2**20:.0f} MiB"
    return f"(per-image memory budget {amount} at {BYTES_PER_PIXEL} bytes per pixel)"


def _check_limit(header: ImageHeader, limit: int) -> None:
    """Refuse, before decoding, what is too large, animated, or unreadable by this OpenCV."""
    if header.pixels > limit:
        width, height = header.width, header.height
        if header.orientation in (5, 6, 7, 8):
            width, height = height, width
        raise _Reject(Outcome.TOO_LARGE, too_large_reason(width, height, limit))
    if header.tile_pixels > limit:
        # A few-pixel image with huge, zlib-bombed tiles: OpenCV would fill a whole tile.
        raise _Reject(
            Outcome.TOO_LARGE,
            f"{header.format} tiles of {header.tile_pixels:,} pixels exceed the limit of"
            f" {limit:,} {_budget_note(limit)}",
        )
    if header.frames > 1:
        raise _Reject(
            Outcome.UNSUPPORTED,
            f"animated or multi-frame {header.format}: one frame would not represent the file",
        )
    codec = "GIF" if header.format == "GIF" else _PIL_FORMATS.get(header.format)
    if codec is not None and not _opencv_reads(codec):
        raise _Reject(
            Outcome.UNSUPPORTED,
            f"{header.format}: this OpenCV {cv2.__version__} build has no {codec} decoder",
        )


@functools.cache
def _opencv_codecs() -> dict[str, str]:
    """Image codecs listed in OpenCV's build information, e.g. ``{"GIF": "YES"}``."""
    info = cv2.getBuildInformation()
    return {
        name: value.strip()
        for name, value in re.findall(r"^\s+([A-Z][A-Z0-9 ]*?):\s+(.*)$", info, re.MULTILINE)
    }


def _opencv_reads(codec: str) -> bool:
    """Whether this OpenCV build lists a decoder for `codec`."""
    value = _opencv_codecs().get(codec, "NO")
    return bool(value) and not value.upper().startswith("NO")


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1–8) exactly: pixel transposes and flips only."""
    if orientation == 2:
        return cv2.flip(pixels, 1)
    if orientation == 3:
        return cv2.rotate(pixels, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(pixels, 0)
    if orientation == 5:
        return cv2.transpose(pixels)
    if orientation == 6:
        return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(pixels), -1)
    if orientation == 8:
        return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return pixels


def _over_white(pixels: np.ndarray) -> np.ndarray:
    """Composite 8-bit colour+alpha (last channel) over white, rounding to nearest."""
    alpha = pixels[..., -1:].astype(np.uint16)
    colour = pixels[..., :-1].astype(np.uint16)
    # c·a + 255·(255−a) ≤ 255², so uint16 holds it with the +127 for rounding.
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _to_8bit(pixels: np.ndarray, alpha: bool) -> np.ndarray:
    """8-bit samples (high byte of 16-bit ones), alpha composited over white if `alpha`.

    Works in row bands: done on the whole image at once, the uint16 temporaries
    of 16-bit RGBA take about 20 bytes per pixel; in bands, only the 8-bit
    output and a few MiB come on top of the decoder's output.
    """
    channels = pixels.shape[2:]
    if alpha:
        channels = (channels[0] - 1,)
    out = np.empty(pixels.shape[:2] + channels, np.uint8)
    step = max(1, _BAND_ELEMENTS // max(1, pixels[0].size))
    for top in range(0, pixels.shape[0], step):
        band = pixels[top : top + step]
        if band.dtype == np.uint16:
            band = (band >> 8).astype(np.uint8)
        out[top : top + step] = _over_white(band) if alpha else band
    return out


def _decode_pixels(data: bytes, header: ImageHeader) -> DecodedImage:
    """Decode with OpenCV once, then normalise depth, alpha, orientation and greyscale."""
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "error"
        raise _Reject(Outcome.CORRUPT, f"{header.format}: OpenCV refused it: {message}") from None
    if pixels is None:
        raise _Reject(Outcome.CORRUPT, f"corrupt {header.format}: OpenCV could not decode it")
    if pixels.dtype != np.uint8 and pixels.dtype != np.uint16:
        raise _Reject(Outcome.UNSUPPORTED, f"{header.format} with {pixels.dtype} samples")
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if channels not in (1, 2, 3, 4):
        raise _Reject(Outcome.UNSUPPORTED, f"{header.format} with {channels} channels")
    alpha = channels in (2, 4)
    if alpha or pixels.dtype == np.uint16:
        pixels = _to_8bit(pixels, alpha)
    if pixels.ndim == 3 and (pixels.shape[2] == 1 or header.grey):
        # Grey sources decoded to several equal channels (grey+alpha) keep one.
        pixels = np.ascontiguousarray(pixels[..., 0])
    pixels = _orient(pixels, header.orientation)
    if pixels.ndim == 2:
        colour = None
        grey = pixels
    else:
        colour = pixels
        grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
        colour.flags.writeable = False
    grey.flags.writeable = False
    height, width = grey.shape
    return DecodedImage(colour=colour, grey=grey, width=width, height=height)
