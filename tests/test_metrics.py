"""Metrics on synthetic images with known answers, and against the seed's formulas."""

from __future__ import annotations

import itertools
import math
import re

import cv2
import numpy as np
import pytest
import skimage.data

from clearlake.quality import metrics
from clearlake.quality.metrics import METRIC_NAMES, METRIC_SET_VERSION, measure
from clearlake.quality.types import DecodedImage


def _image(pixels: np.ndarray) -> DecodedImage:
    if pixels.ndim == 2:
        return DecodedImage(None, pixels, pixels.shape[1], pixels.shape[0])
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return DecodedImage(pixels, grey, pixels.shape[1], pixels.shape[0])


def _checkerboard(size: int = 256, square: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.where(((yy // square) + (xx // square)) % 2 == 0, 40, 215).astype(np.uint8)


def _photo() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def _seed_fft(image: np.ndarray, size: int = 60) -> float:
    """The seed's FFT measure, verbatim (complex128)."""
    (h, w) = image.shape
    (cx, cy) = (int(w / 2.0), int(h / 2.0))
    fft_shift = np.fft.fftshift(np.fft.fft2(image))
    fft_shift[cy - size : cy + size, cx - size : cx + size] = 0
    recon = np.fft.ifft2(np.fft.ifftshift(fft_shift))
    return float(np.mean(20 * np.log(np.abs(recon))))


def test_names_and_version_shape() -> None:
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    assert all(re.fullmatch(r"[a-z0-9_]+_score", n) for n in METRIC_NAMES)
    assert re.fullmatch(r"ms-[0-9a-f]{12}", METRIC_SET_VERSION)


def test_measure_is_ordered_finite_and_deterministic() -> None:
    image = _image(_photo())
    first = measure(image)
    assert tuple(first) == METRIC_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values())
    assert measure(image) == first


def test_flat_image_has_zero_variance_and_finite_scores() -> None:
    values = measure(_image(np.full((200, 300), 128, np.uint8)))
    assert values["laplacian_var_score"] == 0.0
    assert values["sobel_x_var_score"] == 0.0
    assert values["sobel_y_var_score"] == 0.0
    assert all(math.isfinite(v) for v in values.values())


@pytest.mark.parametrize("shape", [(512, 512), (301, 457), (200, 130), (100, 130)])
def test_seed_measures_keep_their_exact_values(shape: tuple[int, int]) -> None:
    grey = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)[: shape[0], : shape[1]]
    lap = cv2.Laplacian(grey, cv2.CV_64F).var()
    assert metrics.calc_laplacian_variance(grey) == pytest.approx(lap, rel=1e-9)
    sy = cv2.Sobel(grey, cv2.CV_64F, 0, 1).var()
    sx = cv2.Sobel(grey, cv2.CV_64F, 1, 0).var()
    assert metrics.calc_sobel_variance(grey, "y") == pytest.approx(sy, rel=1e-9)
    assert metrics.calc_sobel_variance(grey, "x") == pytest.approx(sx, rel=1e-9)
    # float32 real FFT + rank-2 correction vs the seed's complex128 code.
    assert metrics.calc_fft_high_frequency(grey) == pytest.approx(_seed_fft(grey), abs=1e-3)
    # measure() shares one float32 Sobel pass and one FFT: same values.
    values = measure(_image(np.ascontiguousarray(grey)))
    assert values["laplacian_var_score"] == pytest.approx(lap, rel=1e-9)
    assert values["sobel_y_var_score"] == pytest.approx(sy, rel=1e-9)
    assert values["sobel_x_var_score"] == pytest.approx(sx, rel=1e-9)
    assert values["fft_hf_score"] == pytest.approx(_seed_fft(grey), abs=1e-3)


def test_blur_lowers_laplacian_variance_monotonically() -> None:
    board = _checkerboard()
    sigmas = [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]
    images = [board if s == 0 else cv2.GaussianBlur(board, (0, 0), s) for s in sigmas]
    lap = [metrics.calc_laplacian_variance(i) for i in images]
    width = [metrics.calc_edge_width(i) for i in images]
    assert all(a > b for a, b in itertools.pairwise(lap)), lap
    assert all(a < b for a, b in itertools.pairwise(width)), width


def test_blur_steepens_spectral_slope() -> None:
    grey = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)
    sharp = measure(_image(grey))["spectral_slope_score"]
    blurred = measure(_image(cv2.GaussianBlur(grey, (0, 0), 2.0)))["spectral_slope_score"]
    assert blurred < sharp - 1.0


def test_grating_scores_high_on_luma_peaks() -> None:
    grey = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY).astype(np.float32)
    yy, xx = np.mgrid[0:512, 0:512]
    theta = np.radians(30)
    wave = np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 3.7)
    moire = np.clip(grey * (1 + 0.15 * wave), 0, 255).astype(np.uint8)
    natural = measure(_image(grey.astype(np.uint8)))["luma_peak_score"]
    grating = measure(_image(moire))["luma_peak_score"]
    pure = measure(_image((127 + 100 * wave).astype(np.uint8)))["luma_peak_score"]
    assert grating > natural + 2.0
    assert pure > natural + 2.0


def test_colour_bands_score_high_on_chroma_peaks() -> None:
    photo = _photo()
    yy, xx = np.mgrid[0:512, 0:512]
    band = np.sin(2 * np.pi * (xx + 0.5 * yy) / 40.0)
    ycc = cv2.cvtColor(photo, cv2.COLOR_BGR2YCrCb).astype(np.float32)
    ycc[..., 1] += 12 * band  # colour only: luma untouched
    ycc[..., 2] -= 12 * band
    banded = cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2BGR)
    natural = measure(_image(photo))["chroma_peak_score"]
    assert measure(_image(banded))["chroma_peak_score"] > natural + 2.0


def test_greyscale_sources_have_no_chroma_scores() -> None:
    grey = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)
    values = measure(_image(grey))
    assert values["chroma_peak_score"] == 0.0
    # A colour file holding a grey picture is measured the same way.
    as_colour = measure(_image(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    assert as_colour == values


@pytest.mark.parametrize("shape", [(1, 1), (3, 40), (17, 16), (64, 2000)])
def test_tiny_and_thin_images_give_finite_scores(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    values = measure(_image(rng.integers(0, 256, shape, dtype=np.uint8)))
    assert all(math.isfinite(v) for v in values.values())


def _sinusoid(shape: tuple[int, int], cycles: tuple[int, int], amplitude: float) -> np.ndarray:
    """A sinusoid of `amplitude` grey levels with a whole number of cycles along each axis
    (no spectral leakage: all its power falls in one bin of the image's spectrum)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    phase = 2 * np.pi * (cycles[0] * yy / shape[0] + cycles[1] * xx / shape[1])
    return amplitude * np.cos(phase)


@pytest.mark.parametrize("amplitude", [2.0, 6.0, 20.0])
def test_peak_amplitude_reads_a_sinusoids_amplitude_in_grey_levels(amplitude: float) -> None:
    pattern = 128 + _sinusoid((256, 256), (40, 70), amplitude)
    image = _image(np.rint(pattern).astype(np.uint8))
    # (8-bit rounding adds its own error, a few % of a 2-level sinusoid)
    assert metrics.peak_amplitude_score(image) == pytest.approx(math.log(amplitude), abs=0.04)


def test_peak_amplitude_grows_with_a_patterns_depth_on_a_photograph() -> None:
    grey = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY).astype(np.float64)
    depths = [1.0, 2.0, 4.0, 8.0, 16.0]
    scores = [metrics.peak_amplitude_score(_image(np.clip(np.rint(
        grey + _sinusoid((512, 512), (97, 151), a)), 0, 255).astype(np.uint8))) for a in depths]
    assert all(a < b for a, b in itertools.pairwise(scores)), scores
    # Once the pattern stands out of the scene, the score is its amplitude: ln 16 − ln 4.
    assert scores[-1] - scores[2] == pytest.approx(math.log(4.0), abs=0.1)


def test_a_faint_texture_on_a_blank_ground_is_prominent_but_not_visible() -> None:
    # The case the amplitude is for: paper grain, a sensor's pattern in a page's margin.
    # Its peak stands far out of its (empty) background, like moiré; its depth does not.
    rng = np.random.default_rng(0)
    ground = 200 + rng.normal(0, 0.6, (256, 256)) + _sinusoid((256, 256), (60, 90), 0.8)
    faint = _image(np.rint(ground).astype(np.uint8))
    visible = _image(np.clip(np.rint(ground + _sinusoid((256, 256), (60, 90), 12.0)), 0,
                             255).astype(np.uint8))
    natural = metrics.luma_peak_score(_image(cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)))
    assert metrics.luma_peak_score(faint) > natural + 1.0
    assert metrics.peak_amplitude_score(faint) < math.log(1.0)
    assert metrics.peak_amplitude_score(visible) > math.log(10.0)


def test_peak_amplitude_of_flat_and_tiny_images_is_its_floor() -> None:
    floor = math.log(metrics.AMPLITUDE_FLOOR)
    assert metrics.peak_amplitude_score(_image(np.full((100, 120), 77, np.uint8))) == floor
    assert metrics.peak_amplitude_score(_image(np.full((8, 300), 77, np.uint8))) == floor
