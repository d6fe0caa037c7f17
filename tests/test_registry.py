"""Metrics as versioned units: versions, failures, documents, entry points (no servers)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import math
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import skimage.data

from clearlake.errors import ConfigurationError
from clearlake.metrics_store import MAX_VERSIONS, ImageMetrics
from clearlake.quality import metrics
from clearlake.quality.analyse import analyse
from clearlake.quality.classifier import MissingMetricError, train
from clearlake.quality.registry import (
    LEGACY_METRIC_SETS,
    Metric,
    MetricSet,
    available,
    available_for,
    builtin_metrics,
    entry_point_metrics,
    fingerprint,
)
from clearlake.quality.types import DecodedImage
from clearlake.scripts import ScriptsPin


def _astronaut() -> DecodedImage:
    colour = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[:300, :400].copy()
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    return DecodedImage(colour, grey, 400, 300)


def _png(image: DecodedImage) -> bytes:
    ok, data = cv2.imencode(".png", image.colour)
    assert ok
    return data.tobytes()


# --- built-ins as units ------------------------------------------------------------------

#: What `measure` returned for `_astronaut()` before metrics were units (metric set
#: ms-2c13a2439865, commit 1d6c77b), as exact reprs.
LEGACY_VALUES = {
    "laplacian_var_score": 634.1117071597221,
    "sobel_y_var_score": 5097.009672222222,
    "sobel_x_var_score": 5733.216362515555,
    "fft_hf_score": 17.936736277330358,
    "edge_width_score": 1.1287423372268677,
    "spectral_slope_score": -3.3451007504893715,
    "luma_peak_score": 1.6490248839060466,
    "chroma_peak_score": 1.1673596700032551,
}


def test_builtins_at_their_legacy_versions_reproduce_the_legacy_values_bit_for_bit() -> None:
    builtin = builtin_metrics()
    image = _astronaut()
    legacy = LEGACY_METRIC_SETS["ms-2c13a2439865"]
    same = [n for n, v in legacy.items() if builtin[n].version == v]
    assert same  # (a built-in changed since has another version: its values may differ)
    for m in [builtin[n] for n in same]:
        values, failures = builtin.compute(image, [m])  # alone, without the shared passes
        assert failures == {} and values[m.name] == LEGACY_VALUES[m.name], m.name
    assert {n: metrics.measure(image)[n] for n in same} == {n: LEGACY_VALUES[n] for n in same}


def test_builtin_metrics_are_every_metric_name_each_a_unit_with_a_version() -> None:
    builtin = builtin_metrics()
    assert set(builtin.names) == set(metrics.METRIC_NAMES)
    assert all(m.source == "built-in" and re.fullmatch(r"[0-9a-f]{12}", m.version)
               for m in builtin)
    assert len(set(builtin.versions.values())) == len(builtin)


def test_computing_some_metrics_in_any_order_gives_what_computing_all_gives() -> None:
    builtin = builtin_metrics()
    image = _astronaut()
    everything, _ = builtin.compute(image)
    wanted = [builtin["fft_hf_score"], builtin["luma_peak_score"], builtin["edge_width_score"]]
    some, failures = builtin.compute(image, wanted)
    assert failures == {} and some == {m.name: everything[m.name] for m in wanted}


def _scenes() -> list[DecodedImage]:
    """Pictures of several sizes and kinds: colour, grey, small, wide."""
    astronaut = _astronaut()
    camera = skimage.data.camera()
    coffee = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)
    blurred = cv2.GaussianBlur(coffee, (0, 0), 3.0)
    return [
        astronaut,
        DecodedImage(None, camera, camera.shape[1], camera.shape[0]),
        DecodedImage(blurred, cv2.cvtColor(blurred, cv2.COLOR_BGR2GRAY), 600, 400),
        DecodedImage(None, camera[:40, :333].copy(), 333, 40),
        DecodedImage(coffee[:100:3, ::2].copy(), cv2.cvtColor(coffee[:100:3, ::2],
                     cv2.COLOR_BGR2GRAY), 300, 34),
    ]


def _misaligned_buffers(monkeypatch: pytest.MonkeyPatch, offset: int) -> None:
    """Make every scratch buffer start `offset` bytes past a 64-byte boundary, as reuse
    and allocation can leave them."""
    def buffer(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = math.prod(shape) * np.dtype(dtype).itemsize
        raw = np.empty(size + 128, np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        return raw[start:start + size].view(dtype).reshape(shape)

    monkeypatch.setattr(metrics, "_buffer", buffer)


def test_every_builtin_is_bit_reproducible_whatever_was_measured_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = builtin_metrics()
    scenes = _scenes()
    metrics._workspace.__dict__.clear()  # a fresh process
    first = [metrics.measure(image) for image in scenes]
    rng = np.random.default_rng(3)
    for offset in (0, 4, 8, 12, 36):
        _misaligned_buffers(monkeypatch, offset)
        for i in rng.permutation(len(scenes)):  # another order, each metric alone or some
            wanted = [m for m in builtin if rng.random() < 0.5] or list(builtin)
            values, failures = builtin.compute(scenes[i], wanted)
            assert failures == {}
            assert values == {m.name: first[i][m.name] for m in wanted}, (offset, i)
        monkeypatch.undo()
    assert [metrics.measure(image) for image in reversed(scenes)] == first[::-1]


def test_edge_widths_are_made_of_exactly_rounded_arithmetic() -> None:
    """The edge widths equal a float64 computation rounded once to float32 per step
    (`cv2.magnitude`, 1 ulp off on a third of the pixels, made them depend on its path)."""
    for image in _scenes():
        grey = image.grey
        gx = cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3)
        squared = (gx * gx + gy * gy).astype(np.float32)  # integers < 2^21: exact
        kernel = np.ones((2 * metrics.EDGE_WINDOW + 1,) * 2, np.uint8)
        contrast = (cv2.dilate(grey, kernel).astype(np.float32)
                    - cv2.erode(grey, kernel).astype(np.float32))
        step = max(1, round(math.sqrt(squared.size / 65_536)))
        threshold = np.percentile(squared[::step, ::step], metrics.EDGE_PERCENTILE,
                                  method="lower")
        edges = (squared >= max(threshold, 1.0)) & (contrast >= metrics.EDGE_MIN_CONTRAST)
        widths = np.float32(8.0) * contrast[edges] / np.sqrt(squared[edges])
        expected = math.log(np.median(widths)) if edges.sum() >= 16 else math.log(2.0)
        assert metrics.calc_edge_width(grey) == expected


#: The content-normalised built-ins on `_astronaut()` (exact reprs, this code).
CONTENT_NORMALISED = {
    "edge_width_score": 1.1288340944642707,
    "sharp_edge_width_score": 0.8742425541382807,
    "octave_knee_score": 0.06271204310356004,
    "blur_anisotropy_score": -0.05922173856218976,
}


def _blurred(image: DecodedImage, kernel: np.ndarray) -> DecodedImage:
    colour = cv2.filter2D(image.colour, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return DecodedImage(colour, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), image.width,
                        image.height)


def test_the_content_normalised_metrics_read_blur_against_the_image_itself() -> None:
    sharp = _astronaut()
    values = metrics.measure(sharp)
    assert {n: values[n] for n in CONTENT_NORMALISED} == CONTENT_NORMALISED
    mild, strong = (metrics.measure(_blurred(sharp, cv2.getGaussianKernel(31, sigma)
                                             @ cv2.getGaussianKernel(31, sigma).T))
                    for sigma in (1.0, 3.0))
    motion = np.zeros((15, 15), np.float32)
    motion[7, :] = 1.0 / 15  # horizontal motion blur
    moved = metrics.measure(_blurred(sharp, motion))
    assert values["sharp_edge_width_score"] + 0.25 < mild["sharp_edge_width_score"] < strong[
        "sharp_edge_width_score"]
    # The knee: below the power law at a mild blur, at the flat noise floor at a strong one.
    assert mild["octave_knee_score"] < values["octave_knee_score"] - 1.0
    assert strong["octave_knee_score"] > values["octave_knee_score"] + 3.0
    assert moved["blur_anisotropy_score"] > values["blur_anisotropy_score"] + 0.5  # 0.60
    # Smooth by nature: the moon, sharp, keeps the knee of a sharp scene (≈ 0).
    moon = skimage.data.moon()
    smooth = metrics.measure(DecodedImage(None, moon, moon.shape[1], moon.shape[0]))
    assert abs(smooth["octave_knee_score"]) < 1.0


@pytest.mark.parametrize(("height", "width"), [(16, 4096), (20, 3600), (4096, 16), (1, 5000)])
def test_a_very_wide_colour_picture_gets_every_metric_not_an_error(height: int,
                                                                    width: int) -> None:
    """175:1 and wider used to shrink the chroma view to 256×1: ZeroDivisionError."""
    rng = np.random.default_rng(height)
    colour = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = DecodedImage(colour, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), width, height)
    values, failures = builtin_metrics().compute(image)
    assert failures == {} and set(values) == set(metrics.METRIC_NAMES)
    if min(height, width) < metrics.MIN_SPECTRAL_SIDE:
        assert values["chroma_peak_score"] == 0.0  # too thin for a spectrum
        return
    # The chroma view keeps MIN_SPECTRAL_SIDE px across: here the picture itself.
    cr, cb = metrics.chroma_planes(colour)
    scale = max(metrics.CHROMA_SIDE / max(height, width), metrics.MIN_SPECTRAL_SIDE / min(
        height, width))
    if scale >= 1.0:
        expected = metrics.calc_peak_prominence(metrics.welch_spectrum(cr)
                                                + metrics.welch_spectrum(cb))
        assert values["chroma_peak_score"] == expected
    assert values["chroma_peak_score"] > 0.0


@pytest.fixture
def metrics_copies(tmp_path: Path) -> Iterator[callable]:
    """Load edited copies of metrics.py under its own module name, as another process would
    see an edited file; the real module is restored afterwards."""
    source = Path(metrics.__file__).read_text()
    real = sys.modules["clearlake.quality.metrics"]

    def load(edit: callable, tag: str) -> ModuleType:
        path = tmp_path / tag / "metrics.py"
        path.parent.mkdir()
        path.write_text(edit(source))
        spec = importlib.util.spec_from_file_location("clearlake.quality.metrics", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["clearlake.quality.metrics"] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules["clearlake.quality.metrics"] = real
        return module

    yield load
    sys.modules["clearlake.quality.metrics"] = real


def _versions(module: ModuleType) -> dict[str, str]:
    return {name: fingerprint(function) for name, function in module.BUILTIN_METRICS}


def test_a_docstring_or_comment_edit_keeps_every_version(metrics_copies: callable) -> None:
    def reword(source: str) -> str:
        source = source.replace('"""Variance of the Laplacian, the seed\'s blur measure.',
                                '"""Variance of the Laplacian (reworded), the seed\'s measure.')
        source = source.replace("    return _variance(cv2.Laplacian(",
                                "    # a new comment\n    return _variance(cv2.Laplacian(")
        return source.replace('"""Prominence of chroma spectral peaks', '"""Chroma peaks:')

    original = _versions(metrics_copies(lambda s: s, "same"))
    reworded = _versions(metrics_copies(reword, "reworded"))
    assert original == builtin_metrics().versions
    assert reworded == original


def test_a_code_or_parameter_change_changes_only_the_metrics_that_read_it(
    metrics_copies: callable,
) -> None:
    original = builtin_metrics().versions
    code = _versions(metrics_copies(lambda s: s.replace(
        "    return _finite(calc_laplacian_variance(_shared(image).grey))",
        "    return _finite(calc_laplacian_variance(_shared(image).grey) * 1.0)"), "code"))
    assert {n for n in original if code[n] != original[n]} == {"laplacian_var_score"}
    tile = _versions(metrics_copies(lambda s: s.replace("TILE = 128", "TILE = 96"), "tile"))
    assert {n for n in original if tile[n] != original[n]} == {  # those reading Welch spectra
        "spectral_slope_score", "chroma_peak_score", "octave_knee_score"}


TRICKY_MODULE = """
import functools

@functools.lru_cache
def decorated(x: int) -> int:
    \"\"\"Docstring.\"\"\"
    return x + 1

if True:
    class Twice:
        a = 1

class Twice:  # the same name again: inspect takes the first
    a = 2

class Once:
    b: int = 3

def redefined():
    return 1

def redefined():
    return 2

square = lambda x: x * x
"""


def test_a_definition_versions_as_its_own_source_parsed_alone_would(tmp_path: Path) -> None:
    from clearlake.quality.registry import _strip, _syntax_tree

    path = tmp_path / "tricky_metrics.py"
    path.write_text(TRICKY_MODULE)
    spec = importlib.util.spec_from_file_location("tricky_metrics", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tricky_metrics"] = module
    try:
        spec.loader.exec_module(module)
        for obj in (module.decorated, module.Twice, module.Once, module.redefined,
                    module.square):
            alone = _strip(ast.parse(textwrap.dedent(inspect.getsource(obj))))
            assert ast.dump(_syntax_tree(obj)) == ast.dump(alone), obj
        before = fingerprint(module.redefined)
        path.write_text(TRICKY_MODULE.replace("return 2", "return 20"))  # edited on disk
        spec.loader.exec_module(module)
        assert fingerprint(module.redefined) != before
    finally:
        del sys.modules["tricky_metrics"]


# --- failures -------------------------------------------------------------------------------


def _plugin(name: str, function: callable) -> Metric:
    return Metric(name, "0" * 12, "entry point test", function)


@pytest.mark.parametrize(("returned", "why"), [
    (float("nan"), "returned nan, not a finite number"),
    (math.inf, "returned inf, not a finite number"),
    ("0.5", "returned str, not a number"),
    (True, "returned bool, not a number"),
    (None, "returned NoneType, not a number"),
])
def test_a_metric_returning_no_finite_number_is_a_failure_naming_it(returned: object,
                                                                     why: str) -> None:
    metric_set = MetricSet([builtin_metrics()["laplacian_var_score"],
                            _plugin("odd_score", lambda image: returned)])
    values, failures = metric_set.compute(_astronaut())
    assert values == {"laplacian_var_score": LEGACY_VALUES["laplacian_var_score"]}
    assert failures == {"odd_score": f"metric 'odd_score' (entry point test) {why}"}


def test_a_metric_that_raises_fails_that_image_only_and_analyse_says_which() -> None:
    def boom(image: DecodedImage) -> float:
        raise ZeroDivisionError("division by zero")

    metric_set = MetricSet([*builtin_metrics(), _plugin("boom_score", boom),
                            _plugin("int_score", lambda image: np.int64(3))])
    result = analyse(_png(_astronaut()), metric_set=metric_set)
    assert result.ok
    assert result.failures == {"boom_score": "metric 'boom_score' (entry point test) raised "
                                             "ZeroDivisionError: division by zero"}
    assert result.metrics["int_score"] == 3.0 and type(result.metrics["int_score"]) is float
    assert list(result.metrics)[:len(metrics.METRIC_NAMES)] == list(metrics.METRIC_NAMES)


def test_names_are_checked_and_unique() -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        Metric.of("Bad-Name", lambda image: 0.0, "test")
    with pytest.raises(ConfigurationError, match="two metrics are named 'laplacian_var_score'"):
        MetricSet([*builtin_metrics(), _plugin("laplacian_var_score", lambda image: 0.0)])


# --- the store's document per image -------------------------------------------------------


def test_a_document_lacks_exactly_the_new_or_changed_metrics_and_merges_them() -> None:
    builtin = builtin_metrics()
    values, _ = builtin.compute(_astronaut())
    doc = ImageMetrics("ab" * 32, 10, "ok", "", 400, 300).merged(builtin.versions, values, {})
    assert builtin.missing(doc.measured) == []
    new = _plugin("new_score", lambda image: 1.0)
    changed = Metric("edge_width_score", "f" * 12, "built-in", metrics.edge_width_score)
    wider = MetricSet([*(m for m in builtin if m.name != "edge_width_score"), changed, new])
    assert [m.name for m in wider.missing(doc.measured)] == ["edge_width_score", "new_score"]

    merged = doc.merged(wider.versions, {"edge_width_score": 2.0}, {"new_score": "it failed"})
    assert wider.missing(merged.measured) == []  # a failure is not retried (same code, pixels)
    assert merged.metrics["edge_width_score"] == {builtin["edge_width_score"].version:
                                                  values["edge_width_score"], "f" * 12: 2.0}
    view = merged.view(wider.versions)
    assert view.metrics["edge_width_score"] == 2.0 and "new_score" not in view.metrics
    assert view.failures == {"new_score": "it failed"}
    assert builtin.missing(merged.measured) == []  # the old versions stay: no flip-flop
    assert ImageMetrics.from_json(merged.to_json()) == merged


def test_a_document_keeps_the_newest_versions_of_a_metric() -> None:
    doc = ImageMetrics("cd" * 32, 1, "ok", "", 1, 1)
    for i in range(MAX_VERSIONS + 3):
        doc = doc.merged({"x_score": f"{i:012x}"}, {"x_score": float(i)}, {})
    assert list(doc.metrics["x_score"].values()) == [float(i) for i in range(3, MAX_VERSIONS + 3)]


def test_an_image_that_did_not_decode_has_no_metrics_to_compute() -> None:
    doc = ImageMetrics("ef" * 32, 5, "corrupt", "not an image", 0, 0)
    assert doc.view(builtin_metrics().versions).metrics is None


# --- entry points -------------------------------------------------------------------------


@pytest.fixture
def plugin_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution on sys.path (its .dist-info with an entry_points.txt): an installed
    package as importlib.metadata finds it."""
    (tmp_path / "tiny_plugin.py").write_text(textwrap.dedent('''
        """A tiny clearlake metrics plugin."""

        def mean_luma(image):
            """Mean grey level."""
            return float(image.grey.mean())

        def broken(image):
            raise RuntimeError("this plugin is broken")
    '''))
    info = tmp_path / "tiny_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[clearlake.metrics]\nmean_luma_score = tiny_plugin:mean_luma\n"
        "broken_score = tiny_plugin:broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("tiny_plugin", None)


def test_an_installed_entry_point_adds_metrics(plugin_distribution: Path) -> None:
    found = {m.name: m for m in entry_point_metrics()}
    assert set(found) == {"mean_luma_score", "broken_score"}
    assert found["mean_luma_score"].source == "entry point tiny-plugin"
    metric_set = available()
    assert metric_set.names[:len(builtin_metrics())] == builtin_metrics().names  # built-ins first
    image = _astronaut()
    values, failures = metric_set.compute(image)
    assert values["mean_luma_score"] == float(image.grey.mean())
    assert failures == {"broken_score": "metric 'broken_score' (entry point tiny-plugin) raised "
                                        "RuntimeError: this plugin is broken"}


def test_plugins_are_loaded_only_for_the_metrics_that_need_them(plugin_distribution: Path) -> None:
    assert available_for(["laplacian_var_score", "luma_peak_score"]) is builtin_metrics()
    with_plugin = available_for(["laplacian_var_score", "mean_luma_score"])
    assert "mean_luma_score" in with_plugin and "broken_score" in with_plugin


def test_a_model_reading_a_plugin_metric_says_so_when_the_plugin_is_gone(
    plugin_distribution: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(1)
    rows = [{"laplacian_var_score": float(rng.normal(10 * (i % 2), 1)),
             "mean_luma_score": float(rng.normal(100 + 50 * (i % 2), 5))} for i in range(40)]
    labels = ["good" if i % 2 else "blurry" for i in range(40)]
    groups = [str(i % 5) for i in range(40)]
    model = train(rows, labels, groups, features=("laplacian_var_score", "mean_luma_score"))
    version = available()["mean_luma_score"].version
    assert model.metrics["mean_luma_score"] == version
    model.check(available())

    sys.path.remove(str(plugin_distribution))  # uninstalled
    importlib.invalidate_caches()
    with pytest.raises(MissingMetricError) as err:
        model.check(available())
    assert err.value.missing == {"mean_luma_score": version}
    assert f"mean_luma_score version {version}: it has no such metric" in str(err.value)


def test_a_scripts_pin_names_a_commit() -> None:
    pin = ScriptsPin.parse("lakefs://scripts/main@" + "a1" * 32)
    assert (pin.repository, pin.ref, pin.commit) == ("scripts", "main", "a1" * 32)
    assert str(pin) == "lakefs://scripts/main@" + "a1" * 32
    for bad in ("lakefs://scripts/main", "lakefs://scripts/main@HEAD", "s3://scripts/main@abc"):
        with pytest.raises(ConfigurationError, match="not of the form"):
            ScriptsPin.parse(bad)


def test_a_scripts_module_keeps_its_versions_across_commits_unless_its_code_changes() -> None:
    from clearlake.scripts import module_metrics

    source = textwrap.dedent('''
        from clearlake.quality.registry import metric

        SCALE = {scale}

        @metric("luma_score")
        def luma(image):
            """{doc}"""
            return float(image.grey.mean()) * SCALE

        @metric("other_score")
        def other(image):
            return 1.0
    ''')

    def load(commit: str, scale: str = "1.0", doc: str = "Mean luma.") -> dict[str, Metric]:
        found = module_metrics(
            source.format(scale=scale, doc=doc), f"clearlake_scripts.s_{commit}.luma",
            f"<lakefs://s@{commit}/luma.py>", version_name="clearlake_scripts.s.luma",
            source=f"scripts@{commit}")
        return {m.name: m for m in found}

    first = load("c1")
    reworded = load("c2", doc="Reworded.")
    rescaled = load("c3", scale="2.0")
    assert first["luma_score"].source == "scripts@c1"
    assert {n: m.version for n, m in reworded.items()} == {
        n: m.version for n, m in first.items()}
    assert rescaled["luma_score"].version != first["luma_score"].version
    assert rescaled["other_score"].version == first["other_score"].version
    values, _ = MetricSet(rescaled.values()).compute(_astronaut())
    assert values["luma_score"] == 2.0 * float(_astronaut().grey.mean())
    with pytest.raises(ConfigurationError, match=r"cannot be imported: SyntaxError"):
        module_metrics("def (", "clearlake_scripts.s_bad.x", "<bad>", version_name="x",
                       source="scripts@bad")
