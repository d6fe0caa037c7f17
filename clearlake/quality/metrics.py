"""Image-quality metrics: pure functions of a decoded image.

Every measure is a ``calc_*`` function over NumPy arrays with its formula in the
docstring. Each built-in metric is a function of one :class:`DecodedImage`
named after its column (``laplacian_var_score``, …, listed in
:data:`BUILTIN_METRICS`); within :func:`sharing` they share the greyscale, its
float copy, the Sobel pass, the spectrum, the Welch spectrum and the whitened
pooled spectrum, so computing all of them costs what one combined function did,
and computing one costs only what it needs.
:func:`measure` computes them all, in :data:`METRIC_NAMES` order.

Two families:

* the seed's measures, with their exact meaning kept (variance of the
  Laplacian, variance of the Sobel derivatives, the FFT high-frequency mean),
  computed by exact reformulations that are cheaper (integer-valued filter
  outputs whose Σx and Σx² OpenCV accumulates exactly in double; one Sobel
  pass shared with the edge width; a single-precision real FFT, shared with
  the luma peaks, with the seed's asymmetric window restored by a rank-2
  correction);
* features that measure the image against itself, so that they do not depend
  on how much detail or contrast the scene happens to have:

  - ``edge_width_score``: how wide the strongest edges are (blur widens them);
  - ``spectral_slope_score``: how fast power falls with frequency, on
    Hann-windowed tiles at native resolution averaged Welch-style
    (frequencies in cycles/px, so independent of the image size);
  - ``luma_peak_score``: prominence of narrow peaks of the whole-image luma
    spectrum over its local background (a periodic pattern spanning the
    picture is coherent: it concentrates into a few bins);
  - ``chroma_peak_score``: the same on the Welch chroma (Cr + Cb) spectrum of
    the picture area-downscaled to ≤ 256 px — the colour bands that screen
    moiré leaves (often all that survives of it), which greyscale features
    cannot see.

* features for content that is smooth by nature (the moon, a retina, microscopy,
  a scanned page, a soft video frame), which absolute measures of detail rate
  like a blurred photograph: they ask whether the detail the image *does* have
  falls off the way a blur makes it fall off:

  - ``sharp_edge_width_score``: the width of the image's *sharpest* edges (a
    blur widens every edge; smooth content keeps a few crisp ones);
  - ``octave_knee_score``: whether the top octave of the spectrum falls below
    the power-law trend of the two below it (a blur bends it down, a smooth
    scene is only a steeper straight line);
  - ``blur_anisotropy_score``: how much more directional the finest gradients
    are than coarse ones (motion blur; a directional scene is so at all scales).

* a feature for faint periodic texture (paper grain, a sensor's pattern in the
  blank of a page), which the peak prominences score like moiré because they
  measure a peak against its own, faint, background:

  - ``peak_amplitude_score``: the grey-level amplitude of the most prominent
    whole-image luma peak — how *visible* the periodic pattern is.

Which features the classifier uses, and the measured gain of each, is
documented in :mod:`clearlake.quality.classifier`.

Each metric has its own version (:func:`clearlake.quality.registry.fingerprint`):
the syntax tree of its function and of what it calls here, without docstrings or
comments, the constants they read, the OpenCV, NumPy and SciPy versions, and the
decoder version. Editing one metric's code changes that metric's version only;
editing a docstring or comment changes none. :data:`METRIC_SET_VERSION` is the id
of the built-in set as a whole (``ms-`` + 12 hex digits of its names and versions).

Cost: scratch arrays are reused between images (per thread) instead of
allocated afresh, since page faults on fresh full-size temporaries cost about
as much as the arithmetic; the colour features read a ≤ 256 px view.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sfft

from clearlake.quality.types import DecodedImage

# --- parameters (part of the version of each metric that reads them) ------------------

#: Half-size in pixels of the low-frequency square the seed's FFT measure removes.
FFT_HALF_WINDOW = 60
#: Floor on |recon| in the FFT measure, so a flat image gives a finite number.
FFT_MAGNITUDE_FLOOR = 1e-3
#: Side (px) of the Hann-windowed tiles of the Welch spectrum.
TILE = 128
#: At most this many tiles per side (evenly spread, at least 50 % overlap when small).
MAX_TILES_PER_SIDE = 3
#: Radial band (cycles/px) in which spectral peaks count as moiré candidates.
PEAK_BAND = (0.03, 0.5)
#: Median-filter widths (bins) of the local spectral background (2-D, and along lines).
BACKGROUND_SIZE = 5  # OpenCV's float median supports 3 and 5
#: Rows/columns (bins) either side of the axes treated as possible edge ridges.
AXIS_BAND = 2
#: Number of top peak-prominence bins averaged (robust to a single noisy bin).
TOP_PEAKS = 3
#: Radial band (cycles/px) of the spectral-slope fit.
SLOPE_BAND = (0.05, 0.4)
#: Half-size (px) of the window in which an edge's contrast is measured.
EDGE_WINDOW = 6
#: Edges are the pixels whose gradient is in this top percentile...
EDGE_PERCENTILE = 99.0
#: ...and whose local contrast is at least this many grey levels.
EDGE_MIN_CONTRAST = 16.0
#: Sharpest edges: half-size (px) of the contrast window, slope percentile, least contrast…
SHARP_EDGE_WINDOW = 3
SHARP_EDGE_PERCENTILE = 95.0
SHARP_EDGE_MIN_CONTRAST = 24.0
#: …the percentile of their widths taken (the sharpest), and the fewest edge pixels judged.
SHARP_EDGE_QUANTILE = 10.0
SHARP_EDGE_MIN_COUNT = 32
#: Octave bands (cycles/px) whose energies the knee compares: top, middle, low.
KNEE_OCTAVES = ((0.25, 0.5), (0.125, 0.25), (0.0625, 0.125))
#: Downscaling factor of the coarse view the blur anisotropy compares with.
ANISOTROPY_COARSE = 4
#: Whole-image spectra are max-pooled onto at most this many rows (cycles/px grid).
GLOBAL_GRID = 256
#: Long side (px) of the area-downscaled colour view whose chroma spectrum is measured.
CHROMA_SIDE = 256
#: Radial band (cycles/px) of whole-image peaks: from a few cycles per picture up.
GLOBAL_BAND = (0.01, 0.5)
#: Floor (grey levels) of the peak amplitude, so that an image without peaks scores ln of it.
AMPLITUDE_FLOOR = 1e-3
#: Images with a smaller side than this get 0 for the spectral features.
MIN_SPECTRAL_SIDE = 16
#: Scratch buffers larger than this (elements) are not kept between images.
MAX_CACHED_ELEMENTS = 1 << 24
#: Small constant that keeps ratios and logs finite on flat images.
EPS = 1e-9

METRIC_NAMES: tuple[str, ...] = (
    # the seed's measures
    "laplacian_var_score",
    "sobel_y_var_score",
    "sobel_x_var_score",
    "fft_hf_score",
    # blur, measured against the image itself
    "edge_width_score",
    "spectral_slope_score",
    # moiré: periodic peaks in the luma spectrum, colour bands in the chroma spectrum
    "luma_peak_score",
    "chroma_peak_score",
    # blur and moiré judged against the image's own content (smooth scenes, text)
    "sharp_edge_width_score",
    "octave_knee_score",
    "blur_anisotropy_score",
    # moiré judged by its visibility: the periodic pattern's amplitude in grey levels
    "peak_amplitude_score",
)


# --- the seed's measures ------------------------------------------------------------


def calc_laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the Laplacian, the seed's blur measure.

    ``L = cv2.Laplacian(grey, ddepth)`` (3×3 kernel ``[[0,1,0],[1,-4,1],[0,1,0]]``),
    score ``= Var(L) = mean((L - mean(L))²)`` — the value of
    ``cv2.Laplacian(grey, cv2.CV_64F).var()``. Computed in int16 (exact for uint8
    input: |L| ≤ 1020) as ``Σx²/n − (Σx/n)²`` with sums exact in double.

    Args:
        grey: H×W uint8 greyscale image.

    Returns:
        The variance; 0 for a flat image. Falls with blur.
    """
    return _variance(cv2.Laplacian(grey, cv2.CV_16S, dst=_buffer("d16", grey.shape, np.int16)))


def sobel_derivatives(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 3×3 Sobel derivatives ``(∂x, ∂y)`` of a uint8 image, as float32.

    Exact integers (|S| ≤ 1020), shared by the Sobel variances and the edge width.
    The arrays are scratch buffers, valid until the next call in this thread.
    """
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, dst=_buffer("fa", grey.shape, np.float32))
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, dst=_buffer("fb", grey.shape, np.float32))
    return gx, gy


def calc_sobel_variance(grey: np.ndarray, axis: str, derivative: np.ndarray | None = None) -> float:
    """Variance of the 3×3 Sobel derivative in y or in x.

    ``S = cv2.Sobel(grey, ddepth, dx, dy, ksize=3)`` with ``(dx, dy) = (0, 1)`` for
    ``axis="y"`` and ``(1, 0)`` for ``axis="x"``; score ``= Var(S)``, the value of
    ``cv2.Sobel(grey, cv2.CV_64F, dx, dy).var()`` (int16 or float32 are exact:
    |S| ≤ 1020, and the sums are accumulated in double).

    Args:
        grey: H×W uint8 greyscale image.
        axis: "y" or "x".
        derivative: that derivative when the caller has it (from
            :func:`sobel_derivatives`).

    Returns:
        The variance of the derivative.
    """
    if derivative is not None:
        return _variance(derivative)
    dx, dy = {"x": (1, 0), "y": (0, 1)}[axis]
    return _variance(
        cv2.Sobel(grey, cv2.CV_16S, dx, dy, ksize=3, dst=_buffer("d16", grey.shape, np.int16))
    )


def calc_fft_high_frequency(
    grey: np.ndarray, half_window: int = FFT_HALF_WINDOW, spectrum: np.ndarray | None = None
) -> float:
    """The seed's FFT high-frequency measure.

    ``F = fftshift(fft2(grey))``; zero ``F[cy-s:cy+s, cx-s:cx+s]`` with
    ``(cy, cx) = (H//2, W//2)`` and ``s = half_window`` (i.e. the frequencies
    ``ky, kx ∈ [-s, s-1]``); ``r = ifft2(ifftshift(F))``; score
    ``= mean(20·ln max(|r|, floor))``.

    Exact reformulation: the window is asymmetric (−s is removed, +s is kept), so
    ``r`` is complex. We remove the symmetric square ``[-s, s]²`` from a float32
    real FFT (a real inverse), then add back the two kept edge lines ``ky = +s``
    and ``kx = +s`` as two separable (rank-1) complex terms. Same value as the
    complex128 original to float32 rounding. The floor (``FFT_MAGNITUDE_FLOOR``)
    only matters where ``|r|`` is ~0 (a flat image gives ``20·ln(floor)``, not −∞).

    Args:
        grey: H×W uint8 greyscale image.
        half_window: ``s``, half-size of the removed low-frequency square.
        spectrum: ``rfft2(grey.astype(float32))`` when the caller already has it
            (it is modified in place).

    Returns:
        The mean log magnitude of the high-pass image; lower means blurrier.
    """
    h, w = grey.shape
    s = half_window
    if min(h, w) <= 2 * s + 1:
        # Small image: the seed's slicing clips (or wraps) here; replay it literally.
        full = np.fft.fftshift(sfft.fft2(grey.astype(np.float32)))
        cy, cx = h // 2, w // 2
        full[cy - s : cy + s, cx - s : cx + s] = 0
        recon = sfft.ifft2(np.fft.ifftshift(full))
        power = (recon.real * recon.real + recon.imag * recon.imag).astype(np.float32)
    else:
        power = _fft_high_pass_power(grey, s, spectrum)
    np.maximum(power, np.float32(FFT_MAGNITUDE_FLOOR**2), out=power)
    # 20·ln|r| = 10·ln|r|²; mean accumulated in float64.
    log = cv2.log(power, _buffer("fb", power.shape, np.float32))
    return float(10.0 * cv2.mean(log)[0])  # cv2.mean accumulates in double


# --- self-referential blur features ------------------------------------------------


def calc_edge_width(
    grey: np.ndarray, gx: np.ndarray | None = None, gy: np.ndarray | None = None
) -> float:
    """Width in px of the image's strongest edges (high = blurry), as a log.

    At each pixel, slope ``m = |∇I|`` (3×3 Sobel / 8: grey levels per px) and
    local contrast ``c = max - min`` of ``I`` over a ``(2·EDGE_WINDOW+1)²`` window.
    For a step of height ``c`` blurred to width ``w`` the steepest slope is
    ``c / w``, so ``w = c / m`` at edge pixels — those in the top
    ``EDGE_PERCENTILE`` of ``m`` with ``c ≥ EDGE_MIN_CONTRAST``. Score
    ``= ln median(w)``. A sharp edge is ~2–3 px wide (the derivative's own
    support); a blur of σ widens it by ~2.5σ. It measures the image against
    itself: neither the number of edges nor their contrast matters.

    Args:
        grey: H×W uint8 greyscale.
        gx: its x Sobel derivative (from :func:`sobel_derivatives`), if at hand.
        gy: its y Sobel derivative, likewise.

    Returns:
        ln of the median edge width in px; ln 2 for an image without edges.
    """
    if gx is None or gy is None:
        gx, gy = sobel_derivatives(grey)
    widths = _edge_widths(grey, gx, gy, EDGE_WINDOW, EDGE_PERCENTILE, EDGE_MIN_CONTRAST, 16)
    return math.log(2.0) if widths is None else math.log(float(np.median(widths)))


def calc_sharp_edge_width(
    grey: np.ndarray, gx: np.ndarray | None = None, gy: np.ndarray | None = None
) -> float:
    """Width in px of the image's *sharpest* edges, as a log (high = blurry).

    As :func:`calc_edge_width`, with a ``(2·SHARP_EDGE_WINDOW+1)²`` contrast window,
    edge pixels in the top ``SHARP_EDGE_PERCENTILE`` of the slope with
    ``c ≥ SHARP_EDGE_MIN_CONTRAST``, and the ``SHARP_EDGE_QUANTILE``-th percentile
    of the widths instead of their median. A blur widens every edge; inherently
    smooth content (craters, vessels, a page's letters) still has a few crisp ones,
    which is what this reads.

    Args:
        grey: H×W uint8 greyscale.
        gx: its x Sobel derivative (from :func:`sobel_derivatives`), if at hand.
        gy: its y Sobel derivative, likewise.

    Returns:
        ln of the width in px; ln 2 when the image has too few edges to judge.
    """
    if gx is None or gy is None:
        gx, gy = sobel_derivatives(grey)
    widths = _edge_widths(grey, gx, gy, SHARP_EDGE_WINDOW, SHARP_EDGE_PERCENTILE,
                          SHARP_EDGE_MIN_CONTRAST, SHARP_EDGE_MIN_COUNT)
    if widths is None:
        return math.log(2.0)
    return math.log(float(np.percentile(widths, SHARP_EDGE_QUANTILE)))


def _edge_widths(
    grey: np.ndarray, gx: np.ndarray, gy: np.ndarray, window: int, percentile: float,
    min_contrast: float, min_count: int,
) -> np.ndarray | None:
    """Edge widths ``w = 8·c / |∇|`` (px) at the pixels whose slope is in the top
    `percentile` and whose contrast over a ``(2·window+1)²`` square is ≥ `min_contrast`;
    None when fewer than `min_count` pixels qualify.

    Only exact or correctly rounded arithmetic: the squared slope ``gx² + gy²`` is an
    integer below 2^21 (exact in float32), the square root and the division are IEEE
    operations, and callers take the log of the result in float64 (``math.log``).
    (OpenCV's ``magnitude`` is not correctly rounded — about a third of its values
    are 1 ulp off — and NumPy's float32 ``log`` picks a SIMD or a scalar path by the
    memory its operand happens to occupy: with either, the score changed in its last
    bits with what the process had measured before.)
    """
    shape = grey.shape
    squared = cv2.multiply(gx, gx, dst=_buffer("fc", shape, np.float32))
    squared += cv2.multiply(gy, gy, dst=_buffer("fd", shape, np.float32))
    kernel = np.ones((2 * window + 1, 2 * window + 1), np.uint8)
    high = cv2.dilate(grey, kernel, dst=_buffer("ua", shape, np.uint8))
    low = cv2.erode(grey, kernel, dst=_buffer("ub", shape, np.uint8))
    contrast = cv2.subtract(high, low, dst=high)
    step = max(1, round(np.sqrt(squared.size / 65_536)))  # threshold from a subsample: cheap
    # (a percentile of squares is the square of the percentile, up to interpolation)
    threshold = _lower_percentile(squared[::step, ::step], percentile)
    idx = np.flatnonzero(squared.ravel() >= max(threshold, 1.0))
    c = contrast.ravel()[idx].astype(np.float32)
    keep = c >= min_contrast
    if np.count_nonzero(keep) < min_count:
        return None
    slope = np.sqrt(squared.ravel()[idx[keep]])
    return 8.0 * c[keep] / slope


# --- spectral features -------------------------------------------------------------


def welch_spectrum(
    plane: np.ndarray, tile: int = TILE, max_tiles: int = MAX_TILES_PER_SIDE
) -> np.ndarray:
    """Average power spectrum of Hann-windowed tiles at native resolution.

    ``P(k) = mean_t |rfft2(hann · (T_t - mean T_t))|²`` over up to ``max_tiles²``
    tiles of ``tile × tile`` px spread evenly over the plane (overlapping when the
    image is small), rows ``fftshift``-ed so that frequency 0 is in row ``tile//2``.
    Averaging tiles keeps periodic structure (present in every tile) and smooths
    the scene's content and the periodogram's noise.

    Args:
        plane: H×W float32 plane (H, W ≥ 16).
        tile: tile side; reduced to the image's smaller side when needed (even).
        max_tiles: at most this many tiles per side.

    Returns:
        tile × (tile//2 + 1) float64 power spectrum.
    """
    return _welch(_take_tiles(plane, tile, max_tiles).astype(np.float32))


def _take_tiles(a: np.ndarray, tile: int, max_tiles: int) -> np.ndarray:
    """The tiles :func:`welch_spectrum` reads, stacked: n × t × t."""
    h, w = a.shape[:2]
    t = min(tile, h, w) & ~1
    return np.stack(
        [
            a[y : y + t, x : x + t]
            for y in _starts(h, t, max_tiles)
            for x in _starts(w, t, max_tiles)
        ]
    )


def _welch(tiles: np.ndarray) -> np.ndarray:
    t = tiles.shape[1]
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    tiles *= _hann(t)
    spectrum = sfft.rfft2(tiles, axes=(1, 2))
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    return np.fft.fftshift(power.mean(axis=0, dtype=np.float64), axes=0)


def calc_spectral_slope(power: np.ndarray) -> float:
    """Log-log slope of a (Welch) power spectrum: how fast detail falls off.

    Least-squares slope of ``ln P̄(f)`` against ``ln f`` over ``SLOPE_BAND``
    cycles/px, ``P̄`` the average over the ring ``|k| = f``. A sharp natural
    image has ``P ∝ f^-2`` or so (scale invariance); a blur multiplies it by
    the blur's falling transfer function, so the slope gets steeper (more
    negative). It does not depend on the scene's contrast.

    Args:
        power: tile × (tile//2+1) spectrum from :func:`welch_spectrum`.

    Returns:
        The slope (≈ −2 to −3 sharp, below −4 blurred); 0 when undefined.
    """
    radius, _ = _polar(power.shape[0])
    ring = np.rint(radius * power.shape[0]).astype(np.int64)
    sums = np.bincount(ring.ravel(), power.ravel())
    counts = np.bincount(ring.ravel())
    freqs = np.arange(len(sums)) / power.shape[0]
    sel = (freqs >= SLOPE_BAND[0]) & (freqs <= SLOPE_BAND[1]) & (counts > 0)
    if sel.sum() < 2:
        return 0.0
    profile = np.log(sums[sel] / counts[sel] + EPS)
    return float(np.polyfit(np.log(freqs[sel]), profile, 1)[0])


def calc_peak_prominence(power: np.ndarray, band: tuple[float, float] = PEAK_BAND) -> float:
    """Prominence of the strongest narrow spectral peaks (moiré, screens, gratings).

    ``Q = ln(P + ε)``; background ``B = med_{n×n} Q`` (``n = BACKGROUND_SIZE``), and
    within ``AXIS_BAND`` bins of the axes ``B = max(B, running median of Q along
    the line over 2n+1 bins)``, so that the ridges horizontal/vertical edges and
    the picture's borders leave along the axes are background, not peaks; score
    ``= mean of the TOP_PEAKS largest (Q − B)`` over frequencies with
    ``band[0] ≤ |k| ≤ band[1]`` cycles/px. A natural scene has a smooth spectrum
    (score ≈ 1–2); a periodic pattern puts narrow peaks far above it.

    Args:
        power: power spectrum from :func:`welch_spectrum` (row 0 frequency centred).
        band: radial frequency band in cycles/px.

    Returns:
        The prominence in natural-log units (0 when the spectrum is flat).
    """
    q32 = np.log(power + EPS * (power.max() + EPS)).astype(np.float32)
    radius, _ = _polar(power.shape[0])
    sel = (radius >= band[0]) & (radius <= band[1])
    return _prominence(q32, cv2.medianBlur(q32, BACKGROUND_SIZE), sel)


def calc_octave_knee(power: np.ndarray) -> float:
    """How far the top octave's energy falls short of the trend of the two below.

    ``E_b`` = power summed over the radial band ``b`` of :data:`KNEE_OCTAVES`
    (top ``[¼, ½]``, middle ``[⅛, ¼]``, low ``[1/16, ⅛]`` cycles/px); score
    ``= ln(E_top/E_mid) − ln(E_mid/E_low)``. Under a power law ``P ∝ f^−α`` both
    octave ratios equal ``2^(2−α)``, so the score is ≈ 0 for sharp *and* for
    inherently smooth scenes (any α: the moon 0.5). A mild blur's transfer function
    falls fastest in the top octave, which makes the score negative (a 400×300
    photograph: −0.3 sharp, −1.7 at a Gaussian σ of 1 px, −2.0 at 1.5 px); a strong
    blur sinks the top octave to the 8-bit quantisation and noise floor, which is
    flat, and the score turns positive (+5.3 at σ = 3 px). Either way it departs
    from 0: the classifier's sub-labels take both sides.

    Args:
        power: tile × (tile//2+1) spectrum from :func:`welch_spectrum`.

    Returns:
        The knee in natural-log units; 0 for a flat (all-zero) spectrum.
    """
    radius, _ = _polar(power.shape[0])
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    floor = EPS * total
    top, mid, low = (
        float(power[(radius >= lo) & (radius < hi)].sum()) + floor for lo, hi in KNEE_OCTAVES
    )
    return float(np.log(top / mid) - np.log(mid / low))


def calc_blur_anisotropy(grey: np.ndarray, gx: np.ndarray | None = None,
                         gy: np.ndarray | None = None) -> float:
    """How much more directional the fine gradients are than the coarse ones (motion blur).

    Structure tensor ``J = Σ [gx², gx·gy; gx·gy, gy²]`` of the 3×3 Sobel derivatives,
    anisotropy ``a = ln(λ_max / λ_min)``; score ``= a(native) − a(view
    area-downscaled ANISOTROPY_COARSE×)``. Motion blur erases detail along its
    direction at the finest scale only; a scene directional in itself (grass, brick,
    lines of text) is directional at both scales and scores ≈ 0. Exact arithmetic:
    the products are integers below 2^21 and the sums are accumulated in double.

    Args:
        grey: H×W uint8 greyscale.
        gx: its x Sobel derivative (from :func:`sobel_derivatives`), if at hand.
        gy: its y Sobel derivative, likewise.

    Returns:
        The difference of log eigenvalue ratios; 0 when the image is too small.
    """
    h, w = grey.shape
    if min(h, w) < 4 * ANISOTROPY_COARSE:
        return 0.0
    if gx is None or gy is None:
        gx, gy = sobel_derivatives(grey)
    coarse = cv2.resize(
        grey, (w // ANISOTROPY_COARSE, h // ANISOTROPY_COARSE), interpolation=cv2.INTER_AREA
    )
    cx = cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=3)
    cy = cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=3)
    return _anisotropy(gx, gy, _buffer("fd", grey.shape, np.float32)) - _anisotropy(
        cx, cy, np.empty_like(cx))


def _anisotropy(gx: np.ndarray, gy: np.ndarray, scratch: np.ndarray) -> float:
    """ln(λ_max/λ_min) of the structure tensor of the derivatives (summed over all pixels)."""
    xx = float(cv2.norm(gx, cv2.NORM_L2SQR))
    yy = float(cv2.norm(gy, cv2.NORM_L2SQR))
    xy = float(cv2.sumElems(cv2.multiply(gx, gy, dst=scratch))[0])
    half_trace, det = (xx + yy) / 2, xx * yy - xy * xy
    root = math.sqrt(max(half_trace * half_trace - det, 0.0))
    big, small = half_trace + root, half_trace - root
    floor = EPS * (xx + yy) + EPS
    return math.log((big + floor) / (max(small, 0.0) + floor))


def pooled_power(spectrum: np.ndarray, grid: int = GLOBAL_GRID) -> np.ndarray:
    """Whole-image power spectrum on a fixed cycles/px grid (max-pooled).

    ``P = |X|²`` of an ``rfft2``, max-pooled by the smallest integer factor per
    axis that leaves at most ``grid × (grid//2+1)`` bins (groups start at
    frequency 0), rows then ``fftshift``-ed. A periodic
    pattern that spans the picture is coherent, so it concentrates into one bin
    whose height grows with the picture's area; max-pooling keeps it.

    Args:
        spectrum: H×(W//2+1) complex rfft2 of a plane.
        grid: target number of rows.

    Returns:
        The pooled power spectrum (float64).
    """
    magnitude = np.abs(spectrum, out=_buffer("fc", spectrum.shape, np.float32))  # pool |X|
    h, w = magnitude.shape
    ky, kx = -(-h // grid), -(-w // (grid // 2 + 1))  # ceil: at most grid rows
    if ky > 1:  # block maxima as maxima of strided slices (fast, unlike short-axis reduce)
        rows = magnitude[0 : h - h % ky : ky].copy()
        for j in range(1, ky):
            np.maximum(rows, magnitude[j : h - h % ky : ky], out=rows)
        magnitude = rows
    if kx > 1:
        cols = magnitude[:, 0 : w - w % kx : kx].copy()
        for j in range(1, kx):
            np.maximum(cols, magnitude[:, j : w - w % kx : kx], out=cols)
        magnitude = cols
    return np.fft.fftshift(magnitude.astype(np.float64) ** 2, axes=0)


@dataclass(frozen=True)
class Whitened:
    """A whole-image spectrum as the peak features read it (from :func:`whiten`).

    Attributes:
        radius: each bin's radial frequency (cycles/px).
        trend: ``R``, the ring average of ``Q = ln P`` at each bin (float64).
        q: ``Q − R`` (float32).
        background: ``B``, the ``BACKGROUND_SIZE``² median of ``Q − R`` (float32).
    """

    radius: np.ndarray
    trend: np.ndarray
    q: np.ndarray
    background: np.ndarray


def whiten(power: np.ndarray) -> Whitened:
    """``Q = ln P`` of a pooled spectrum (frequency 0 in row h//2) minus its ring average,
    and that one's local median: what :func:`calc_global_peak` and
    :func:`calc_peak_amplitude` both read."""
    h, w = power.shape
    fy = (np.arange(h) - h // 2) / (2 * (h // 2) if h > 1 else 1)
    fx = np.arange(w) / (2 * (w - 1) if w > 1 else 1)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    q = np.log(power + EPS * (power.max() + EPS))
    ring = np.minimum(np.rint(radius * 2 * h).astype(np.int64), 2 * h)
    trend = (np.bincount(ring.ravel(), q.ravel()) / np.maximum(np.bincount(ring.ravel()), 1))[ring]
    whitened = (q - trend).astype(np.float32)
    return Whitened(radius, trend, whitened, cv2.medianBlur(whitened, BACKGROUND_SIZE))


def calc_global_peak(
    power: np.ndarray, band: tuple[float, float] = GLOBAL_BAND, whitened: Whitened | None = None
) -> float:
    """Prominence of the strongest peaks of a whole-image spectrum, whitened first.

    ``Q = ln P``, minus its ring average ``R(|k|)`` (removes the steep 1/f² trend of
    natural scenes, so that low-frequency banding is judged against its own ring),
    then scored as :func:`calc_peak_prominence` does (local median background,
    line medians along the axes, mean of the top peaks) over ``band`` cycles/px.

    Args:
        power: pooled spectrum from :func:`pooled_power` (frequency 0 in row h//2).
        band: radial band in cycles/px.
        whitened: ``whiten(power)`` when the caller has it.

    Returns:
        The prominence in natural-log units.
    """
    if not power.any():  # a constant plane: no peaks (and no rounding noise)
        return 0.0
    white = whitened if whitened is not None else whiten(power)
    radius = white.radius
    return _prominence(white.q, white.background, (radius >= band[0]) & (radius <= band[1]))


def calc_peak_amplitude(
    power: np.ndarray, pixels: int, band: tuple[float, float] = GLOBAL_BAND,
    whitened: Whitened | None = None,
) -> float:
    """Grey-level amplitude of the most prominent peaks of a whole-image spectrum.

    Peaks are found as :func:`calc_global_peak` finds them — ``Q = ln P`` minus its
    ring average ``R``, against a local ``BACKGROUND_SIZE``² median ``B`` of that —
    and the ``TOP_PEAKS`` bins in ``band`` with the largest ``Q − R − B`` are taken.
    Each one's power above its background, ``E = P − exp(R + B)``, is that of a
    sinusoid of amplitude ``A = 2·√E / pixels`` grey levels (a sinusoid of amplitude
    ``A`` over ``N`` pixels has ``|X| = A·N/2``); score ``= ln(max A + AMPLITUDE_FLOOR)``.

    The prominences measure a peak against its own background, so a faint regular
    texture on a blank ground (paper grain, the weave of a scanned page) scores like
    moiré there; moiré is an interference pattern one *sees*, several grey levels
    deep. A scene's own periodic detail (a brick wall, lines of text) is measured
    too, and is what the classifier weighs this against the prominence for.

    Args:
        power: pooled spectrum from :func:`pooled_power` (frequency 0 in row h//2).
        pixels: the number of pixels of the plane the spectrum was taken of.
        band: radial band in cycles/px.
        whitened: ``whiten(power)`` when the caller has it.

    Returns:
        ln of the amplitude in grey levels; ``ln AMPLITUDE_FLOOR`` without peaks.
    """
    if not power.any() or pixels <= 0:
        return math.log(AMPLITUDE_FLOOR)
    white = whitened if whitened is not None else whiten(power)
    radius, background = white.radius, white.background
    sel = np.flatnonzero(((radius >= band[0]) & (radius <= band[1])).ravel())
    if sel.size == 0:
        return math.log(AMPLITUDE_FLOOR)
    excess = (white.q - background).ravel()[sel]
    k = min(TOP_PEAKS, sel.size)
    top = sel[np.argpartition(excess, excess.size - k)[-k:]]
    floor = np.exp(background.ravel()[top].astype(np.float64) + white.trend.ravel()[top])
    amplitude = 2.0 * np.sqrt(np.maximum(power.ravel()[top] - floor, 0.0)) / pixels
    return math.log(float(amplitude.max()) + AMPLITUDE_FLOOR)


def chroma_planes(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cr and Cb planes (float32, BT.601 as in ``cv2.COLOR_BGR2YCrCb``) of a BGR image."""
    ycc = cv2.cvtColor(colour, cv2.COLOR_BGR2YCrCb)
    return ycc[..., 1].astype(np.float32), ycc[..., 2].astype(np.float32)


# --- the built-in metrics, one function each --------------------------------------------


def laplacian_var_score(image: DecodedImage) -> float:
    """Variance of the Laplacian (:func:`calc_laplacian_variance`)."""
    return _finite(calc_laplacian_variance(_shared(image).grey))


def sobel_y_var_score(image: DecodedImage) -> float:
    """Variance of the y Sobel derivative (:func:`calc_sobel_variance`)."""
    shared = _shared(image)
    return _finite(calc_sobel_variance(shared.grey, "y", shared.sobel()[1]))


def sobel_x_var_score(image: DecodedImage) -> float:
    """Variance of the x Sobel derivative (:func:`calc_sobel_variance`)."""
    shared = _shared(image)
    return _finite(calc_sobel_variance(shared.grey, "x", shared.sobel()[0]))


def edge_width_score(image: DecodedImage) -> float:
    """ln of the median width of the strongest edges (:func:`calc_edge_width`)."""
    shared = _shared(image)
    gx, gy = shared.sobel()
    return _finite(calc_edge_width(shared.grey, gx, gy))


def spectral_slope_score(image: DecodedImage) -> float:
    """Log-log slope of the Welch spectrum (:func:`calc_spectral_slope`); 0 when tiny."""
    shared = _shared(image)
    if min(shared.grey.shape) < MIN_SPECTRAL_SIDE:
        return 0.0  # too small for a spectrum to mean anything
    return _finite(calc_spectral_slope(_derived(image, _grey_welch)))


def luma_peak_score(image: DecodedImage) -> float:
    """Prominence of whole-image luma spectral peaks (:func:`calc_global_peak`); 0 when tiny."""
    shared = _shared(image)
    if min(shared.grey.shape) < MIN_SPECTRAL_SIDE:
        return 0.0
    white = _derived(image, _luma_whitened)
    return _finite(calc_global_peak(white.power, whitened=white.whitened))


def fft_hf_score(image: DecodedImage) -> float:
    """The seed's FFT high-frequency measure (:func:`calc_fft_high_frequency`)."""
    shared = _shared(image)
    return _finite(calc_fft_high_frequency(shared.grey, spectrum=shared.spectrum_to_consume()))


def chroma_peak_score(image: DecodedImage) -> float:
    """Prominence of chroma spectral peaks (colour moiré); 0 for greyscale or tiny images.

    (A colour file holding a grey picture has constant chroma: the score comes out 0.)
    """
    colour = image.colour
    if colour is None or min(image.grey.shape) < MIN_SPECTRAL_SIDE:
        return 0.0
    cr, cb = _chroma_view(colour)
    return _finite(calc_peak_prominence(welch_spectrum(cr) + welch_spectrum(cb)))


def sharp_edge_width_score(image: DecodedImage) -> float:
    """ln of the width of the sharpest edges (:func:`calc_sharp_edge_width`)."""
    shared = _shared(image)
    gx, gy = shared.sobel()
    return _finite(calc_sharp_edge_width(shared.grey, gx, gy))


def blur_anisotropy_score(image: DecodedImage) -> float:
    """Fine-minus-coarse gradient anisotropy (:func:`calc_blur_anisotropy`)."""
    shared = _shared(image)
    gx, gy = shared.sobel()
    return _finite(calc_blur_anisotropy(shared.grey, gx, gy))


def octave_knee_score(image: DecodedImage) -> float:
    """The Welch spectrum's top-octave knee (:func:`calc_octave_knee`); 0 when tiny."""
    shared = _shared(image)
    if min(shared.grey.shape) < MIN_SPECTRAL_SIDE:
        return 0.0
    return _finite(calc_octave_knee(_derived(image, _grey_welch)))


def peak_amplitude_score(image: DecodedImage) -> float:
    """ln grey-level amplitude of the most prominent luma peaks (:func:`calc_peak_amplitude`);
    ln AMPLITUDE_FLOOR when tiny."""
    shared = _shared(image)
    if min(shared.grey.shape) < MIN_SPECTRAL_SIDE:
        return math.log(AMPLITUDE_FLOOR)
    white = _derived(image, _luma_whitened)
    return _finite(calc_peak_amplitude(white.power, shared.grey.size, whitened=white.whitened))


#: The built-in metrics in computing order: the ones sharing the Sobel pass first, the
#: FFT measure (which consumes the shared spectrum and scratch buffers) after the luma
#: peaks. Each is a unit of its own, versioned by `clearlake.quality.registry`.
BUILTIN_METRICS: tuple[tuple[str, Callable[[DecodedImage], float]], ...] = (
    ("laplacian_var_score", laplacian_var_score),
    ("sobel_y_var_score", sobel_y_var_score),
    ("sobel_x_var_score", sobel_x_var_score),
    ("edge_width_score", edge_width_score),
    ("sharp_edge_width_score", sharp_edge_width_score),
    ("blur_anisotropy_score", blur_anisotropy_score),
    ("spectral_slope_score", spectral_slope_score),
    ("octave_knee_score", octave_knee_score),
    ("luma_peak_score", luma_peak_score),
    ("peak_amplitude_score", peak_amplitude_score),
    ("fft_hf_score", fft_hf_score),
    ("chroma_peak_score", chroma_peak_score),
)


def measure(image: DecodedImage) -> dict[str, float]:
    """All built-in metrics of one decoded image, in :data:`METRIC_NAMES` order.

    Deterministic (same input, same numbers), finite, and independent of run
    order. Colour metrics are 0 for greyscale sources (no chroma to band).

    Args:
        image: the decoded image.

    Returns:
        ``{name: value}`` for every name in :data:`METRIC_NAMES`.
    """
    with sharing(image):
        values = {name: function(image) for name, function in BUILTIN_METRICS}
    return {name: values[name] for name in METRIC_NAMES}


class _Shared:
    """Intermediate results several built-in metrics of one image read, made on first use.

    The Sobel derivatives live in scratch buffers the FFT measure overwrites, and the
    FFT measure consumes the spectrum, so `spectrum_to_consume` forgets both: a metric
    computed after it makes them afresh (none does, in `BUILTIN_METRICS` order).
    """

    def __init__(self, image: DecodedImage) -> None:
        self.image = image
        self.grey = np.ascontiguousarray(image.grey)
        self._grey_f: np.ndarray | None = None
        self._sobel: tuple[np.ndarray, np.ndarray] | None = None
        self._spectrum: np.ndarray | None = None

    @property
    def grey_f(self) -> np.ndarray:
        if self._grey_f is None:
            self._grey_f = _buffer("grey_f", self.grey.shape, np.float32)
            self._grey_f[...] = self.grey
        return self._grey_f

    def sobel(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sobel is None:
            self._sobel = sobel_derivatives(self.grey)
        return self._sobel

    def spectrum(self) -> np.ndarray:
        if self._spectrum is None:
            self._spectrum = sfft.rfft2(self.grey_f)
        return self._spectrum

    def spectrum_to_consume(self) -> np.ndarray:
        spectrum = self.spectrum()
        self._spectrum = self._sobel = None
        return spectrum


@contextlib.contextmanager
def sharing(image: DecodedImage) -> Iterator[None]:
    """Within this block, built-in metrics of `image` share their intermediate results."""
    previous = getattr(_workspace, "shared", None)
    _workspace.shared = _Shared(image)
    try:
        yield
    finally:
        _workspace.shared = previous


def _shared(image: DecodedImage) -> _Shared:
    """The intermediates of `image`: shared within `sharing(image)`, else made for one call."""
    shared = getattr(_workspace, "shared", None)
    return shared if shared is not None and shared.image is image else _Shared(image)


_Made = TypeVar("_Made")


def _derived(image: DecodedImage, make: Callable[[_Shared], _Made]) -> _Made:
    """``make(intermediates of image)``: made once within ``sharing(image)`` for all the
    metrics that ask for it, else for this call.

    (Kept beside `_Shared`, not in it: `_Shared`'s code is part of every built-in's
    version, while this is part of only the versions of the metrics that call it.)
    """
    shared = _shared(image)
    made = vars(shared).setdefault("derived", {})
    if make not in made:
        made[make] = make(shared)
    return made[make]


def _grey_welch(shared: _Shared) -> np.ndarray:
    """The Welch spectrum of the greyscale (the spectral slope's and the octave knee's)."""
    return welch_spectrum(shared.grey_f)


@dataclass(frozen=True)
class _PooledLuma:
    """The pooled luma power spectrum (:func:`pooled_power`) and its :func:`whiten`."""

    power: np.ndarray
    whitened: Whitened


def _luma_whitened(shared: _Shared) -> _PooledLuma:
    """The pooled whole-image luma spectrum, whitened (the luma peaks' and their amplitude's)."""
    power = pooled_power(shared.spectrum())
    return _PooledLuma(power, whiten(power))


def _finite(value: float) -> float:
    """`value` as a float, 0.0 if not finite (only reachable on degenerate, e.g. 1-px, images)."""
    value = float(value)
    return value if np.isfinite(value) else 0.0


# --- helpers ------------------------------------------------------------------------


def _prominence(q32: np.ndarray, local: np.ndarray, sel: np.ndarray) -> float:
    """Mean of the TOP_PEAKS largest ``q32 - background`` over ``sel``.

    Background: ``local``, the local ``n×n`` median of ``q32`` (not modified); on the
    rows and columns next to the axes, the larger of that and a running median along
    the line (``2n+1`` bins), so the ridges that horizontal/vertical edges and the
    picture's borders leave along the axes are background. A narrow peak is outvoted
    in every window.
    """
    n = BACKGROUND_SIZE
    background = local.copy()
    centre = q32.shape[0] // 2
    rows = slice(max(0, centre - AXIS_BAND), centre + AXIS_BAND + 1)
    cols = slice(0, AXIS_BAND + 1)
    background[rows] = np.maximum(background[rows], _line_median(q32[rows], 2 * n + 1, 1))
    background[:, cols] = np.maximum(background[:, cols], _line_median(q32[:, cols], 2 * n + 1, 0))
    excess = (q32 - background)[sel]
    if excess.size == 0:
        return 0.0
    k = min(TOP_PEAKS, excess.size)
    return float(np.partition(excess, excess.size - k)[-k:].mean(dtype=np.float64))


def _line_median(a: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Running median of ``width`` samples along ``axis`` (edges replicated)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (width // 2, width // 2)
    windows = sliding_window_view(np.pad(a, pad, mode="edge"), width, axis=axis)
    return np.partition(windows, width // 2, axis=-1)[..., width // 2]


_workspace = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A scratch array reused from call to call (per thread).

    Full-size temporaries freshly allocated per image cost as much in page faults
    as the arithmetic on them; reusing them makes ``measure`` markedly cheaper.
    The contents are garbage: callers overwrite them. At most 16 are kept, none
    larger than MAX_CACHED_ELEMENTS (bigger images allocate afresh).
    """
    buffers: dict[tuple[str, tuple[int, ...], str], np.ndarray] | None
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    if math.prod(shape) > MAX_CACHED_ELEMENTS:  # don't pin huge images' memory
        return np.empty(shape, dtype)
    key = (name, tuple(shape), np.dtype(dtype).str)
    array = buffers.get(key)
    if array is None:
        if len(buffers) >= 16:
            buffers.clear()
        array = buffers[key] = np.empty(shape, dtype)
    return array


def _lower_percentile(a: np.ndarray, percentile: float) -> np.floating:
    """``np.percentile(a, percentile, method="lower")`` of a NaN-free array: the same
    element, the ``k = ⌊(n−1)·percentile/100⌋``-th smallest, selected among few candidates.

    Any bound ``t`` no greater than that element keeps, among the ``c`` elements ≥ ``t``,
    every element ranked ``k`` or above and no other: it is the ``(k − (n − c))``-th
    smallest of them. A bound taken a little below its rank in a subsample keeps a few
    per cent of the elements; should it not be low enough, all are kept. (NumPy selects
    among all of them, and once more to find NaNs: ~1 ms of a 500-px image's ~12.)
    """
    flat = a.ravel()
    n = flat.size
    k = int(np.floor((n - 1) * np.true_divide(percentile, 100)))
    candidates = None
    if n >= 16_384:
        sample = flat[:: n // 4096].copy()
        j = min(sample.size - 1, max(0, k * sample.size // n - 64))  # ≥ 2σ below its rank
        bound = np.partition(sample, j)[j]
        keep = flat >= bound
        count = int(np.count_nonzero(keep))
        if count >= n - k:
            candidates, k = flat[keep], k - (n - count)
    if candidates is None:
        candidates = flat.copy()
    candidates.partition(k)
    return candidates[k]


def _variance(a: np.ndarray) -> float:
    """Population variance of an integer-valued image, exactly: ``Σx²/n − (Σx/n)²``.

    Both sums are of integers below 2^53, so OpenCV's double accumulation is exact
    (and an order of magnitude faster than ``meanStdDev``).
    """
    n = a.size
    mean = cv2.sumElems(a)[0] / n
    return max(0.0, cv2.norm(a, cv2.NORM_L2SQR) / n - mean * mean)


def _chroma_view(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cr and Cb of the picture area-downscaled to ≤ CHROMA_SIDE px on its long side
    (but to no less than MIN_SPECTRAL_SIDE px on its short side).

    Colour carries little fine detail (cameras and JPEG's 4:2:0 already halve
    chroma resolution), and colour moiré is broad: measuring it on a bounded
    view keeps its cost independent of the image size.
    """
    h, w = colour.shape[:2]
    # Never below MIN_SPECTRAL_SIDE on the short side: a very wide picture (175:1 and
    # more) would otherwise shrink to a strip too thin for a spectrum.
    scale = min(1.0, max(CHROMA_SIDE / max(h, w), MIN_SPECTRAL_SIDE / min(h, w)))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        colour = cv2.resize(colour, size, interpolation=cv2.INTER_AREA)
    return chroma_planes(colour)


def _fft_high_pass_power(grey: np.ndarray, s: int, spectrum: np.ndarray | None) -> np.ndarray:
    """|r|² of the seed's high-pass (see calc_fft_high_frequency), for H, W > 2s+1.

    Removes the symmetric square ky, kx ∈ [-s, s] from a real FFT (real inverse),
    then adds back the lines the seed keeps, ky = +s (kx ∈ [-s, s]) and kx = +s
    (ky ∈ [-s, s-1]), each a separable complex term a(y)·f(x) / g(y)·b(x).
    """
    h, w = grey.shape
    if spectrum is None:
        spectrum = sfft.rfft2(grey.astype(np.float32))
    scale = 1.0 / (h * w)
    # ky = +s, kx ∈ [-s, s]: X[s, k] for k ≥ 0, conj(X[-s, |k|]) for k < 0 (Hermitian).
    row_k = np.r_[0 : s + 1, -np.arange(1, s + 1)]
    row_c = np.r_[spectrum[s, : s + 1], np.conj(spectrum[h - s, 1 : s + 1])]
    # kx = +s, ky ∈ [-s, s-1].
    col_k = np.r_[0:s, -np.arange(1, s + 1)]
    col_c = spectrum[col_k % h, s].copy()
    spectrum[np.r_[0 : s + 1, h - s : h], : s + 1] = 0
    real = sfft.irfft2(spectrum, s=(h, w))
    # Rank-2 correction E = a(y)·f(x) + g(y)·b(x), split into real and imaginary
    # parts so that each is one small real matrix product (K = 4).
    ay = np.exp(2j * np.pi * s * np.arange(h) / h)
    gy = _dft_line(col_c, col_k, h) * scale
    fx = _dft_line(row_c, row_k, w) * scale
    bx = np.exp(2j * np.pi * s * np.arange(w) / w)
    left_re = np.stack([ay.real, -ay.imag, gy.real, -gy.imag], axis=1).astype(np.float32)
    right_re = np.stack([fx.real, fx.imag, bx.real, bx.imag]).astype(np.float32)
    left_im = np.stack([ay.real, ay.imag, gy.real, gy.imag], axis=1).astype(np.float32)
    right_im = np.stack([fx.imag, fx.real, bx.imag, bx.real]).astype(np.float32)
    # (einsum: numpy's matmul is slow at K = 4)
    real += np.einsum("ik,kj->ij", left_re, right_re, out=_buffer("fb", (h, w), np.float32))
    imag = np.einsum("ik,kj->ij", left_im, right_im, out=_buffer("fa", (h, w), np.float32))
    real *= real
    imag *= imag
    real += imag
    return real


def _dft_line(coeffs: np.ndarray, ks: np.ndarray, n: int) -> np.ndarray:
    """``Σ_j coeffs[j]·exp(2πi·ks[j]·x/n)`` for x = 0..n-1 (a sparse inverse DFT)."""
    dense = np.zeros(n, np.complex128)
    dense[ks % n] = coeffs
    return sfft.ifft(dense) * n


def _starts(n: int, t: int, max_tiles: int) -> list[int]:
    count = min(max_tiles, max(1, int(np.ceil(2 * n / t)) - 1))  # ≥ 50 % overlap when few fit
    if count == 1:
        return [(n - t) // 2]
    return [round(i * (n - t) / (count - 1)) for i in range(count)]


@lru_cache(maxsize=8)
def _hann(t: int) -> np.ndarray:
    win = np.hanning(t).astype(np.float32)
    return np.outer(win, win)


@lru_cache(maxsize=8)
def _polar(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Radius (cycles/px) and angle in [0, π) of each bin of a row-shifted rfft2 grid."""
    fy = np.fft.fftshift(np.fft.fftfreq(t))[:, None]
    fx = np.fft.rfftfreq(t)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    angle = np.mod(np.arctan2(fy, fx), np.pi)
    return radius, angle


def __getattr__(name: str) -> str:
    """`METRIC_SET_VERSION`: the id of the built-in metric set (see the module docstring)."""
    if name == "METRIC_SET_VERSION":
        from clearlake.quality.registry import builtin_metrics

        return builtin_metrics().id
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
