"""Versioned, pluggable metrics against the real stack: a scripts repository pinned by
commit, reuse of each metric across branches, a model needing a missing metric, and
stores written before metrics had versions of their own."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from clearlake import layout, pipeline, scripts
from clearlake.errors import ConfigurationError
from clearlake.gate import evaluate_merge
from clearlake.lakefs import LakeFS
from clearlake.layout import CONFIG_PATH
from clearlake.metrics_store import (
    MetricsStore,
    StoredAnalysis,
    analysis_path,
    checksum_path,
    document_path,
)
from clearlake.provenance import ResultsMarker, signing_key
from clearlake.quality.analyse import analyse
from clearlake.quality.classifier import MissingMetricError, train
from clearlake.quality.registry import LEGACY_METRIC_SETS, Metric, MetricSet, builtin_metrics
from clearlake.scripts import ALLOWED_ENV
from tests.pipeline_support import commit_images, photo, records_on, unique_seed

pytestmark = pytest.mark.slow

BUILTINS = set(builtin_metrics().names)
SCRIPT = '''
"""Metrics kept in the scripts repository."""

from clearlake.quality.registry import metric


@metric("mean_luma_score")
def mean_luma(image):
    """Mean grey level."""
    return float(image.grey.mean()){scale}


@metric("narrow_score")
def narrow(image):
    """{doc}"""
    if image.width > 150:
        raise ValueError("too wide for this metric")
    return 1.0
'''


@pytest.fixture
def scripts_repo(lakefs: LakeFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scripts repository the operator allows."""
    name = f"scripts-{secrets.token_hex(4)}"
    lakefs.create_repository(name)
    monkeypatch.setenv(ALLOWED_ENV, name)
    try:
        yield name
    finally:
        lakefs.delete_repository(name)


def _publish(lakefs: LakeFS, scripts: str, scale: str = "", doc: str = "Only narrow ones.") -> str:
    lakefs.upload_object(scripts, "main", "luma.py", SCRIPT.format(scale=scale, doc=doc).encode())
    return lakefs.commit(scripts, "main", "metrics")


def _pin(lakefs: LakeFS, repo: str, scripts: str, commit: str, branch: str = "main") -> str:
    pin = f"lakefs://{scripts}/main@{commit}"
    lakefs.upload_object(repo, branch, CONFIG_PATH, f"scripts: {pin}\n".encode())
    lakefs.commit(repo, branch, "pin the metrics scripts")
    return pin


def test_a_scripts_metric_added_then_changed_is_computed_alone_and_reused_across_branches(
    lakefs: LakeFS, repo: str, scripts_repo: str, classify: Any,
) -> None:
    seed = unique_seed()
    images = {f"img/{i}.jpg": photo(seed + i, size=128 if i < 3 else 160) for i in range(6)}
    before_pin = commit_images(lakefs, repo, images)
    first = classify(repo)
    assert first["metrics_computed"] == dict.fromkeys(BUILTINS, 6)

    # Added: the pin is a commit like any other; only the two new metrics are computed.
    pin = _pin(lakefs, repo, scripts_repo, _publish(lakefs, scripts_repo))
    added = classify(repo)
    assert added["status"] == "merged" and added["scripts"] == pin
    assert added["metrics_computed"] == {"mean_luma_score": 6, "narrow_score": 6}
    assert added["counts"]["computed"] == 6 and added["counts"]["failed"] == 0
    records = records_on(lakefs, repo)
    assert all(r["metrics"]["mean_luma_score"] > 0 for r in records.values())
    wide = {p for p in images if int(p[4]) >= 3}
    assert {p for p, r in records.items() if r["metric_failures"]} == wide
    assert records["img/4.jpg"]["metric_failures"] == {
        "narrow_score": f"metric 'narrow_score' (scripts@{pin.split('@')[1][:12]}) raised "
                        "ValueError: too wide for this metric"}
    assert {r["outcome"] for r in records.values()} == {"ok"}  # the model does not read it
    assert all(r["label"] for r in records.values())
    marker = ResultsMarker.from_metadata(
        lakefs.get_commit(repo, added["results_commit"]).metadata, signing_key())
    assert marker.scripts == pin and "mean_luma_score" in marker.metric_versions
    old_luma = marker.metric_versions["mean_luma_score"]

    # Changed: one metric's code, the other's docstring. Only the first is computed again.
    changed_pin = _pin(lakefs, repo, scripts_repo,
                       _publish(lakefs, scripts_repo, scale=" / 255.0", doc="Reworded."))
    changed = classify(repo)
    assert changed["metrics_computed"] == {"mean_luma_score": 6}
    records = records_on(lakefs, repo)
    assert all(0 < r["metrics"]["mean_luma_score"] < 1 for r in records.values())
    marker = ResultsMarker.from_metadata(
        lakefs.get_commit(repo, changed["results_commit"]).metadata, signing_key())
    assert marker.scripts == changed_pin and marker.metric_versions["mean_luma_score"] != old_luma

    # Another branch, made before the pin, pins the same scripts: every metric is reused.
    lakefs.create_branch(repo, "other", before_pin)
    _pin(lakefs, repo, scripts_repo, changed_pin.split("@")[1], branch="other")
    other = classify(repo, "other")
    assert other["metrics_computed"] == {}
    assert other["counts"]["reused"] == 6 and other["counts"]["computed"] == 0
    assert {p: r["metrics"] for p, r in records_on(lakefs, repo, "other").items()} == {
        p: r["metrics"] for p, r in records.items()}


def test_a_scripts_repository_the_operator_has_not_allowed_is_refused(
    lakefs: LakeFS, repo: str, scripts_repo: str, classify: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit_images(lakefs, repo, {"a.jpg": photo(unique_seed())})
    _pin(lakefs, repo, scripts_repo, _publish(lakefs, scripts_repo))
    monkeypatch.delenv(ALLOWED_ENV)
    with pytest.raises(ConfigurationError, match=f"{scripts_repo}.*not allowed.*{ALLOWED_ENV}"):
        classify(repo)


def test_a_model_that_needs_a_missing_metric_stops_the_run_saying_which(
    lakefs: LakeFS, repo: str, classify: Any,
) -> None:
    commit_images(lakefs, repo, {"a.jpg": photo(unique_seed())})
    elsewhere = Metric("mean_luma_score", "0123456789ab", "scripts@0123456789ab",
                       lambda image: 0.0)
    rows = [{"laplacian_var_score": float(i), "mean_luma_score": float(i % 3)} for i in range(20)]
    model = train(rows, ["good" if i % 2 else "blurry" for i in range(20)],
                  [str(i % 4) for i in range(20)],
                  features=("laplacian_var_score", "mean_luma_score"),
                  metric_set=MetricSet([*builtin_metrics(), elsewhere]))
    lakefs.upload_object(repo, "main", layout.MODEL_PATH, model.to_json().encode())
    lakefs.commit(repo, "main", "a model trained with a scripts metric")
    with pytest.raises(MissingMetricError, match="mean_luma_score version 0123456789ab") as err:
        classify(repo)
    assert err.value.missing == {"mean_luma_score": "0123456789ab"}


def test_the_gate_measures_with_the_scripts_the_destination_pins(
    lakefs: LakeFS, repo: str, scripts_repo: str,
) -> None:
    """The gate labels incoming images with the destination's model, so it computes what a
    run there would: built-ins, entry points and the pinned scripts (it used to compute the
    first two only, and a model reading a scripts metric failed every incoming image)."""
    seed = unique_seed()
    commit_images(lakefs, repo, {"a.jpg": photo(seed)})
    _pin(lakefs, repo, scripts_repo, _publish(lakefs, scripts_repo))
    metric_set = scripts.metrics_at(lakefs, repo, "main")
    assert "mean_luma_score" in metric_set
    rows = [{"laplacian_var_score": float(i), "mean_luma_score": float(i % 3)} for i in range(20)]
    model = train(rows, ["good" if i % 2 else "blurry" for i in range(20)],
                  [str(i % 4) for i in range(20)],
                  features=("laplacian_var_score", "mean_luma_score"), metric_set=metric_set)
    lakefs.upload_object(repo, "main", layout.MODEL_PATH, model.to_json().encode())
    lakefs.upload_object(repo, "main", layout.POLICY_PATH, b"max_not_good_percent: 100\n")
    lakefs.commit(repo, "main", "a model reading a scripts metric, and a policy")
    lakefs.create_branch(repo, "feature", "main")
    source = commit_images(lakefs, repo, {"in/b.jpg": photo(seed + 1)}, branch="feature")

    verdict = evaluate_merge(repo, source, "main")
    assert verdict.checked == 1
    assert verdict.labels["in/b.jpg"] in model.classes, verdict.labels


def test_a_store_written_before_metric_versions_is_read_then_migrated_without_computing(
    lakefs: LakeFS, repo: str,
) -> None:
    seed = unique_seed()
    images = {f"x/{i}.jpg": photo(seed + i) for i in range(3)}
    source = commit_images(lakefs, repo, images)
    datums = []
    for path in images:
        info = lakefs.stat_object(repo, source, path)
        datums.append(pipeline.Datum(path, info.checksum, info.size))
    store = MetricsStore(lakefs, f"{repo}-store")
    legacy = "ms-2c13a2439865+dec1"
    legacy_versions = LEGACY_METRIC_SETS["ms-2c13a2439865"]
    # The built-ins that still compute what that set did (the others changed since, or are new).
    unchanged = MetricSet(m for m in builtin_metrics() if legacy_versions.get(m.name) == m.version)
    assert 0 < len(unchanged) < len(legacy_versions)
    old = {}  # what the code before versions stored, for the first two images
    for datum in datums[:2]:
        a = analyse(images[datum.path])
        stored = StoredAnalysis(a.sha256, a.size, str(a.outcome), a.reason, a.width, a.height,
                                {n: a.metrics[n] for n in legacy_versions}, {"path": datum.path})
        old[analysis_path(legacy, a.sha256)] = stored.to_json()
        old[checksum_path(datum.checksum, datum.size)] = json.dumps({"sha256": a.sha256}).encode()
    try:
        store.put_documents(old, "metrics as stored before metric versions")
        assert store.legacy_versions() == [legacy]

        measured = pipeline.measure_batch(lakefs, store, repo, source, datums, "run-1",
                                          metric_set=unchanged)
        assert [(m.origin, bool(m.computed)) for m in measured] == [
            ("reused", False), ("reused", False), ("computed", True)]
        assert pipeline.computations(measured) == dict.fromkeys(unchanged.names, 1)
        assert measured[0].analysis.metrics == {n: json.loads(
            old[analysis_path(legacy, measured[0].analysis.sha256)])["metrics"][n]
            for n in unchanged.names}

        count, commit = store.migrate(legacy)
        assert count == 2 and commit
        assert store.legacy_versions() == []
        assert lakefs.stat_object(store.repository, "main",
                                  document_path(measured[1].analysis.sha256))
        again = pipeline.measure_batch(lakefs, store, repo, source, datums[:2], "run-2",
                                       metric_set=unchanged)
        assert [m.origin for m in again] == ["reused", "reused"]
        assert pipeline.computations(again) == {}
        # Today's whole set on the migrated images: only the metrics new or changed since
        # are computed.
        today = pipeline.measure_batch(lakefs, store, repo, source, datums[:2], "run-3",
                                       metric_set=builtin_metrics())
        assert pipeline.computations(today) == dict.fromkeys(
            set(BUILTINS) - set(unchanged.names), 2)
    finally:
        lakefs.delete_repository(store.repository)
