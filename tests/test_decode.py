"""Decoding: every kind of bad input gets its typed outcome; good input decodes deterministically.

The corpus is generated here, from a real photograph scikit-learn ships.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from clearlake.quality import decode as decoding
from clearlake.quality.analyse import analyse
from clearlake.quality.decode import decode, read_header
from clearlake.quality.metrics import METRIC_NAMES, measure
from clearlake.quality.types import Outcome

# Pillow transposes that store a picture so that EXIF orientation `o` restores it.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 384×256 RGB crop of a real photograph (dimensions multiples of 16: whole JPEG MCUs)."""
    return Image.fromarray(load_sample_image("china.jpg")[64:320, 96:480])


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose header announces width × height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0) rewritten to claim width × height."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


# --- the bad-input corpus ---------------------------------------------------------------


def test_empty_bytes_are_corrupt() -> None:
    result = decode(b"")
    assert result.outcome is Outcome.CORRUPT
    assert result.image is None
    assert "empty" in result.reason


def test_random_bytes_are_corrupt() -> None:
    result = decode(np.random.default_rng(7).bytes(10_000))
    assert result.outcome is Outcome.CORRUPT
    assert "not an image" in result.reason


def test_text_is_corrupt() -> None:
    result = decode(b"This is a text file that someone named photo.jpg\n" * 20)
    assert result.outcome is Outcome.CORRUPT


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.95, -2])
def test_truncated_jpeg_is_corrupt(photo: Image.Image, progressive: bool, keep: float) -> None:
    data = encode(photo, "JPEG", quality=90, progressive=progressive)
    cut = data[:keep] if keep < 0 else data[: int(len(data) * keep)]
    result = decode(cut)
    assert result.outcome is Outcome.CORRUPT
    assert "truncated" in result.reason


def test_jpeg_with_trailing_data_after_eoi_is_ok(photo: Image.Image) -> None:
    # Cameras and phones append data (e.g. a motion-photo video) after the image.
    data = encode(photo, "JPEG", quality=90) + b"\x00trailer" * 100
    assert decode(data).outcome is Outcome.OK


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99, -12])
def test_truncated_png_is_corrupt(photo: Image.Image, keep: float) -> None:
    data = encode(photo, "PNG")
    cut = data[:keep] if keep < 0 else data[: int(len(data) * keep)]
    result = decode(cut)
    assert result.outcome is Outcome.CORRUPT
    assert "truncated PNG" in result.reason


def test_animated_gif_is_unsupported(photo: Image.Image) -> None:
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    result = decode(data)
    assert result.outcome is Outcome.UNSUPPORTED
    assert "animated" in result.reason


def test_single_frame_gif_decodes_when_opencv_reads_gif(photo: Image.Image) -> None:
    data = encode(photo, "GIF")
    result = decode(data)
    if not decoding._opencv_reads("GIF"):
        assert result.outcome is Outcome.UNSUPPORTED
        return
    assert result.outcome is Outcome.OK
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(result.image.colour, expected)


def test_animated_png_is_unsupported(photo: Image.Image) -> None:
    frames = [photo, photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert decode(data).outcome is Outcome.UNSUPPORTED


def test_multi_page_tiff_is_unsupported(photo: Image.Image) -> None:
    data = encode(photo, "TIFF", save_all=True, append_images=[photo.convert("L").convert("RGB")])
    assert decode(data).outcome is Outcome.UNSUPPORTED


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIF"),
        (b"8BPS\x00\x01" + bytes(64), "PSD"),
        (b"\xff\x0a" + bytes(64), "JPEG XL"),
    ],
)
def test_formats_opencv_cannot_read_are_unsupported(data: bytes, word: str) -> None:
    result = decode(data)
    assert result.outcome is Outcome.UNSUPPORTED
    assert word in result.reason


def test_floating_point_tiff_is_unsupported(photo: Image.Image) -> None:
    data = encode(photo.convert("F"), "TIFF")
    assert decode(data).outcome is Outcome.UNSUPPORTED


# --- too large: refused from the header, nothing allocated -------------------------------


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any call to OpenCV's decoder fail the test."""

    def refuse(*args: object) -> None:
        raise AssertionError("cv2.imdecode was called for an image refused by its header")

    monkeypatch.setattr(decoding.cv2, "imdecode", refuse)


def test_png_header_claiming_30000_squared_is_too_large(no_pixel_decoding: None) -> None:
    data = png_claiming(30_000, 30_000)
    tracemalloc.start()
    try:
        result = decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.outcome is Outcome.TOO_LARGE
    assert "30000×30000" in result.reason
    assert peak < 1_000_000  # a decoded 30000² RGB image would be 2.7 GB


def test_jpeg_header_claiming_30000_squared_is_too_large(
    photo: Image.Image, no_pixel_decoding: None
) -> None:
    data = jpeg_claiming(encode(photo, "JPEG", quality=80), 30_000, 30_000)
    result = decode(data)
    assert result.outcome is Outcome.TOO_LARGE


def test_real_image_over_a_small_limit_is_too_large(
    photo: Image.Image, no_pixel_decoding: None
) -> None:
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "BMP"):
        result = decode(encode(photo, fmt), max_pixels=384 * 256 - 1)
        assert result.outcome is Outcome.TOO_LARGE, fmt


def test_gif_frame_larger_than_its_screen_counts(no_pixel_decoding: None) -> None:
    # Logical screen 1×1, but one frame 20000×20000: the decoder would allocate for the frame.
    data = bytearray(b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0))
    data += b"\x2c" + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0) + b"\x02\x02\x4c\x01\x00"
    data += b"\x3b"
    assert decode(bytes(data)).outcome is Outcome.TOO_LARGE


def test_limit_from_environment(photo: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(photo, "PNG")
    monkeypatch.setenv("CLEARLAKE_MAX_PIXELS", "1000")
    assert decode(data).outcome is Outcome.TOO_LARGE
    assert decode(data, max_pixels=10**6).outcome is Outcome.OK  # an explicit limit wins
    monkeypatch.setenv("CLEARLAKE_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="CLEARLAKE_MAX_PIXELS"):
        decode(data)


def test_analysis_of_too_large_reports_header_size(no_pixel_decoding: None) -> None:
    result = analyse(png_claiming(30_000, 20_000))
    assert result.outcome is Outcome.TOO_LARGE
    assert (result.width, result.height) == (30_000, 20_000)
    assert result.metrics is None


# --- the per-image memory budget ---------------------------------------------------------

MiB = 1 << 20
# What refusing from the header may cost at most (Pillow parsing a TIFF's tags, say).
HEADER_ONLY = 64 * MiB

# Run in a fresh interpreter: VmHWM is the process's peak resident memory, and
# the baseline (VmRSS once the code is imported and the file read) is subtracted.
PEAK_SCRIPT = """
import json, sys
from clearlake.quality.analyse import analyse

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(key + ":"))

data = open(sys.argv[1], "rb").read()
baseline = status("VmRSS")
result = analyse(data)
peak = status("VmHWM")
print(json.dumps({"outcome": result.outcome.value, "reason": result.reason,
                  "metrics": result.metrics, "extra": peak - baseline}))
"""


def analyse_in_fresh_process(path: Path) -> dict:
    """`analyse` of a file under the default limit, in a new process: outcome and peak memory.

    Returns:
        ``{"outcome", "reason", "metrics", "extra"}``; ``extra`` is the peak resident
        memory in bytes above the interpreter's baseline.
    """
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux) to read the peak memory")
    env = {k: v for k, v in os.environ.items() if k != decoding.MAX_PIXELS_ENV}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_png(path: Path, width: int, height: int, rows: Iterable[bytes], grey: bool) -> Path:
    """Write an 8-bit PNG row by row (never holding the pixels): how zlib bombs are made."""
    compressor = zlib.compressobj(9)
    idat = [compressor.compress(b"\x00" + row) for row in rows] + [compressor.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if grey else 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(idat))
        + png_chunk(b"IEND", b"")
    )
    return path


def tiff_with_tiles(width: int, height: int, tile: int) -> bytes:
    """A greyscale TIFF of width × height whose one Deflate tile is tile × tile zeros."""
    compressor = zlib.compressobj(9)
    zeros = bytes(1 << 24)
    left = tile * tile
    parts = []
    while left:
        parts.append(compressor.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    data = b"".join(parts) + compressor.flush()
    # (tag, type 3 = SHORT / 4 = LONG, value); the data follows the IFD.
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 8),
        (262, 3, 1),
        (277, 3, 1),
        (322, 4, tile),
        (323, 4, tile),
        (324, 4, 0),
        (325, 4, len(data)),
    ]
    tags[8] = (324, 4, 8 + 2 + 12 * len(tags) + 4)
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def test_default_limit_is_the_memory_budget_and_admits_50_megapixel_cameras() -> None:
    assert decoding.DEFAULT_MAX_PIXELS == decoding.IMAGE_MEMORY_BUDGET // decoding.BYTES_PER_PIXEL
    assert decoding.IMAGE_MEMORY_BUDGET <= 2.75 * 2**30
    assert decoding.DEFAULT_MAX_PIXELS >= 8688 * 5792  # Canon EOS 5DS: 50.3 MP
    assert decoding.DEFAULT_MAX_PIXELS < 10_000 * 10_000


def test_zlib_bomb_of_100_megapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    """Hole 8 of issue 12: this ~290 KB PNG used to decode `ok` and peak at 2.9 GiB."""
    path = write_png(tmp_path / "bomb.png", 10_000, 10_000, [bytes(30_000)] * 10_000, False)
    assert path.stat().st_size < 400_000
    result = analyse_in_fresh_process(path)
    assert result["outcome"] == "too_large"
    assert "10000×10000" in result["reason"]
    assert "memory budget 2.75 GiB" in result["reason"]
    assert result["extra"] < HEADER_ONLY, f"{result['extra'] / MiB:.0f} MiB"


@pytest.mark.parametrize("bomb", ["png_header", "tiff_tiles"])
def test_header_bombs_are_refused_before_decoding(tmp_path: Path, bomb: str) -> None:
    if bomb == "png_header":  # 30000² claimed, a few bytes of data
        data, words = png_claiming(30_000, 30_000), "30000×30000"
    else:  # a 64×64 TIFF whose one 16000² tile OpenCV would allocate (~1 GiB) and fill
        data, words = tiff_with_tiles(64, 64, 16_000), "tiles of 256,000,000 pixels"
    path = tmp_path / "bomb"
    path.write_bytes(data)
    assert len(data) < 400_000
    result = analyse_in_fresh_process(path)
    assert result["outcome"] == "too_large"
    assert words in result["reason"] and "memory budget" in result["reason"]
    assert result["extra"] < HEADER_ONLY, f"{result['extra'] / MiB:.0f} MiB"


def test_one_pixel_over_the_default_limit_is_too_large(no_pixel_decoding: None) -> None:
    rows = decoding.DEFAULT_MAX_PIXELS // 8192 + 1
    result = decode(png_claiming(8192, rows))
    assert result.outcome is Outcome.TOO_LARGE
    assert f"8192×{rows}" in result.reason and "56 bytes per pixel" in result.reason


def test_24_megapixel_photo_is_analysed_within_budget(tmp_path: Path) -> None:
    """A 6000 × 4000 camera JPEG: `ok`, at most BYTES_PER_PIXEL per pixel, under the budget."""
    scene = cv2.resize(load_sample_image("china.jpg")[..., ::-1], (6000, 4000))
    grain = np.random.default_rng(24).integers(-6, 7, (4000, 6000, 1), dtype=np.int16)
    camera = np.clip(scene + grain, 0, 255).astype(np.uint8)
    del scene, grain
    path = tmp_path / "camera.jpg"
    assert cv2.imwrite(str(path), camera, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del camera
    result = analyse_in_fresh_process(path)
    assert result["outcome"] == "ok", result["reason"]
    assert list(result["metrics"]) == list(METRIC_NAMES)
    extra = result["extra"]
    assert extra < 6000 * 4000 * decoding.BYTES_PER_PIXEL, f"{extra / MiB:.0f} MiB"
    assert extra < decoding.IMAGE_MEMORY_BUDGET


@pytest.mark.slow  # ~2.6 GiB and ~10 s
def test_worst_content_at_the_default_limit_stays_under_budget(tmp_path: Path) -> None:
    """Stripes two pixels wide make every pixel an edge: the costliest content found.

    Measured: about 2.5 GiB (51 bytes per pixel); a photograph this size takes 1.4 GiB.
    """
    width = 8192
    height = decoding.DEFAULT_MAX_PIXELS // width
    row = bytes([0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]) * (width // 4)
    path = write_png(tmp_path / "stripes.png", width, height, [row] * height, False)
    result = analyse_in_fresh_process(path)
    assert result["outcome"] == "ok", result["reason"]
    extra = result["extra"]
    assert extra < decoding.IMAGE_MEMORY_BUDGET, f"{extra / MiB:.0f} MiB"


def test_sixteen_bit_alpha_is_normalised_band_by_band_exactly() -> None:
    """Several row bands give exactly the whole-image rule (high byte, then over white)."""
    rng = np.random.default_rng(16)
    deep = rng.integers(0, 65536, (1500, 600, 4), dtype=np.uint16)
    assert deep[0].size * 1500 > 3 * decoding._BAND_ELEMENTS  # at least three bands
    ok, data = cv2.imencode(".png", deep)
    assert ok
    result = decode(data.tobytes())
    assert result.outcome is Outcome.OK
    high = (deep >> 8).astype(np.uint16)
    colour, alpha = high[..., :3], high[..., 3:]
    expected = ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    np.testing.assert_array_equal(result.image.colour, expected)


# --- deterministic normalisation ------------------------------------------------------


def test_sixteen_bit_keeps_the_high_byte(photo: Image.Image) -> None:
    rgb = np.asarray(photo)
    rng = np.random.default_rng(3)
    low = rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    deep = (rgb.astype(np.uint16) << 8) | low  # same high byte, noise in the low byte
    ok, data = cv2.imencode(".png", deep[..., ::-1])
    assert ok
    result = decode(data.tobytes())
    assert result.outcome is Outcome.OK
    np.testing.assert_array_equal(result.image.colour, rgb[..., ::-1])


def test_sixteen_bit_grey(photo: Image.Image) -> None:
    grey = np.asarray(photo.convert("L"))
    data = encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    result = decode(data)
    assert result.image.colour is None
    np.testing.assert_array_equal(result.image.grey, grey)


def test_alpha_is_composited_over_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # R
    rgba[..., 1] = 100  # G
    rgba[..., 2] = 0  # B
    rgba[0, :, 3] = 0  # transparent
    rgba[1, :, 3] = 255  # opaque
    rgba[2, :, 3] = 128  # half
    rgba[3, :, 3] = 64
    result = decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert result.outcome is Outcome.OK
    bgr = result.image.colour
    np.testing.assert_array_equal(bgr[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(bgr[1, 0], [0, 100, 200])

    def over_white(c: int, a: int) -> int:
        return (c * a + 255 * (255 - a) + 127) // 255

    np.testing.assert_array_equal(
        bgr[2, 0], [over_white(0, 128), over_white(100, 128), over_white(200, 128)]
    )
    np.testing.assert_array_equal(
        bgr[3, 0], [over_white(0, 64), over_white(100, 64), over_white(200, 64)]
    )


def test_opaque_rgba_equals_rgb(photo: Image.Image) -> None:
    rgba = decode(encode(photo.convert("RGBA"), "PNG")).image
    rgb = decode(encode(photo, "PNG")).image
    np.testing.assert_array_equal(rgba.colour, rgb.colour)
    np.testing.assert_array_equal(rgba.grey, rgb.grey)


def test_cmyk_jpeg_has_correct_colours(photo: Image.Image) -> None:
    data = encode(photo.convert("CMYK"), "JPEG", quality=95)
    result = decode(data)
    assert result.outcome is Outcome.OK
    rgb = np.asarray(photo).astype(np.int16)
    error = np.abs(result.image.colour[..., ::-1].astype(np.int16) - rgb).mean()
    assert error < 4  # inverted or swapped channels would be off by ~100
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
    assert np.abs(result.image.colour[..., ::-1] - pillow).mean() < 2


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "JPEG"), ("L", "PNG"), ("LA", "PNG"), ("1", "PNG")]
)
def test_greyscale_sources_have_no_colour(photo: Image.Image, mode: str, fmt: str) -> None:
    result = decode(encode(photo.convert(mode), fmt))
    assert result.outcome is Outcome.OK
    assert result.image.colour is None
    assert result.image.grey.shape == (256, 384)
    assert result.image.grey.dtype == np.uint8


def test_grey_is_opencv_luma_of_colour(photo: Image.Image) -> None:
    image = decode(encode(photo, "PNG")).image
    np.testing.assert_array_equal(image.grey, cv2.cvtColor(image.colour, cv2.COLOR_BGR2GRAY))
    assert (image.width, image.height) == (384, 256)


def test_arrays_are_read_only(photo: Image.Image) -> None:
    image = decode(encode(photo, "JPEG")).image
    with pytest.raises(ValueError):
        image.grey[0, 0] = 1
    with pytest.raises(ValueError):
        image.colour[0, 0, 0] = 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "PPM", "JPEG2000"])
def test_formats_decode_and_repeat_exactly(photo: Image.Image, fmt: str) -> None:
    data = encode(photo, fmt)
    first, second = decode(data), decode(data)
    assert first.outcome is Outcome.OK, first.reason
    np.testing.assert_array_equal(first.image.colour, second.image.colour)
    assert measure(first.image) == measure(second.image)


def test_read_header_reads_no_pixels(photo: Image.Image, no_pixel_decoding: None) -> None:
    header, failure = read_header(encode(photo, "JPEG", exif=exif(6).tobytes()))
    assert failure is None
    assert (header.format, header.width, header.height, header.orientation) == ("JPEG", 384, 256, 6)
    header, failure = read_header(b"")
    assert header is None
    assert failure.outcome is Outcome.CORRUPT


# --- EXIF orientation ------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_lossless_rotated_copy_with_orientation_tag_is_identical(
    photo: Image.Image, orientation: int, fmt: str
) -> None:
    """The same pixels stored transposed, with the EXIF tag that undoes it: tolerance 0."""
    transpose = STORE_FOR_ORIENTATION[orientation]
    stored = photo if transpose is None else photo.transpose(transpose)
    tags = exif(orientation)
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(stored, fmt, exif=tags if fmt == "TIFF" else tags.tobytes(), **options)
    upright = decode(encode(photo, "PNG")).image
    rotated = decode(data).image
    np.testing.assert_array_equal(rotated.colour, upright.colour)
    assert (rotated.width, rotated.height) == (384, 256)
    assert measure(rotated) == measure(upright)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_jpeg_orientation_tag_is_applied_exactly(photo: Image.Image, orientation: int) -> None:
    """The same JPEG bytes with a tag decode to exactly the transformed pixels."""
    plain = decode(encode(photo, "JPEG", quality=90)).image.colour
    tagged = decode(encode(photo, "JPEG", quality=90, exif=exif(orientation).tobytes())).image
    # A viewer shows the inverse of the transpose that stored the picture; all
    # are their own inverse except the two quarter turns.
    undo = {6: 8, 8: 6}.get(orientation, orientation)
    expected = Image.fromarray(plain[..., ::-1]).transpose(STORE_FOR_ORIENTATION[undo])
    np.testing.assert_array_equal(tagged.colour, np.asarray(expected)[..., ::-1])


JPEG_PIXEL_TOLERANCE = 3
"""Max per-pixel difference after re-encoding transposed pixels as JPEG (quality 100, 4:4:4)."""
JPEG_METRIC_RTOL = 0.01
"""Relative tolerance of luma metrics on such a lossy rotated copy (measured: ≤ 0.2 %)."""
JPEG_CHROMA_METRIC_RTOL = 0.10
"""Relative tolerance of chroma metrics (measured: 6.3 % for chroma_peak_score, a
log peak prominence in the chroma spectrum, which the ±3-level chroma rounding moves)."""
JPEG_METRIC_ATOL = 0.02


@pytest.mark.parametrize("orientation", range(2, 9))
def test_jpeg_rotated_copy_gives_equal_metrics_within_tolerance(
    photo: Image.Image, orientation: int
) -> None:
    """Transposed pixels re-encoded as JPEG (lossy): metrics agree within the stated tolerance.

    JPEG quantisation and the decoder's IDCT rounding are not exactly symmetric
    under transposition, so pixels differ by up to ±3 levels at quality 100
    with 4:4:4 chroma; luma metrics move by ≤ 0.2 %, chroma metrics by up to
    ~6 %. (Lossless storage gives identical metrics: see the test above.)
    """
    upright = decode(encode(photo, "JPEG", quality=100, subsampling=0)).image
    stored = photo.transpose(STORE_FOR_ORIENTATION[orientation])
    data = encode(stored, "JPEG", quality=100, subsampling=0, exif=exif(orientation).tobytes())
    rotated = decode(data).image
    assert rotated.colour.shape == upright.colour.shape
    diff = np.abs(rotated.colour.astype(np.int16) - upright.colour).max()
    assert diff <= JPEG_PIXEL_TOLERANCE
    got, want = measure(rotated), measure(upright)
    for name in METRIC_NAMES:
        rtol = JPEG_CHROMA_METRIC_RTOL if name.startswith("chroma_") else JPEG_METRIC_RTOL
        assert math.isclose(got[name], want[name], rel_tol=rtol, abs_tol=JPEG_METRIC_ATOL), (
            name,
            got[name],
            want[name],
        )


def test_opencv_tiff_decoder_applies_orientation_itself(photo: Image.Image) -> None:
    """Guards the one format-specific rule: if OpenCV stops doing this, decode must."""
    data = encode(photo, "TIFF", exif=exif(6))
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.shape[:2] == (384, 256)


# --- analyse --------------------------------------------------------------------------


def test_analyse_ok_and_failures(photo: Image.Image) -> None:
    data = encode(photo, "JPEG")
    good = analyse(data)
    assert good.ok
    assert good.size == len(data)
    assert len(good.sha256) == 64
    assert list(good.metrics) == list(METRIC_NAMES)
    assert (good.width, good.height) == (384, 256)
    bad = analyse(b"garbage")
    assert bad.outcome is Outcome.CORRUPT
    assert bad.metrics is None
    assert bad.reason


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 999, 3), (999, 1, 3), (2, 2), (3, 17, 3)])
def test_tiny_images_are_measured_not_crashed(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    result = analyse(data.tobytes())
    assert result.ok, result.reason
    assert all(math.isfinite(value) for value in result.metrics.values())


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF plugin on damaged tags
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF"])
def test_damaged_files_never_raise(photo: Image.Image, fmt: str) -> None:
    """Seeded fuzzing: flipped bytes, cuts and insertions all give an outcome, never an error."""
    small = photo.resize((96, 64))
    options: dict[str, object] = {"exif": exif(6).tobytes()} if fmt in ("JPEG", "PNG") else {}
    data = encode(small, fmt, **options)
    rng = np.random.default_rng(20261125)
    seen = set()
    for _ in range(150):
        damaged = bytearray(data)
        kind = rng.integers(0, 4)
        if kind == 0:  # flip a few bytes anywhere
            for _ in range(rng.integers(1, 8)):
                damaged[rng.integers(0, len(damaged))] = rng.integers(0, 256)
        elif kind == 1:  # cut
            damaged = damaged[: rng.integers(0, len(damaged))]
        elif kind == 2:  # damage the header
            at = rng.integers(0, min(len(damaged), 200))
            damaged[at : at + 2] = rng.bytes(2)
        else:  # insert garbage
            at = rng.integers(0, len(damaged))
            damaged = damaged[:at] + rng.bytes(int(rng.integers(1, 50))) + damaged[at:]
        result = decode(bytes(damaged), max_pixels=10**7)
        assert isinstance(result.outcome, Outcome)
        assert (result.image is not None) == (result.outcome is Outcome.OK)
        seen.add(result.outcome)
    assert Outcome.CORRUPT in seen
