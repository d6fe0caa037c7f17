"""The classify-commit flow against a real lakeFS, a real Prefect server and a real Dask cluster."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import cv2
import pytest
from distributed import Client

import clearlake.table
from clearlake import layout, pipeline
from clearlake.config import DASK_WORKER_MALLOC_ENV
from clearlake.errors import NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.lineage import lineage
from clearlake.metrics_store import MetricsStore
from clearlake.provenance import ResultsMarker, signing_key
from clearlake.table import table_records, updated_table
from clearlake.transaction import TEMP_BRANCH_PREFIX
from tests.pipeline_support import commit_images, photo, records_on, unique_seed


@pytest.mark.slow
def test_first_run_then_only_the_change_then_nothing(
    lakefs: LakeFS, repo: str, classify: Any, dask_address: str
) -> None:
    seed = unique_seed()
    images = {f"images/{i:02d}.jpg": photo(seed + i) for i in range(50)}
    images["docs/readme.txt"] = b"not an input"
    first_source = commit_images(lakefs, repo, images)

    first = classify(repo)
    assert first["status"] == "merged"
    assert first["counts"]["computed"] == 50 and first["counts"]["reused"] == 0
    assert {name: set(steps) for name, steps in first["transaction_seconds"].items()} == {
        name: {"branch", "uploads", "commit", "merge"} for name in ("results", "store")}
    with Client(dask_address, set_as_default=False) as client:  # workers that measured
        assert set(client.run(cv2.getNumThreads).values()) == {1}  # one OpenCV thread each
    records = records_on(lakefs, repo)
    assert set(records) == {p for p in images if p.startswith("images/")}
    assert {r["source_commit"] for r in records.values()} == {first_source}
    table = pipeline.read_table(lakefs, repo, "main", "main")
    assert len(table) == 50

    marker = ResultsMarker.from_metadata(
        lakefs.get_commit(repo, first["results_commit"]).metadata, signing_key())
    assert marker is not None and marker.source_commit == first_source
    assert marker.run_id == records["images/00.jpg"]["run_id"]

    changed = {f"images/{i:02d}.jpg": photo(seed + 1000 + i) for i in range(3)}
    commit_images(lakefs, repo, changed, message="change three")
    second = classify(repo)
    assert second["counts"] == {"computed": 3, "reused": 0, "failed": 0, "removed": 0,
                                "relabelled": 0}
    assert len(pipeline.read_table(lakefs, repo, "main", "main")) == 50

    head = lakefs.head(repo, "main")
    assert classify(repo)["status"] == "up_to_date"
    assert lakefs.head(repo, "main") == head  # no second results commit


@pytest.mark.slow
def test_deletions_renames_copies_and_a_corrupt_image(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {f"a/{i}.jpg": photo(seed + i) for i in range(4)})
    classify(repo)

    lakefs.delete_objects(repo, "main", ["a/0.jpg", "a/1.jpg"])
    lakefs.upload_object(repo, "main", "b/renamed.jpg", photo(seed + 1))  # a/1 moved
    lakefs.upload_object(repo, "main", "b/copy.jpg", photo(seed + 2))  # a/2 copied
    lakefs.upload_object(repo, "main", "b/broken.jpg", photo(seed + 9)[:700])  # truncated
    lakefs.commit(repo, "main", "delete, rename, copy, add a broken file")
    summary = classify(repo)

    assert summary["counts"]["removed"] == 2
    assert summary["counts"]["reused"] == 2  # the rename and the copy: not decoded again
    assert summary["counts"]["computed"] == 1  # the broken file
    records = records_on(lakefs, repo)
    assert set(records) == {"a/2.jpg", "a/3.jpg", "b/renamed.jpg", "b/copy.jpg", "b/broken.jpg"}
    assert records["b/broken.jpg"]["outcome"] == "corrupt"
    assert records["b/broken.jpg"]["reason"]
    assert records["b/copy.jpg"]["origin"] == "reused"
    assert records["b/copy.jpg"]["computed_at"]["path"] == "a/2.jpg"
    assert {r["path"] for r in pipeline.read_table(lakefs, repo, "main", "main")} == set(records)


@pytest.mark.slow
def test_a_run_on_the_cluster_a_dask_cluster_block_names(
    lakefs: LakeFS, repo: str, dask_address: str
) -> None:
    from clearlake.blocks import DaskCluster
    from clearlake.flows.classify import classify_commit
    from distributed import get_task_stream

    seed = unique_seed()
    commit_images(lakefs, repo, {f"img/{i}.jpg": photo(seed + i) for i in range(3)})
    DaskCluster(address=dask_address).save(f"cluster-{repo}", overwrite=True)
    with Client(dask_address, set_as_default=False) as client, \
            get_task_stream(client) as stream:
        summary = classify_commit(repo, "main", dask_cluster=f"cluster-{repo}")
    assert summary["counts"]["computed"] == 3
    assert any(task["key"].startswith("measure_batch") for task in stream.data)


@pytest.mark.slow
def test_copies_within_one_batch_are_measured_once(lakefs: LakeFS, repo: str) -> None:
    seed = unique_seed()
    images = {"a/original.jpg": photo(seed), "b/copy.jpg": photo(seed),
              "c/other.jpg": photo(seed + 1)}
    source = commit_images(lakefs, repo, images)
    datums = [pipeline.Datum(path, *_checksum_and_size(lakefs, repo, source, path))
              for path in images]
    store = MetricsStore(lakefs, f"{repo}-store")  # new: it has measured nothing

    measured = pipeline.measure_batch(lakefs, store, repo, source, datums, "run-1")

    assert [(m.path, m.origin) for m in measured] == [
        ("a/original.jpg", "computed"), ("b/copy.jpg", "reused"), ("c/other.jpg", "computed")]
    assert measured[1].analysis == measured[0].analysis  # computed at a/original.jpg
    assert measured[1].learned_sha256  # its checksum is worth remembering too


def _checksum_and_size(lakefs: LakeFS, repo: str, ref: str, path: str) -> tuple[str, int]:
    info = lakefs.stat_object(repo, ref, path)
    return info.checksum, info.size


@pytest.mark.slow
def test_a_run_that_catches_up_covers_the_head_its_commit_led_to(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    first = commit_images(lakefs, repo, {"burst/0.jpg": photo(seed)}, message="first")
    second = commit_images(lakefs, repo, {"burst/1.jpg": photo(seed + 1)}, message="second")

    exact = classify(repo, commit=first)  # a run for exactly the commit it names
    assert exact["source_commit"] == first and set(records_on(lakefs, repo)) == {"burst/0.jpg"}
    caught_up = classify(repo, commit=first, catch_up=True)  # as a triggered run does
    assert caught_up["status"] == "merged" and caught_up["source_commit"] == second
    assert caught_up["counts"]["computed"] == 1
    assert set(records_on(lakefs, repo)) == {"burst/0.jpg", "burst/1.jpg"}
    # The run for the second commit, queued behind, finds its commit covered.
    assert classify(repo, commit=second, catch_up=True)["status"] == "up_to_date"


@pytest.mark.slow
def test_a_commit_landing_during_the_run_is_neither_swept_in_nor_lost(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {f"img/{i}.jpg": photo(seed + i) for i in range(3)})
    # A user is mid-upload: the branch is dirty, so the results merge must wait.
    lakefs.upload_object(repo, "main", "img/late.jpg", photo(seed + 50))

    def user_commits_once_the_run_has_planned() -> None:
        # The run opens its results transaction (a temporary branch) after planning.
        deadline = time.monotonic() + 60
        while not lakefs.list_branches(repo, TEMP_BRANCH_PREFIX) and time.monotonic() < deadline:
            time.sleep(0.05)
        lakefs.commit(repo, "main", "the user's own commit")

    user = threading.Thread(target=user_commits_once_the_run_has_planned)
    user.start()
    summary = classify(repo, merge_timeout_s=60.0)
    user.join()

    assert summary["status"] == "merged" and summary["counts"]["computed"] == 3
    results = lakefs.get_commit(repo, summary["results_commit"])
    user_commit = lakefs.get_commit(repo, results.parents[0])
    assert user_commit.message == "the user's own commit"  # kept, and before the merge
    changed = {d.path for d in lakefs.diff(repo, user_commit.id, results.id)}
    assert all(p.startswith("_clearlake/") for p in changed)  # nothing of the user's swept in
    assert "img/late.jpg" not in records_on(lakefs, repo)  # not covered yet...
    follow_up = classify(repo)
    assert follow_up["counts"]["computed"] == 1  # ...until the next run
    assert "img/late.jpg" in records_on(lakefs, repo)


@pytest.mark.slow
def test_a_dirty_branch_leaves_the_results_pending_without_losing_them(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    commit_images(lakefs, repo, {"x.jpg": photo(unique_seed())})
    lakefs.upload_object(repo, "main", "wip.jpg", b"still uploading")
    summary = classify(repo, merge_timeout_s=1.0)
    assert summary["status"] == "pending"
    with pytest.raises(NotFoundError):
        lakefs.get_object(repo, "main", layout.record_path("x.jpg"))
    pending = summary["pending_branch"]
    assert lakefs.get_object(repo, pending, layout.record_path("x.jpg"))
    assert lakefs.has_uncommitted_changes(repo, "main")  # the user's upload untouched


@pytest.mark.slow
def test_a_new_model_relabels_from_stored_metrics_without_decoding(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    from clearlake.quality.classifier import train

    seed = unique_seed()
    commit_images(lakefs, repo, {f"p/{i}.jpg": photo(seed + i, blur=3.0 * (i % 2))
                                 for i in range(12)})
    first = classify(repo)
    table = pipeline.read_table(lakefs, repo, "main", "main")
    # A model with other labels, trained on the stored metrics: "sharp" vs "soft".
    labels = ["soft" if int(r["path"].split("/")[1].split(".")[0]) % 2 else "sharp"
              for r in table]
    model = train([r["metrics"] for r in table], labels, [r["path"] for r in table])
    lakefs.upload_object(repo, "main", layout.MODEL_PATH, model.to_json().encode())
    lakefs.commit(repo, "main", "a new model")

    second = classify(repo)
    assert second["counts"]["computed"] == 0 and second["counts"]["reused"] == 0
    assert second["counts"]["relabelled"] == 12
    records = records_on(lakefs, repo)
    assert {r["model_id"] for r in records.values()} == {model.id} != {first and ""}
    assert {r["label"] for r in records.values()} <= {"sharp", "soft"}


@pytest.mark.slow
def test_lineage_of_an_image_that_changed_twice(lakefs: LakeFS, repo: str, classify: Any) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"cat.jpg": photo(seed)})
    classify(repo)
    commit_images(lakefs, repo, {"cat.jpg": photo(seed, blur=4.0)}, message="blur it")
    classify(repo)
    commit_images(lakefs, repo, {"cat.jpg": photo(seed + 1)}, message="replace it")
    last = classify(repo)

    found = lineage(lakefs, repo, "cat.jpg", "main")
    assert found.record["source_commit"] == last["source_commit"]
    assert len(found.history) == 3
    assert len({h.checksum for h in found.history}) == 3
    assert found.history[0].source_commit == last["source_commit"]


@pytest.mark.slow
def test_train_classifier_commits_a_model_that_relabels_everything(
    lakefs: LakeFS, repo: str, classify: Any, dask_address: str
) -> None:
    from clearlake.flows.train import train_classifier

    seed = unique_seed()
    images = {f"train/{i}.jpg": photo(seed + i, blur=3.0 * (i % 2)) for i in range(10)}
    labels = "path,label,source\n" + "".join(
        f"{p},{'soft' if i % 2 else 'sharp'},src{i // 2}\n" for i, p in enumerate(images))
    commit_images(lakefs, repo, {**images, "labels.csv": labels.encode()})
    first = classify(repo)
    assert first["counts"]["computed"] == 10

    trained = train_classifier(repo, "main", "labels.csv", dask_address=dask_address)
    assert trained["computed"] == 0  # every metric came from the store
    assert json.loads(lakefs.get_object(repo, "main", layout.MODEL_PATH))
    second = classify(repo)
    assert second["counts"]["relabelled"] == 10 and second["counts"]["computed"] == 0
    assert {r["model_id"] for r in records_on(lakefs, repo).values()} == {trained["model_id"]}


@pytest.mark.slow
def test_a_forged_marker_does_not_hide_a_commit(lakefs: LakeFS, repo: str, classify: Any) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"a.jpg": photo(seed)})
    first = classify(repo)
    metadata = dict(lakefs.get_commit(repo, first["results_commit"]).metadata)
    lakefs.upload_object(repo, "main", "b.jpg", photo(seed + 1))
    forged = {**metadata, "clearlake.source_commit": "f" * 64}  # signature no longer matches
    lakefs.commit(repo, "main", "sneaky", forged)
    second = classify(repo)
    assert second["status"] == "merged" and second["counts"]["computed"] == 1


@pytest.mark.slow
def test_two_processed_branches_merge_without_conflicts(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"shared/0.jpg": photo(seed)})
    classify(repo)
    for name, offset in (("left", 100), ("right", 200)):
        lakefs.create_branch(repo, name, "main")
        commit_images(lakefs, repo, {f"{name}/{i}.jpg": photo(seed + offset + i)
                                     for i in range(2)}, branch=name)
        assert classify(repo, name)["counts"]["computed"] == 2

    lakefs.merge(repo, "left", "main")
    lakefs.merge(repo, "right", "main")  # records and tables of both: no conflict
    merged = classify(repo)
    assert merged["counts"]["computed"] == 0  # everything already measured on the branches
    assert set(records_on(lakefs, repo)) == {"shared/0.jpg", "left/0.jpg", "left/1.jpg",
                                             "right/0.jpg", "right/1.jpg"}
    assert len(pipeline.read_table(lakefs, repo, "main", "main")) == 5


@pytest.mark.slow
def test_the_table_splits_into_parts_and_a_change_rewrites_only_its_own(
    lakefs: LakeFS, repo: str, classify: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clearlake.table, "PART_ROWS", 4)
    seed = unique_seed()
    commit_images(lakefs, repo, {f"images/{i:02d}.jpg": photo(seed + i) for i in range(12)})
    classify(repo)
    table = pipeline.stored_table(lakefs, repo, "main", "main")
    assert len(table.parts) >= 3 and table.legacy is None
    assert all(len(table_records(data)) <= 4 for data in table.read(lakefs, table.parts).values())
    assert len(pipeline.read_table(lakefs, repo, "main", "main")) == 12

    commit_images(lakefs, repo, {"images/03.jpg": photo(seed + 100)}, message="change one")
    classify(repo)
    after = pipeline.stored_table(lakefs, repo, "main", "main")
    rewritten = {bits for bits, o in after.parts.items()
                 if bits not in table.parts or o.checksum != table.parts[bits].checksum}
    assert rewritten == {clearlake.table.part_of("images/03.jpg", table.parts)}

    # A new branch's first table starts from its parent's parts, all of them.
    lakefs.create_branch(repo, "feature", "main")
    commit_images(lakefs, repo, {"images/new.jpg": photo(seed + 200)}, branch="feature")
    classify(repo, "feature")
    feature = pipeline.stored_table(lakefs, repo, "feature", "feature")
    assert len(feature.parts) >= len(after.parts)
    assert len(pipeline.read_table(lakefs, repo, "feature", "feature")) == 13


@pytest.mark.slow
def test_a_table_in_one_object_is_rewritten_in_parts_by_the_next_run(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {f"images/{i}.jpg": photo(seed + i) for i in range(3)})
    classify(repo)
    records = pipeline.read_table(lakefs, repo, "main", "main")
    # As layout 2 left it: the whole table in one object, no parts.
    table = pipeline.stored_table(lakefs, repo, "main", "main")
    lakefs.delete_objects(repo, "main", [o.path for o in table.objects()])
    lakefs.upload_object(repo, "main", layout.legacy_table_path("main"),
                         updated_table(None, records, []))
    lakefs.commit(repo, "main", "a table as clearlake wrote it before parts")
    assert pipeline.read_table(lakefs, repo, "main", "main") == records  # read as it is

    commit_images(lakefs, repo, {"images/0.jpg": photo(seed + 100)}, message="change one")
    assert classify(repo)["counts"]["computed"] == 1
    table = pipeline.stored_table(lakefs, repo, "main", "main")
    assert table.legacy is None and set(table.parts) == {""}
    assert lakefs.get_object_or_none(repo, "main", layout.legacy_table_path("main")) is None
    assert [r["path"] for r in pipeline.read_table(lakefs, repo, "main", "main")] == [
        r["path"] for r in records]


def test_local_cluster_workers_start_with_the_malloc_environment() -> None:
    from clearlake.flows.classify import local_cluster

    with (local_cluster(n_workers=1, threads_per_worker=1, processes=True,
                        dashboard_address=None) as cluster,
          Client(cluster, set_as_default=False) as client):
        seen = client.run(lambda: {k: os.environ.get(k) for k in DASK_WORKER_MALLOC_ENV})
    assert list(seen.values()) == [DASK_WORKER_MALLOC_ENV]  # not Dask's MALLOC_TRIM_THRESHOLD_


def _record(path: str, label: str, probabilities: dict[str, float]) -> dict[str, Any]:
    return {"path": path, "label": label, "outcome": "ok", "reason": "",
            "probabilities": probabilities, "metrics": {"blur": 1.0}, "sha256": path * 2,
            "size": 10, "width": 4, "height": 3, "model_id": "m", "source_commit": "c",
            "run_id": "r", "origin": "computed", "computed_at": {"path": path}}


def test_the_table_update_replaces_removes_adds_and_keeps_other_rows_intact() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [_record(p, "good", {"good": 0.9}) for p in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    base_table = updated_table(None, base, [])
    new = [_record("b.jpg", "soft", {"soft": 0.8}), _record("aa.jpg", "soft", {"soft": 0.7})]

    updated = updated_table(base_table, new, ["c.jpg"])
    table = pq.read_table(pa.BufferReader(updated))
    assert table.column("path").to_pylist() == ["a.jpg", "aa.jpg", "b.jpg", "d.jpg"]
    assert table_records(updated) == [base[0], new[1], new[0], base[3]]
    # A class only the new records have: a column that is null for the kept rows.
    assert table.column("p_soft").to_pylist() == [None, 0.7, 0.8, None]
    assert table.column("p_good").to_pylist() == [0.9, None, None, 0.9]


def test_a_table_that_began_empty_reads_what_a_person_queries_first() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clearlake.provenance import sign_record

    # A branch's first run (the action files' commit) writes a table without images.
    empty = updated_table(None, [], [])
    signed = sign_record(_record("a.jpg", "good", {"good": 0.9}), b"k" * 32)
    updated = updated_table(empty, [signed], [])
    names = pq.read_table(pa.BufferReader(updated)).column_names
    assert names[:6] == ["path", "label", "outcome", "reason", "p_good", "blur"]
    assert names[-2:] == ["computed_at", "signature"]
    assert "record" not in names  # no row carries its whole record as JSON any more


def test_signed_records_read_back_from_the_table_columns_still_verify() -> None:
    from clearlake.provenance import sign_record, verified_record

    key = b"k" * 32
    ok = sign_record(_record("a.jpg", "good", {"good": 0.9, "blurry": 0.1}), key)
    failed = sign_record({**_record("b.jpg", "good", {}), "outcome": "corrupt",
                          "reason": "truncated", "label": None, "probabilities": None,
                          "metrics": None}, key)
    # A metric whose name a record field already has gets a column of its own.
    clash = sign_record({**_record("c.jpg", "good", {"good": 0.5}),
                         "metrics": {"size": 3.0}}, key)
    table = updated_table(None, [ok, failed, clash], [])

    read = table_records(table, key=key)
    assert [r["path"] for r in read] == ["a.jpg", "b.jpg", "c.jpg"]
    assert read[0] == ok and read[2]["metrics"] == {"size": 3.0} and read[2]["size"] == 10
    assert read[1]["metrics"] is None and read[1]["label"] is None
    assert all(verified_record(r, key) is not None for r in read)
    # One changed value in the table and its row is no longer clearlake's.
    tampered = updated_table(table, [{**ok, "label": "blurry"}], [])
    assert [r["path"] for r in table_records(tampered, key=key)] == ["b.jpg", "c.jpg"]


def test_a_layout_1_table_is_read_and_rewritten_in_the_flat_layout() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clearlake.provenance import sign_record

    key = b"k" * 32
    old = [sign_record(_record(p, "good", {"good": 0.9}), key) for p in ("a.jpg", "b.jpg")]
    sink = pa.BufferOutputStream()  # what clearlake wrote before layout 2
    pq.write_table(pa.table({"path": [r["path"] for r in old],
                             "record": [json.dumps(r, sort_keys=True) for r in old]}), sink)
    layout_1 = sink.getvalue().to_pybytes()
    assert table_records(layout_1, key=key) == old

    new = sign_record(_record("c.jpg", "blurry", {"good": 0.2}), key)
    updated = updated_table(layout_1, [new], ["a.jpg"])
    assert "record" not in pq.read_schema(pa.BufferReader(updated)).names
    assert table_records(updated, key=key) == [old[1], new]


def test_records_signed_before_empty_values_were_left_out_still_verify() -> None:
    from clearlake import provenance

    key = b"k" * 32
    failed = {**_record("b.jpg", "good", {}), "outcome": "corrupt", "label": None,
              "probabilities": None, "metrics": None}
    legacy = {**failed, "signature": provenance._record_digest(key, failed, legacy=True)}
    assert provenance.verified_record(legacy, key) == legacy
    assert provenance.verified_record({**legacy, "reason": "x"}, key) is None


def test_the_table_update_streams_group_by_group_and_stays_sorted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(clearlake.table, "GROUP_ROWS", 3)
    base = [_record(f"{i:02d}.jpg", "good", {"good": 0.9}) for i in range(0, 20, 2)]
    table = updated_table(None, base, [])
    # New rows before, between and after the old groups; one replaced, one removed.
    new = [_record(p, "soft", {"soft": 0.5}) for p in ("00.jpg", "05.jpg", "07.jpg", "31.jpg")]
    updated = updated_table(table, new, ["10.jpg"])

    paths = [r["path"] for r in table_records(updated)]
    expected = sorted({r["path"] for r in base + new} - {"10.jpg"})
    assert paths == expected
    groups = pq.ParquetFile(pa.BufferReader(updated)).metadata
    assert max(groups.row_group(i).num_rows for i in range(groups.num_row_groups)) == 3


def test_batches_are_large_then_shrink_so_the_workers_finish_together() -> None:
    datums = [pipeline.Datum(f"{i}.jpg", "c", 1) for i in range(1000)]
    sizes = [len(b) for b in pipeline.batches(datums, 256, workers=2)]
    assert [d for b in pipeline.batches(datums, 256, workers=2) for d in b] == datums
    assert sizes[0] == 250 and max(sizes) <= 256  # a quarter of the work: one of 2 × 2 shares
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-4:] == [59, 59, 59, 59]  # the last round: two equal shares per worker
    assert len(pipeline.batches(datums, 256, workers=8)) > len(sizes)


@pytest.mark.parametrize(("images", "workers", "expected"), [
    (200, 2, [50, 50, 50, 50]),  # not 64, 64, 64, 8: one worker would do 128 of 200
    (8, 2, [4, 4]),  # a small commit still keeps both workers busy
    (1, 2, [1]),
    (100, 1, [50, 50]),
])
def test_a_small_run_is_split_in_equal_shares(
    images: int, workers: int, expected: list[int]
) -> None:
    datums = [pipeline.Datum(f"{i}.jpg", "c", 1) for i in range(images)]
    assert [len(b) for b in pipeline.batches(datums, 256, workers)] == expected
