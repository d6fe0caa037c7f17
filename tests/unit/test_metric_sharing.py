"""The built-in metrics' shared intermediates (`metrics._derived`) and exact selections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from clearlake.quality import metrics
from clearlake.quality.registry import builtin_metrics
from clearlake.quality.types import DecodedImage


def _astronaut() -> DecodedImage:
    colour = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[:300, :400].copy()
    return DecodedImage(colour, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), 400, 300)


#: `measure(_astronaut())` at a26b7e2, before these metrics shared their Welch spectrum,
#: whitened pooled spectrum and percentile selection (exact reprs): sharing them must
#: not change one bit.
BEFORE_SHARING = {
    "edge_width_score": 1.1288340944642707,
    "sharp_edge_width_score": 0.8742425541382807,
    "spectral_slope_score": -3.3451007504893715,
    "octave_knee_score": 0.06271204310356004,
    "luma_peak_score": 1.6490248839060466,
    "peak_amplitude_score": -1.4012699759076774,
    "chroma_peak_score": 1.1673596700032551,
}


def test_shared_intermediates_give_the_values_of_before_together_and_alone() -> None:
    image = _astronaut()
    together = metrics.measure(image)
    assert {name: together[name] for name in BEFORE_SHARING} == BEFORE_SHARING
    builtin = builtin_metrics()
    for name, expected in BEFORE_SHARING.items():  # each alone: nothing shared
        values, failures = builtin.compute(image, [builtin[name]])
        assert failures == {} and values == {name: expected}


def test_the_public_measures_give_what_the_shared_path_gives() -> None:
    image = _astronaut()
    welch = metrics.welch_spectrum(image.grey.astype(np.float32))
    pooled = metrics.pooled_power(np.fft.rfft2(image.grey.astype(np.float32)).astype(np.complex64))
    white = metrics.whiten(pooled)
    assert metrics.calc_spectral_slope(welch) == BEFORE_SHARING["spectral_slope_score"]
    assert metrics.calc_octave_knee(welch) == BEFORE_SHARING["octave_knee_score"]
    # (NumPy's FFT is not SciPy's to the bit: compare the two ways of one spectrum)
    assert metrics.calc_global_peak(pooled) == metrics.calc_global_peak(pooled, whitened=white)
    assert metrics.calc_peak_amplitude(pooled, image.grey.size) == metrics.calc_peak_amplitude(
        pooled, image.grey.size, whitened=white)


def test_a_derived_intermediate_is_made_once_per_image_within_sharing() -> None:
    image, other = _astronaut(), _astronaut()
    made: list[DecodedImage] = []

    def make(shared: metrics._Shared) -> int:
        made.append(shared.image)
        return len(made)

    with metrics.sharing(image):
        assert [metrics._derived(image, make) for _ in range(3)] == [1, 1, 1]
        assert metrics._derived(other, make) == 2  # another image: not shared
    assert metrics._derived(image, make) == 3  # outside `sharing`: made for the call
    assert made[0] is image and made[1] is other and made[2] is image


@pytest.mark.parametrize(("percentile", "expected"), [(99.0, 8.0), (95.0, 8.0), (50.0, 4.0),
                                                      (10.0, 0.0), (100.0, 9.0), (0.0, 0.0)])
def test_the_lower_percentile_is_numpys_element(percentile: float, expected: float) -> None:
    a = np.arange(10, dtype=np.float32)[::-1].reshape(2, 5)  # ⌊9·p/100⌋-th smallest
    value = metrics._lower_percentile(a, percentile)
    assert value == expected and value.dtype == np.float32
    assert value == np.percentile(a, percentile, method="lower")
    assert a.tolist() == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]  # its input untouched


def test_the_lower_percentile_matches_numpy_on_strided_integer_valued_images() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = rng.integers(1, 60, 2)
        squared = (rng.integers(0, 1021, (h, w)) ** 2).astype(np.float32)
        step = int(rng.integers(1, 4))
        view = squared[::step, ::step]
        for percentile in (99.0, 95.0, float(rng.uniform(0, 100))):
            assert metrics._lower_percentile(view, percentile) == np.percentile(
                view, percentile, method="lower")


def test_the_lower_percentile_matches_numpy_on_large_images_among_few_candidates() -> None:
    """Above 16,384 elements it selects among the elements above a bound from a subsample
    (every case here, even the flat and the sorted ones, must give NumPy's element)."""
    rng = np.random.default_rng(11)
    gx, gy = (rng.integers(-1020, 1021, (300, 400)) for _ in range(2))
    cases = {
        "gradient": (gx * gx + gy * gy).astype(np.float32),
        "sparse": np.where(rng.random((300, 400)) < 0.97, 0, gx * gx).astype(np.float32),
        "flat": np.full((200, 200), 9.0, np.float32),
        "sorted": np.arange(40_000, dtype=np.float32).reshape(200, 200),
        "reversed": np.arange(40_000, dtype=np.float32)[::-1].reshape(200, 200),
    }
    for name, image in cases.items():
        for view in (image, image[::2, ::2], image[1::3, ::1]):
            for percentile in (99.0, 95.0, 50.0, 10.0, 0.0, 100.0):
                assert metrics._lower_percentile(view, percentile) == np.percentile(
                    view, percentile, method="lower"), (name, view.shape, percentile)
