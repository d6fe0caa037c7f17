"""Local scoring: the incremental cache, bad files, labelling and the output formats."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from clearlake.quality import score as scoring
from clearlake.quality.analyse import ANALYSIS_VERSION, analysis_version
from clearlake.quality.metrics import METRIC_NAMES, METRIC_SET_VERSION
from clearlake.quality.registry import Metric, MetricSet, builtin_metrics
from clearlake.quality.score import (
    CACHE_FILE,
    MetricsCache,
    default_cache_dir,
    find_images,
    score_directory,
    write_records,
)
from clearlake.table import table_records

GOOD_IMAGES = 6
PAST = time.time() - 3600  # older than the racy window: (path, size, mtime) is trusted


@dataclass(frozen=True)
class _Prediction:
    label: str
    probabilities: dict[str, float]


class ThresholdModel:
    """A deterministic stand-in with the classifier's interface: sharp → good, else blurry."""

    id = "threshold-test-model"
    classes = ("blurry", "good")
    metric_set_version = METRIC_SET_VERSION

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, rows: Sequence[Mapping[str, float]]) -> list[_Prediction]:
        self.calls += 1
        out = []
        for row in rows:
            p_good = float(1.0 / (1.0 + np.exp(-(row["laplacian_var_score"] - 100.0) / 50.0)))
            label = "good" if p_good >= 0.5 else "blurry"
            out.append(_Prediction(label, {"blurry": 1.0 - p_good, "good": p_good}))
        return out


def age(path: Path, when: float = PAST) -> None:
    os.utime(path, (when, when))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Six distinct photo crops (two of them blurred), in nested folders, plus bad files."""
    photo = load_sample_image("flower.jpg")
    root = tmp_path / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for index in range(GOOD_IMAGES):
        crop = Image.fromarray(photo[index * 40 : index * 40 + 160, index * 50 : index * 50 + 200])
        if index >= 4:
            crop = crop.resize((50, 40)).resize((200, 160))  # blurry
        sub = ("", "nested", "nested/deeper")[index % 3]
        crop.save(root / sub / f"img{index}.jpg", quality=90)
    (root / "notes.jpg").write_text("this is a text file with an image extension\n")
    (root / "nested" / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("not picked up: no image extension")
    Image.fromarray(photo[:64, :64]).save(root / ".hidden" / "skipped.png")
    for path in root.rglob("*"):
        age(path)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def run(root: Path, cache_dir: Path, **options: object) -> scoring.ScoreResult:
    options.setdefault("jobs", 1)
    return score_directory(root, cache_dir=cache_dir, **options)


def test_walk_finds_images_by_extension_and_skips_hidden(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert names == sorted(names)
    assert "notes.jpg" in names
    assert "nested/empty.png" in names
    assert "readme.txt" not in names
    assert not any(name.startswith(".hidden") for name in names)
    assert len(names) == GOOD_IMAGES + 2


def test_bad_files_are_reported_not_fatal(folder: Path, cache_dir: Path) -> None:
    (folder / "gone.jpg").symlink_to(folder / "does-not-exist.jpg")
    result = run(folder, cache_dir, jobs=2)
    by_path = {r["path"]: r for r in result.records}
    assert by_path["notes.jpg"]["outcome"] == "corrupt"
    assert by_path["nested/empty.png"]["outcome"] == "corrupt"
    assert by_path["gone.jpg"]["outcome"] == "corrupt"
    assert "cannot read" in by_path["gone.jpg"]["reason"]
    assert result.outcomes["ok"] == GOOD_IMAGES
    for record in result.records:
        if record["outcome"] != "ok":
            assert record["metrics"] is None and record["probabilities"] is None
            assert record["reason"]


def test_second_run_decodes_nothing_and_hashes_nothing(
    folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(folder, cache_dir, jobs=2)
    total = GOOD_IMAGES + 2
    assert (first.computed, first.cached, first.hashed) == (total, 0, total)

    # In-process, with decoding made impossible: the second run must not need it.
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image on an unchanged folder")

    monkeypatch.setattr(scoring, "analyse", no_decoding)
    second = run(folder, cache_dir)
    assert (second.computed, second.cached, second.hashed) == (0, total, 0)
    strip = ("model_id",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in second.records] == [
        {k: v for k, v in r.items() if k not in strip} for r in first.records
    ]


def test_changing_one_file_recomputes_exactly_one(folder: Path, cache_dir: Path) -> None:
    run(folder, cache_dir, jobs=2)
    target = folder / "nested" / "img1.jpg"
    Image.open(target).rotate(90).save(target, quality=90)
    age(target, PAST + 10)
    result = run(folder, cache_dir, jobs=2)
    assert (result.computed, result.hashed) == (1, 1)
    assert result.cached == GOOD_IMAGES + 1


def test_touching_one_file_rehashes_it_but_decodes_nothing(folder: Path, cache_dir: Path) -> None:
    run(folder, cache_dir)
    age(folder / "img0.jpg", PAST + 10)
    result = run(folder, cache_dir)
    assert (result.computed, result.hashed) == (0, 1)


def test_renamed_and_copied_files_reuse_metrics(folder: Path, cache_dir: Path) -> None:
    first = run(folder, cache_dir)
    (folder / "img0.jpg").rename(folder / "renamed.jpg")
    shutil.copy2(folder / "nested" / "img1.jpg", folder / "copy.jpg")
    result = run(folder, cache_dir)
    assert result.computed == 0
    assert result.hashed == 2
    by_path = {r["path"]: r for r in result.records}
    old = {r["path"]: r for r in first.records}
    assert by_path["renamed.jpg"]["sha256"] == old["img0.jpg"]["sha256"]
    assert by_path["copy.jpg"]["metrics"] == old["nested/img1.jpg"]["metrics"]
    assert set(by_path["copy.jpg"]["metrics"]) == set(METRIC_NAMES)


def test_files_written_just_now_are_rehashed_next_time(tmp_path: Path, cache_dir: Path) -> None:
    # Same size and mtime within the timestamp granularity could hide an edit.
    root = tmp_path / "fresh"
    root.mkdir()
    Image.fromarray(load_sample_image("china.jpg")[:120, :160]).save(root / "new.png")
    run(root, cache_dir)
    again = run(root, cache_dir)
    assert (again.computed, again.hashed) == (0, 1)


def _counting_analyse(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...] | None]:
    """Record, per image analysed in this process, the metrics asked for (None: all)."""
    asked: list[tuple[str, ...] | None] = []
    real = scoring.analyse

    def analyse(data: bytes, **options: Any) -> scoring.Analysis:
        only = options.get("only")
        asked.append(None if only is None else tuple(m.name for m in only))
        return real(data, **options)

    monkeypatch.setattr(scoring, "analyse", analyse)
    return asked


def test_a_new_version_of_one_metric_recomputes_that_metric_alone(
    folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(folder, cache_dir)
    changed = builtin_metrics()["edge_width_score"]
    metric_set = MetricSet(replace(m, version="0" * 12) if m is changed else m
                           for m in builtin_metrics())
    asked = _counting_analyse(monkeypatch)
    result = run(folder, cache_dir, metric_set=metric_set)
    # The six photographs are decoded for the one metric; the bad files' outcomes hold.
    assert asked == [("edge_width_score",)] * GOOD_IMAGES
    assert (result.computed, result.cached) == (GOOD_IMAGES, 2)
    assert [r["metrics"] for r in result.records] == [r["metrics"] for r in first.records]
    assert {r["analysis_version"] for r in result.records} == {analysis_version(metric_set)}


def test_a_new_decoder_version_recomputes_everything(
    folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(folder, cache_dir)
    monkeypatch.setattr(scoring.decoding, "DECODER_VERSION", "a-different-decoder")
    result = run(folder, cache_dir)
    assert result.computed == GOOD_IMAGES + 2
    assert result.hashed == GOOD_IMAGES + 2  # known bytes, but nothing valid cached for them


def test_asking_for_more_metrics_computes_only_those(
    folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = builtin_metrics().select(["laplacian_var_score", "luma_peak_score"])
    first = run(folder, cache_dir, metric_set=few)
    ok = [r for r in first.records if r["outcome"] == "ok"]
    assert [list(r["metrics"]) for r in ok] == [["laplacian_var_score", "luma_peak_score"]] * 6
    asked = _counting_analyse(monkeypatch)
    everything = run(folder, cache_dir)
    rest = {n for n in METRIC_NAMES if n not in few}
    assert [set(names or ()) for names in asked] == [rest] * GOOD_IMAGES
    # Bit for bit what measuring all of them at once gives, in the columns' order.
    fresh = run(folder, cache_dir.with_name("fresh-cache"))
    assert [r["metrics"] for r in everything.records] == [r["metrics"] for r in fresh.records]
    assert all(list(r["metrics"]) == list(METRIC_NAMES)
               for r in everything.records if r["outcome"] == "ok")
    # And now the few again: nothing to compute.
    again = run(folder, cache_dir, metric_set=few)
    assert (again.computed, again.hashed) == (0, 0)
    assert [r["metrics"] for r in again.records] == [r["metrics"] for r in first.records]


def test_a_metric_that_failed_on_some_bytes_is_not_computed_again(
    folder: Path, cache_dir: Path
) -> None:
    def broken(image: Any) -> float:
        raise ValueError("a plugin's bug")

    metric_set = MetricSet([*builtin_metrics(), Metric.of("broken_score", broken, "test")])
    first = run(folder, cache_dir, metric_set=metric_set)
    measured = [r["metrics"] for r in first.records if r["outcome"] == "ok"]
    assert len(measured) == GOOD_IMAGES
    assert all(list(m) == list(METRIC_NAMES) for m in measured)  # the others have values
    second = run(folder, cache_dir, metric_set=metric_set)
    assert second.computed == 0
    assert [r["metrics"] for r in second.records] == [r["metrics"] for r in first.records]


def test_lower_pixel_limit_refuses_cached_images_without_decoding(
    folder: Path, cache_dir: Path
) -> None:
    run(folder, cache_dir)
    result = run(folder, cache_dir, max_pixels=100 * 100)
    assert result.computed == 0
    assert result.outcomes["too_large"] == GOOD_IMAGES
    record = next(r for r in result.records if r["path"] == "img0.jpg")
    assert (record["width"], record["height"]) == (200, 160)
    assert "exceeds" in record["reason"]


def test_no_cache_reads_and_writes_nothing(folder: Path, cache_dir: Path) -> None:
    result = run(folder, cache_dir, use_cache=False)
    assert result.computed == GOOD_IMAGES + 2
    assert not (cache_dir / CACHE_FILE).exists()


def test_cache_is_sqlite_in_wal_mode(folder: Path, cache_dir: Path) -> None:
    run(folder, cache_dir)
    with sqlite3.connect(cache_dir / CACHE_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM images").fetchone()[0] == GOOD_IMAGES + 2
        assert db.execute("SELECT count(*) FROM metric_values").fetchone()[0] == (
            GOOD_IMAGES * len(METRIC_NAMES))
    # A second writer while the first is open (two `score` runs at once).
    with MetricsCache(cache_dir / CACHE_FILE) as one, MetricsCache(cache_dir / CACHE_FILE) as two:
        one.store([("/x/a.jpg", 1, 1, "a" * 64)], [], builtin_metrics())
        two.store([("/x/b.jpg", 1, 1, "b" * 64)], [], builtin_metrics())
        assert len(one.known_files("/x")) == 2


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLEARLAKE_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("CLEARLAKE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clearlake" / "metrics"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "clearlake" / "metrics"


def test_labels_come_from_the_model_and_are_never_cached(folder: Path, cache_dir: Path) -> None:
    model = ThresholdModel()
    first = run(folder, cache_dir, model=model, jobs=2)
    assert model.calls == 1  # one call for the whole folder
    assert first.classes == ("blurry", "good")
    assert first.model_id == "threshold-test-model"
    ok = [r for r in first.records if r["outcome"] == "ok"]
    assert all(r["label"] in ("blurry", "good") for r in ok)
    assert all(abs(r["probabilities"]["good"] + r["probabilities"]["blurry"] - 1) < 1e-12
               for r in ok)
    assert sum(first.labels.values()) == GOOD_IMAGES
    bad = [r for r in first.records if r["outcome"] != "ok"]
    assert all(r["label"] is None and r["probabilities"] is None for r in bad)
    worst = [r["probabilities"]["good"] for r in scoring.worst(first, 3)]
    assert worst == sorted(worst)
    assert worst[0] == min(r["probabilities"]["good"] for r in ok)

    second = run(folder, cache_dir, model=model)
    assert second.computed == 0
    assert model.calls == 2  # labelled again from cached metrics
    assert [r["label"] for r in second.records] == [r["label"] for r in first.records]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_output_formats_round_trip(
    folder: Path, cache_dir: Path, tmp_path: Path, suffix: str
) -> None:
    result = run(folder, cache_dir, model=ThresholdModel())
    out = tmp_path / "out" / f"results{suffix}"
    write_records(result.records, out)
    # The results table's columns: what reviewers read first, then the rest.
    expected_columns = [
        "path", "label", "outcome", "reason", "p_blurry", "p_good", *METRIC_NAMES,
        "sha256", "size", "width", "height", "model_id", "analysis_version",
    ]
    if suffix == ".parquet":
        table = pq.read_table(out)
        assert table.column_names == expected_columns
        assert str(table.schema.field("size").type) == "int64"
        assert str(table.schema.field("laplacian_var_score").type) == "double"
        rows = table.to_pylist()
        # The same layout as a branch's table: the records come back whole.
        assert table_records(out.read_bytes()) == result.records
    elif suffix == ".csv":
        with out.open(newline="") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == expected_columns
            rows = list(reader)
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert list(rows[0]) == expected_columns
    assert len(rows) == len(result.records)
    for got, want in zip(rows, result.records, strict=True):
        assert got["path"] == want["path"]
        assert got["outcome"] == want["outcome"]
        assert got["analysis_version"] == ANALYSIS_VERSION
        expected = {**(want["metrics"] or {}),
                    "p_good": (want["probabilities"] or {}).get("good")}
        for name in (*METRIC_NAMES, "p_good"):
            if expected.get(name) is None:
                assert got[name] in (None, "")
            else:
                assert float(got[name]) == expected[name]  # exact: repr round-trips floats


def test_unknown_output_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parquet"):
        write_records([], tmp_path / "results.xlsx")


# --- the command ----------------------------------------------------------------------


def _packaged_model_or_skip() -> object:
    classifier = pytest.importorskip("clearlake.quality.classifier")
    try:
        return classifier.Model.load(None)
    except classifier.ModelError as exc:
        pytest.skip(f"no packaged model in this checkout: {exc}")


def test_cli_score_writes_records_and_prints_a_summary(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from clearlake.cli import app

    model = _packaged_model_or_skip()
    monkeypatch.setenv("CLEARLAKE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "results.parquet"
    runner = CliRunner()
    first = runner.invoke(app, ["score", str(folder), "--out", str(out), "--jobs", "2"])
    assert first.exit_code == 0, first.output
    assert f"{GOOD_IMAGES + 2} measured" in first.output
    assert "Worst images" in first.output
    assert "notes.jpg" in first.output  # bad files are listed with their reason
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == GOOD_IMAGES + 2
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert {r["label"] for r in ok} <= set(model.classes)
    assert {r["model_id"] for r in rows} == {model.id}
    for row in ok:
        assert abs(sum(row[f"p_{c}"] for c in model.classes) - 1) < 1e-6

    second = runner.invoke(app, ["score", str(folder), "--jobs", "2"])
    assert second.exit_code == 0, second.output
    assert "0 measured" in second.output
    assert f"{GOOD_IMAGES + 2} from cache" in second.output


def test_cli_score_computes_the_models_metrics_unless_asked_for_more(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from clearlake.cli import app

    model = _packaged_model_or_skip()
    monkeypatch.setenv("CLEARLAKE_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    columns = {}
    for option in ("model", "laplacian_var_score", "all"):
        out = tmp_path / f"{option}.parquet"
        result = runner.invoke(app, ["score", str(folder), "--metrics", option, "--out", str(out)])
        assert result.exit_code == 0, result.output
        columns[option] = [c for c in pq.read_table(out).column_names if c in METRIC_NAMES]
        if option == "all":  # the other metrics only: the cache had the model's
            assert f"{GOOD_IMAGES} measured" in result.output
    assert set(columns["model"]) == set(model.features)
    assert set(columns["laplacian_var_score"]) == {*model.features, "laplacian_var_score"}
    assert columns["all"] == list(METRIC_NAMES)

    unknown = runner.invoke(app, ["score", str(folder), "--metrics", "sharpness"])
    assert unknown.exit_code == 2
    assert "unknown metrics ['sharpness']" in unknown.output


def test_cli_refuses_an_unknown_output_format(folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clearlake.cli import app

    result = CliRunner().invoke(app, ["score", str(folder), "--out", str(tmp_path / "r.xlsx")])
    assert result.exit_code == 2


def test_an_unusable_cache_is_a_clear_error(folder: Path, tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with pytest.raises(scoring.CacheError, match="metrics cache"):
        run(folder, not_a_directory / "cache")
    corrupt = tmp_path / "bad-cache"
    corrupt.mkdir()
    (corrupt / CACHE_FILE).write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(scoring.CacheError):
        run(folder, corrupt)


def test_cached_refusal_becomes_too_large_under_a_lower_limit(
    tmp_path: Path, cache_dir: Path
) -> None:
    # decode() checks the header size before anything else, and so must the cache.
    root = tmp_path / "gif"
    root.mkdir()
    frame = Image.fromarray(load_sample_image("china.jpg")[:100, :150])
    frame.save(root / "anim.gif", save_all=True, append_images=[frame.rotate(180)])
    age(root / "anim.gif")
    first = run(root, cache_dir)
    assert first.records[0]["outcome"] == "unsupported"
    assert (first.records[0]["width"], first.records[0]["height"]) == (150, 100)
    lower = run(root, cache_dir, max_pixels=150 * 100 - 1)
    assert (lower.computed, lower.hashed) == (0, 0)
    assert lower.records[0]["outcome"] == "too_large"
    again = run(root, cache_dir)
    assert (again.computed, again.records[0]["outcome"]) == (0, "unsupported")


def test_chunks_hold_every_task_once_largest_files_first() -> None:
    sizes = [5, 900, 40, 900, 7, 300, 1]
    tasks = [scoring._Task(index, f"/f{index}", size, 0) for index, size in enumerate(sizes)]
    chunks = list(scoring._chunks(tasks, workers=2))
    # 7 tasks, 2 workers: chunks of one task; equal sizes keep their order.
    assert [[task.index for task in chunk] for chunk in chunks] == [[1], [3], [5], [2], [4], [0],
                                                                    [6]]
    many = [scoring._Task(index, f"/f{index}", index % 10, 0) for index in range(200)]
    chunks = list(scoring._chunks(many, workers=2))
    # Each chunk holds ceil(files left / 16): the last ones a single file.
    assert [len(chunk) for chunk in chunks] == [
        13, 12, 11, 11, 10, 9, 9, 8, 8, 7, 7, 6, 6, 6, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 3,
        2, 2, 2, 2, 2, 2, 2, 2, *[1] * 15]
    assert sorted(task.index for chunk in chunks for task in chunk) == list(range(200))
    # 20 tasks of each size 9, 8, …, 0, largest first.
    sizes = [task.size for chunk in chunks for task in chunk]
    assert sizes == [size for size in range(9, -1, -1) for _ in range(20)]
    assert [len(chunk) for chunk in scoring._chunks(many * 5, workers=1)][:3] == [32, 32, 32]
