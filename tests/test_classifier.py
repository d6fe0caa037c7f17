"""The classifier's JSON model, its refusals, and reproducible sample data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clearlake.cli import app
from clearlake.quality import classifier
from clearlake.quality.classifier import (
    MissingMetricError,
    Model,
    ModelError,
    cross_validate,
    train,
)
from clearlake.quality.metrics import METRIC_NAMES
from clearlake.quality.registry import LEGACY_METRIC_SETS, builtin_metrics
from clearlake.quality.sample_data import generate

# Per sub-label: mean of each default feature (log-ish scales), one blob per kind.
_CENTRES = {
    ("good", "good"): [6.0, 1.0, -2.5, 2.0, 0.5],
    ("blurry", "blurry_gaussian"): [2.5, 2.0, -5.0, 2.0, 0.5],
    ("blurry", "blurry_motion"): [3.5, 1.6, -4.2, 2.0, 0.5],
    ("moire", "moire_grating"): [7.0, 1.0, -2.2, 5.0, 0.5],
    ("moire", "moire_screen"): [5.0, 1.1, -3.0, 3.0, 4.0],
}


def _synthetic(n_per: int = 12, sources: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, labels, subs, groups = [], [], [], []
    for (label, sub), centre in _CENTRES.items():
        for i in range(n_per):
            values = np.asarray(centre) + rng.normal(0, 0.25, len(centre))
            row = dict.fromkeys(METRIC_NAMES, 0.0)
            row.update(zip(classifier.DEFAULT_FEATURES, values.tolist(), strict=True))
            row["laplacian_var_score"] = float(np.expm1(row["laplacian_var_score"]))
            rows.append(row)
            labels.append(label)
            subs.append(sub)
            groups.append(f"src{i % sources}")
    return rows, labels, subs, groups


@pytest.fixture(scope="module")
def model() -> Model:
    rows, labels, subs, groups = _synthetic()
    return train(rows, labels, groups, sublabels=subs)


def test_model_predicts_top_level_labels_with_probabilities(model: Model) -> None:
    rows, labels, _, _ = _synthetic(n_per=3, seed=1)
    predictions = model.predict(rows)
    assert model.classes == ("blurry", "good", "moire")
    assert set(model.sub_classes) == {s for _, s in _CENTRES}
    assert [p.label for p in predictions] == labels
    for p in predictions:
        assert set(p.probabilities) == set(model.classes)
        assert sum(p.probabilities.values()) == pytest.approx(1.0)


def test_json_round_trip_gives_same_predictions_and_id(model: Model, tmp_path: Path) -> None:
    rows, _, _, _ = _synthetic(n_per=4, seed=2)
    path = tmp_path / "model.json"
    model.save(path)
    again = Model.load(path)
    assert again.id == model.id
    assert again.to_json() == model.to_json()
    assert again.predict(rows) == model.predict(rows)
    assert Model.from_json(model.to_json()).predict(rows) == model.predict(rows)
    assert model.id.startswith("nb-") and len(model.id) == 15


def test_json_predictions_match_the_sklearn_pipeline() -> None:
    rows, labels, _, groups = _synthetic()
    m = train(rows, labels, groups)  # no sub-labels: NB classes = labels
    pipe = classifier.make_pipeline().fit(m.matrix(rows), np.asarray(labels))
    expected = pipe.predict_proba(m.matrix(rows))
    assert list(pipe.classes_) == list(m.classes)
    np.testing.assert_allclose(m.predict_proba(rows), expected, rtol=1e-9, atol=1e-12)


def test_model_records_its_provenance(model: Model) -> None:
    info = json.loads(model.to_json())
    used = builtin_metrics().select(classifier.DEFAULT_FEATURES)
    assert info["metrics"] == used.versions == model.metrics  # the versions it was trained on
    assert info["metric_set_version"] == used.id == model.metric_set_version
    assert info["features"] == list(classifier.DEFAULT_FEATURES)
    assert info["training_set"]["fingerprint"].startswith("sha256:")
    assert info["collapse"]["moire_screen"] == "moire"
    assert (
        "by source" in info["cross_validation"]["split"]
        or "source" in (info["cross_validation"]["split"])
    )
    assert 0.0 <= info["cross_validation"]["macro_f1"] <= 1.0


def test_same_training_set_same_fingerprint_and_id() -> None:
    rows, labels, subs, groups = _synthetic()
    a = train(rows, labels, groups, sublabels=subs, checksums=[str(i) for i in range(len(rows))])
    b = train(rows, labels, groups, sublabels=subs, checksums=[str(i) for i in range(len(rows))])
    assert a.id == b.id


class _Boom:
    """Unpickling this would create a file: proof that loading never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_offered_as_model_is_refused_without_unpickling(
    tmp_path: Path, protocol: int
) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Boom(marker), protocol=protocol))
    with pytest.raises(ModelError, match=r"(?i)pickle|not a JSON model"):
        Model.load(path)
    assert not marker.exists()


def test_a_model_of_another_version_of_a_builtin_metric_is_refused(model: Model) -> None:
    data = json.loads(model.to_json())
    data["metrics"]["edge_width_score"] = "000000000000"
    with pytest.raises(MissingMetricError) as err:
        Model.from_json(json.dumps(data))
    message = str(err.value)
    current = builtin_metrics()["edge_width_score"].version
    assert "edge_width_score version 000000000000" in message and current in message
    assert "Retrain" in message
    assert err.value.missing == {"edge_width_score": "000000000000"}


def test_a_legacy_model_of_an_unknown_metric_set_is_refused(model: Model) -> None:
    data = json.loads(model.to_json())
    del data["metrics"]
    data["metric_set_version"] = "ms-000000000000"
    with pytest.raises(ModelError, match=r"ms-000000000000.*retrained"):
        Model.from_json(json.dumps(data))


def test_a_legacy_model_of_the_set_the_builtins_reproduce_reads_their_versions(
    model: Model,
) -> None:
    data = json.loads(model.to_json())
    del data["metrics"]
    data["metric_set_version"] = "ms-2c13a2439865"  # before metrics had their own versions
    legacy = Model.from_json(json.dumps(data))
    assert legacy.metrics == {f: LEGACY_METRIC_SETS["ms-2c13a2439865"][f]
                              for f in classifier.DEFAULT_FEATURES}
    legacy.check(builtin_metrics())  # today's built-ins compute those versions


@pytest.mark.parametrize("field", ["nb", "features", "metric_set_version", "collapse"])
def test_missing_field_is_refused(model: Model, field: str) -> None:
    data = json.loads(model.to_json())
    del data[field]
    with pytest.raises(ModelError, match=field):
        Model.from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"format": "other"}'])
def test_non_models_are_refused(text: str) -> None:
    with pytest.raises(ModelError):
        Model.from_json(text)


def test_malformed_parameters_are_refused(model: Model) -> None:
    data = json.loads(model.to_json())
    data["nb"]["var"][0] = data["nb"]["var"][0][:-1]
    with pytest.raises(ModelError, match="shape"):
        Model.from_json(json.dumps(data))


def test_default_model_loads_for_this_metric_set() -> None:
    m = Model.load()
    assert m.classes == ("blurry", "good", "moire")
    assert m.metrics == builtin_metrics().select(m.features).versions
    assert m.info["cross_validation"]["macro_f1"] >= 0.95


def test_cross_validation_never_splits_a_source() -> None:
    rows, labels, subs, groups = _synthetic()
    result = cross_validate(rows, labels, groups, sublabels=subs)
    assert "leave one source" in result.split
    assert result.confusion.sum() == len(rows)
    assert result.macro_f1 > 0.9


def test_sublabel_under_two_labels_is_an_error() -> None:
    rows, labels, subs, groups = _synthetic()
    subs[0] = "moire_screen"  # row 0 is labelled good
    with pytest.raises(ValueError, match="two labels"):
        train(rows, labels, groups, sublabels=subs)


def test_sample_data_is_deterministic(tmp_path: Path) -> None:
    kwargs = {"seed": 7, "per_class": 2, "sources": ["astronaut", "coffee"]}
    a = generate(tmp_path / "a", **kwargs)
    b = generate(tmp_path / "b", **kwargs)
    assert a.read_text() == b.read_text()
    lines = a.read_text().splitlines()
    assert lines[0] == "path,label,sublabel,source"
    assert len(lines) == 1 + 2 * 3 * 2
    for line in lines[1:]:
        rel = line.split(",")[0]
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    c = generate(tmp_path / "c", seed=8, per_class=2, sources=["astronaut", "coffee"])
    assert c.read_text() != a.read_text() or any(
        (tmp_path / "a" / ln.split(",")[0]).read_bytes()
        != (tmp_path / "c" / ln.split(",")[0]).read_bytes()
        for ln in lines[1:]
    )


def test_cli_sample_data_train_evaluate(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(
        app,
        ["sample-data", str(data), "--per-class", "3", "--sources", "astronaut,coffee,rocket"],
    )
    assert result.exit_code == 0, result.output
    labels = data / "labels.csv"
    out = tmp_path / "m.json"
    result = runner.invoke(
        app, ["train", str(labels), "--images", str(data), "--out", str(out), "-j", "1"]
    )
    assert result.exit_code == 0, result.output
    assert Model.load(out).classes == ("blurry", "good", "moire")
    result = runner.invoke(app, ["evaluate", str(labels), "--images", str(data), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.output and "leave one source" in result.output
    result = runner.invoke(
        app, ["evaluate", str(labels), "--images", str(data), "--model", str(out), "-j", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "Per class" in result.output
