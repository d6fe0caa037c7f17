"""The incremental pipeline over lakeFS commits, free of Prefect so it can be read and tested.

A run of a branch, in four steps that `flows/classify.py` orchestrates:

1. `plan` finds the source commit the branch's latest (signed) results cover, and
   asks lakeFS for the two-dot diff between it and the commit to process, restricted
   to the input paths. Only added and changed images are measured; results of
   removed ones are deleted. The first run of a branch takes everything.
2. `measure_batch` (on a Dask worker) reuses stored metrics by content hash, reads
   from lakeFS only what the metrics store has never seen, and measures it.
3. `label` classifies from metrics alone (no decoding), in the flow's process, batch
   by batch as the batches finish; each batch's new store entries (`store_documents`)
   and records (`record_files`) are uploaded right away, while later batches are
   still being measured, to temporary branches of the store and of the branch.
4. The store's entries are committed and merged, then `write_back` adds deletions
   and the branch's updated table, and commits and merges the results with a
   signed marker: one atomic change that never sweeps up anyone's work.

Results live under `_clearlake/` on the branch itself:

    _clearlake/records/<image path>.json   one record per image (see `record_path`)
    _clearlake/tables/<branch>.parquet     every record of the branch, one table

A record per image makes an update cost O(changed images) and lets two processed
branches merge without conflicts unless the same image changed on both. The table
(one object, for DuckDB in the lakeFS web UI) is named after its branch for the
same reason: merging branch A into B brings `tables/A.parquet` along, and B's next
run rewrites `tables/B.parquet`.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import io
import itertools
import json
import os
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from clearlake import __version__
from clearlake.errors import LakeFSError, NotFoundError, PermissionDeniedError
from clearlake.metrics_store import MetricsStore, StoredAnalysis, documents_for
from clearlake.provenance import (
    ResultsMarker,
    latest_results,
    sign_record,
    signing_key,
    verified_marker,
    verified_record,
)
from clearlake.quality.analyse import ANALYSIS_VERSION, analyse
from clearlake.quality.classifier import Model
from clearlake.quality.score import IMAGE_EXTENSIONS
from clearlake.quality.types import Outcome
from clearlake.store import LakeFS, ObjectInfo
from clearlake.transaction import Transaction

if TYPE_CHECKING:
    import pyarrow as pa

RESULTS_ROOT = "_clearlake/"
RECORDS_PREFIX = "_clearlake/records/"
# lakeFS refuses longer keys (v1.84.0: pkg/catalog/validate.go MaxPathLength, in bytes).
LAKEFS_MAX_KEY_BYTES = 1024
HASHED_RECORDS_PREFIX = f"{RECORDS_PREFIX}%23sha256/"  # records of paths too long to spell
TABLES_PREFIX = "_clearlake/tables/"
MODEL_PATH = "_clearlake/model/model.json"
NEVER_INPUTS = (RESULTS_ROOT, "_lakefs_actions/")
DEFAULT_BATCH_SIZE = 256  # chosen by bench.pipeline (bench/README.md)
TABLE_GROUP_ROWS = 1024  # rows per Parquet row group: the most a table update decodes at once
PACKAGED_MODEL = "packaged"
READ_CHUNK_IMAGES = 64  # images whose SHA-256s are looked up in the store together
READ_CHUNK_BYTES = 64 << 20  # image bytes a measuring batch reads ahead, at most


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """Which paths of a repository are images to process (like a Pachyderm input glob).

    Attributes:
        prefix: only paths under this folder.
        glob: fnmatch pattern matched against the path below `prefix`; None means any
            file with an image extension. `_clearlake/` and `_lakefs_actions/` never match.
    """

    prefix: str = ""
    glob: str | None = None

    def matches(self, path: str) -> bool:
        """True when `path` is an input image."""
        if path.startswith(NEVER_INPUTS) or not path.startswith(self.prefix):
            return False
        if self.glob is None:
            return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
        return fnmatch.fnmatchcase(path[len(self.prefix) :], self.glob)


@dataclass(frozen=True)
class Datum:
    """One image to measure: where it is, and lakeFS's checksum and size for it."""

    path: str
    checksum: str
    size: int


# -- 1. plan ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run of one branch has to do.

    Attributes:
        repository: the repository.
        branch: the branch.
        source_commit: the commit whose images this run covers.
        previous: the marker of the branch's latest results, None on a first run.
        to_measure: added and changed images.
        removed: paths of removed images (their records are deleted).
        relabel_all: the model differs from the one that labelled the latest results,
            so every existing record is relabelled from its stored metrics.
        up_to_date: the source commit is already covered; the run does nothing.
    """

    repository: str
    branch: str
    source_commit: str
    previous: ResultsMarker | None
    to_measure: list[Datum] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabel_all: bool = False
    up_to_date: bool = False


def source_of(lakefs: LakeFS, repository: str, ref: str, key: bytes) -> str:
    """The commit a run of `ref` covers: `ref`, stepping back over clearlake's own merges.

    A results merge changes only `_clearlake/`; its first parent is what the branch
    held before it, so processing the merge means processing that parent. Only a
    commit clearlake made counts (`provenance.verified_marker`: a validly signed marker
    on a commit that changes nothing outside `_clearlake/`), so metadata copied onto a
    user's commit does not make it skippable.
    """
    commit = lakefs.get_commit(repository, ref)
    while commit.parents and verified_marker(lakefs, repository, commit, key) is not None:
        commit = lakefs.get_commit(repository, commit.parents[0])
    return commit.id


def is_covered(lakefs: LakeFS, repository: str, branch: str, key: bytes) -> bool:
    """True when the branch's latest results cover its head (nothing for a run to do)."""
    latest = latest_results(lakefs, repository, branch, key)
    if latest is None:
        return False
    source = source_of(lakefs, repository, branch, key)
    return lakefs.is_ancestor(repository, source, latest[1].source_commit)


def plan(
    lakefs: LakeFS,
    repository: str,
    branch: str,
    *,
    commit: str | None,
    inputs: Inputs,
    model_id: str,
    key: bytes,
) -> Plan:
    """Work out what a run must measure, relabel and remove; cost grows with the change.

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        branch: the branch whose results are updated.
        commit: the commit to process; None means the branch head as of now.
        inputs: which paths are images.
        model_id: the id of the model this run labels with.
        key: the signing key that validates earlier results markers.
    """
    source = source_of(lakefs, repository, commit or branch, key)
    latest = latest_results(lakefs, repository, branch, key)
    previous = latest[1] if latest else None
    result = Plan(repository, branch, source, previous)
    if previous is None:
        changes: Iterator[ObjectInfo] = (
            ObjectInfo(o.path, o.checksum, o.size, "added")
            for o in lakefs.list_objects(repository, source, inputs.prefix)
        )
    else:
        result.relabel_all = previous.model_id != model_id
        if lakefs.is_ancestor(repository, source, previous.source_commit):
            result.up_to_date = not result.relabel_all
            return result
        if previous.analysis_version != ANALYSIS_VERSION:
            # Metrics of another version are not comparable: measure everything again
            # (the store still holds any bytes measured under this version elsewhere),
            # and drop the records of images removed since.
            removed = (c for c in input_changes(lakefs, repository, previous.source_commit,
                                                source, inputs) if c.change == "removed")
            current = (
                ObjectInfo(o.path, o.checksum, o.size, "added")
                for o in lakefs.list_objects(repository, source, inputs.prefix)
            )
            changes = itertools.chain(removed, current)
        else:
            changes = input_changes(lakefs, repository, previous.source_commit, source, inputs)
    for change in changes:
        if not inputs.matches(change.path):
            continue
        if change.change == "removed":
            result.removed.append(change.path)
        else:
            result.to_measure.append(Datum(change.path, change.checksum, change.size))
    if previous is not None:
        result.to_measure += _retries(lakefs, repository, source, previous.retry, result)
    return result


def _retries(
    lakefs: LakeFS, repository: str, source: str, paths: Sequence[str], planned: Plan
) -> list[Datum]:
    """Images the previous run failed to measure, unless changed or removed since."""
    seen = {d.path for d in planned.to_measure} | set(planned.removed)
    datums = []
    for path in paths:
        if path in seen:
            continue
        try:
            info = lakefs.stat_object(repository, source, path)
        except NotFoundError:
            continue
        datums.append(Datum(path, info.checksum, info.size))
    return datums


def input_changes(
    lakefs: LakeFS, repository: str, left: str, right: str, inputs: Inputs,
    *, three_dot: bool = False,
) -> Iterator[ObjectInfo]:
    """The two-dot diff under the inputs' prefix, never descending into clearlake's folders.

    Between two source commits the tree also differs by the results written in
    between (`_clearlake/records/…`, one per image of the last run); lakeFS's diff
    cannot exclude a folder, so the top level is diffed folder by folder instead.
    """
    if inputs.prefix:
        yield from lakefs.diff(repository, left, right, inputs.prefix, three_dot=three_dot)
        return
    for entry in lakefs.diff(repository, left, right, delimiter="/", three_dot=three_dot):
        if entry.change != "prefix":
            yield entry
        elif not entry.path.startswith(NEVER_INPUTS):
            yield from lakefs.diff(repository, left, right, entry.path, three_dot=three_dot)


def batches(items: Sequence[Datum], size: int, workers: int = 1) -> list[list[Datum]]:
    """Split datums into batches (a Prefect task each) of at most `size` images.

    Batches shrink towards the end, each to a 2 × `workers`-th of what is left but
    not below `size` // 4: large batches make Prefect's per-task overhead rare (about
    0.35 s of a worker per task), and small last ones let the workers finish
    together and leave few results to upload after the last batch.
    """
    smallest = max(1, size // 4)
    result = []
    start = 0
    while start < len(items):
        share = -(-(len(items) - start) // (2 * workers))  # ceiling division
        count = min(size, max(smallest, share))
        result.append(list(items[start : start + count]))
        start += count
    return result


# -- 2. measure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One image's metrics, and whether this run computed them or reused stored ones.

    Attributes:
        path: the image's path.
        checksum: lakeFS's checksum of the image.
        analysis: the analysis (metrics, outcome, where first computed).
        origin: 'computed' (decoded by this run) or 'reused' (from the store).
        learned_sha256: True when this run read the bytes and learned the SHA-256 for
            `checksum` (the store should remember the mapping).
    """

    path: str
    checksum: str
    analysis: StoredAnalysis
    origin: str
    learned_sha256: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a Dask task returns)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measured:
        """Inverse of `to_dict`."""
        return cls(**{**data, "analysis": StoredAnalysis(**data["analysis"])})


def measure_batch(
    lakefs: LakeFS,
    store: MetricsStore,
    repository: str,
    commit: str,
    datums: Sequence[Datum],
    run_id: str,
    io_threads: int = 4,
    *,
    presigned: bool = False,
) -> list[Measured]:
    """Measure a batch of images, reusing stored metrics wherever the bytes are known.

    The store is asked in bulk (a missing entry costs a request like a found one):
    first for the whole batch by lakeFS checksum, which spares reading every image
    whose bytes it knows; then the rest are read a chunk at a time, on `io_threads`
    threads while this thread measures the chunk before, and each chunk's SHA-256s
    are looked up together before anything is decoded.

    With `presigned` (a blockstore that presigns), the images' bytes come straight
    from the object store: lakeFS is asked for the batch's URLs in a few listing
    requests. A URL the store refuses (expired) is presigned once more; an image
    that still cannot be read is a 'failed' record, retried by the next run.
    """
    known = store.sha256s_for((d.checksum, d.size) for d in datums)
    stored = store.get_many(ANALYSIS_VERSION, set(known.values()))
    results = []
    to_read = []
    for datum in datums:
        sha256 = known.get((datum.checksum, datum.size))
        if sha256 in stored:
            results.append(Measured(datum.path, datum.checksum, stored[sha256], "reused", False))
        else:
            to_read.append(datum)

    urls = (lakefs.presigned_urls(repository, commit, [d.path for d in to_read])
            if presigned and to_read else {})

    def read(datum: Datum) -> tuple[Datum, bytes | str, str]:
        """The datum, its bytes and their SHA-256; or why a presigned read failed, and ''."""
        if not presigned:
            data = lakefs.get_object(repository, commit, datum.path)
        else:
            try:
                data = _read_presigned(lakefs, repository, commit, datum.path,
                                       urls.get(datum.path))
            except LakeFSError as error:
                return datum, f"could not read the image from the object store: {error}", ""
        return datum, data, hashlib.sha256(data).hexdigest()

    chunks = _read_chunks(to_read)
    with ThreadPoolExecutor(max_workers=io_threads) as pool:
        reading = [pool.submit(read, datum) for datum in next(chunks, [])]
        while reading:
            chunk = [future.result() for future in reading]
            reading = [pool.submit(read, datum) for datum in next(chunks, [])]
            stored.update(store.get_many(ANALYSIS_VERSION,
                                         {sha256 for _, _, sha256 in chunk if sha256}
                                         - stored.keys()))
            for datum, data, sha256 in chunk:
                if isinstance(data, str):
                    results += failed_batch([datum], data, run_id, commit)
                    continue
                if sha256 in stored:  # measured before, or earlier in this batch (a copy)
                    results.append(Measured(datum.path, datum.checksum, stored[sha256], "reused",
                                            True))
                    continue
                analysis = analyse(data, sha256=sha256)
                computed = StoredAnalysis(
                    sha256=analysis.sha256,
                    size=analysis.size,
                    outcome=str(analysis.outcome),
                    reason=analysis.reason,
                    width=analysis.width,
                    height=analysis.height,
                    metrics=analysis.metrics,
                    computed_at={"repository": repository, "commit": commit, "path": datum.path,
                                 "run_id": run_id},
                )
                results.append(Measured(datum.path, datum.checksum, computed, "computed", True))
                stored[sha256] = computed
    return results


def _read_presigned(
    lakefs: LakeFS, repository: str, commit: str, path: str, url: str | None
) -> bytes:
    """`path`'s bytes through `url`, or through a fresh URL if there is none or the
    object store refuses it (presigned URLs expire)."""
    if url is not None:
        try:
            return lakefs.read_presigned(url, repository, commit, path)
        except PermissionDeniedError:
            pass
    return lakefs.read_presigned(lakefs.presign(repository, commit, path), repository, commit,
                                 path)


def _read_chunks(datums: Sequence[Datum]) -> Iterator[list[Datum]]:
    """Consecutive datums, at most `READ_CHUNK_IMAGES` and `READ_CHUNK_BYTES` at a time (one
    image larger than that alone): a batch holds two chunks' bytes, the one being measured
    and the next being read."""
    chunk: list[Datum] = []
    size = 0
    for datum in datums:
        if chunk and (len(chunk) == READ_CHUNK_IMAGES or size + datum.size > READ_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(datum)
        size += datum.size
    if chunk:
        yield chunk


def failed_batch(datums: Sequence[Datum], reason: str, run_id: str, commit: str) -> list[Measured]:
    """Records for a batch that failed even after its retries: typed, with the reason."""
    return [
        Measured(
            d.path, d.checksum,
            StoredAnalysis("", d.size, str(Outcome.FAILED), reason, 0, 0, None,
                           {"commit": commit, "path": d.path, "run_id": run_id}),
            "failed", False,
        )
        for d in datums
    ]


def store_documents(measured: Sequence[Measured]) -> dict[str, bytes]:
    """The shared store's new documents: what was computed, and the SHA-256s learned."""
    computed = [m.analysis for m in measured if m.origin == "computed"]
    learned = {(m.checksum, m.analysis.size): m.analysis.sha256
               for m in measured if m.learned_sha256 and m.analysis.sha256}
    return documents_for(ANALYSIS_VERSION, computed, learned)


def remember(store: MetricsStore, measured: Sequence[Measured], origin: str) -> str | None:
    """Add what was computed, and the SHA-256s learned, to the shared store as one commit."""
    computed = sum(1 for m in measured if m.origin == "computed")
    return store.put_documents(store_documents(measured),
                               f"clearlake: {computed} analyses from {origin}")


# -- 3. label --------------------------------------------------------------------------------


def load_model(lakefs: LakeFS, repository: str, ref: str) -> tuple[Model, str]:
    """The model trained into the branch (`_clearlake/model/model.json`), else the packaged one.

    Returns:
        (model, the commit it was read from, or 'packaged').
    """
    try:
        data = lakefs.get_object(repository, ref, MODEL_PATH)
    except NotFoundError:
        return Model.load(None), PACKAGED_MODEL
    return Model.from_json(data.decode()), lakefs.get_commit(repository, ref).id


def _labelled_by(model: Model, prediction: Any) -> dict[str, Any]:
    """The fields of a record a model sets: its label and probabilities (None: no metrics)."""
    return {
        "label": prediction.label if prediction else None,
        "probabilities": dict(prediction.probabilities) if prediction else None,
        "model_id": model.id,
    }


def record(
    measured: Measured, model: Model, prediction: Any, source_commit: str, run_id: str,
    *, key: bytes | None = None,
) -> dict[str, Any]:
    """The per-image record written under `_clearlake/records/`, signed with `key`
    (default `signing_key()`) so readers can tell it from one a user wrote there."""
    analysis = measured.analysis
    return sign_record({
        "path": measured.path,
        "checksum": measured.checksum,
        "sha256": analysis.sha256,
        "size": analysis.size,
        "width": analysis.width,
        "height": analysis.height,
        "outcome": analysis.outcome,
        "reason": analysis.reason,
        "metrics": analysis.metrics,
        **_labelled_by(model, prediction),
        "analysis_version": ANALYSIS_VERSION,
        "source_commit": source_commit,
        "run_id": run_id,
        "origin": measured.origin,
        "computed_at": analysis.computed_at,
    }, key if key is not None else signing_key())


def label(
    measured: Sequence[Measured], model: Model, source_commit: str, run_id: str,
    *, key: bytes | None = None,
) -> list[dict[str, Any]]:
    """Classify measured images from their metrics (one model call) into signed records."""
    key = key if key is not None else signing_key()
    ok = [m for m in measured if m.analysis.outcome == "ok" and m.analysis.metrics]
    predictions = dict(zip((m.path for m in ok), model.predict([m.analysis.metrics for m in ok]),
                           strict=True))
    return [record(m, model, predictions.get(m.path), source_commit, run_id, key=key)
            for m in measured]


def relabel(
    records: Sequence[dict[str, Any]], model: Model, run_id: str, *, key: bytes | None = None
) -> list[dict[str, Any]]:
    """New labels for existing records from their stored metrics: nothing is decoded.

    Only records clearlake signed are relabelled (and signed again): relabelling a
    record someone else wrote would sign their metrics as clearlake's. The rest are
    left out; readers do not trust them either.
    """
    key = key if key is not None else signing_key()
    records = [r for r in records if verified_record(r, key) is not None]
    ok = [r for r in records if r["outcome"] == "ok" and r["metrics"]]
    predictions = model.predict([r["metrics"] for r in ok])
    by_path = {r["path"]: p for r, p in zip(ok, predictions, strict=True)}
    updated = []
    for r in records:
        prediction = by_path.get(r["path"])
        updated.append(sign_record({**r, **_labelled_by(model, prediction), "run_id": run_id},
                                   key))
    return updated


# -- 4. write back ---------------------------------------------------------------------------


def _percent(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))


def _unsafe_in_key(char: str) -> bool:
    """`%` (so the encoding reverses), `\\` (a Windows separator) and control characters."""
    code = ord(char)
    return char in "%\\" or code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


def record_path(image_path: str) -> str:
    """Where the record of `image_path` lives: `_clearlake/records/<encoded path>.json`.

    lakeFS keys are flat strings, but `lakectl fs download`, `lakectl local` or an S3
    sync write them to a disk, where `..` or a drive would leave `_clearlake/records/`.
    So the path is percent-encoded (UTF-8, upper-case hex) wherever it could lead out:
    `%` itself (so the encoding reverses), `\\`, control characters, a `:` second in a
    segment (`C:` is a drive to Windows, `1:` to Python's ntpath), a `/` that would
    leave an empty segment (leading, trailing, doubled), and segments of only dots and
    spaces (`.`, `..`, and what Windows trims to them). `image_path_of` reverses it.
    A path whose key would exceed lakeFS's 1,024 bytes has its record at
    `_clearlake/records/%23sha256/<SHA-256 of the path>.json` (its `path` field names it).

    Every other path keeps the key it had before keys were encoded, so the records
    already stored for them are found as before. A path with one of those characters
    or segments has a new key: a record written before stays under the old key, unread;
    `lineage` finds none until the image changes and a run writes one, and the gate
    takes its metrics from the metrics store instead.
    """
    parts = []
    for segment in image_path.split("/"):
        if segment and not segment.strip(". "):
            parts.append(_percent(segment))
            continue
        encoded = "".join(_percent(c) if _unsafe_in_key(c) else c for c in segment)
        if encoded[1:2] == ":":
            encoded = f"{encoded[0]}%3A{encoded[2:]}"
        parts.append(encoded)
    key = parts[0]
    for before, part in itertools.pairwise(parts):
        key += ("/" if before and part else "%2F") + part
    key = f"{RECORDS_PREFIX}{key}.json"
    if len(key.encode()) > LAKEFS_MAX_KEY_BYTES:
        # lakeFS refuses the key, and a run that cannot write a record fails, run after
        # run. Such a path's record is named by its SHA-256 instead, in a folder no
        # encoded path can name (`%` is always encoded, `#` never: `%23` cannot occur).
        return f"{HASHED_RECORDS_PREFIX}{hashlib.sha256(image_path.encode()).hexdigest()}.json"
    return key


def image_path_of(record_key: str) -> str:
    """The image path whose record lives at `record_key`: the inverse of `record_path`.

    Raises:
        ValueError: `record_key` is not a key `record_path` makes, or is the hashed key of
            a path too long to spell out (read the record's `path`).
    """
    if record_key.startswith(HASHED_RECORDS_PREFIX):
        raise ValueError(f"the record key {record_key!r} names its image by SHA-256: "
                         "read the record's 'path'")
    if not (record_key.startswith(RECORDS_PREFIX) and record_key.endswith(".json")):
        raise ValueError(f"not a record key: {record_key!r}")
    path = urllib.parse.unquote(record_key[len(RECORDS_PREFIX):-len(".json")], errors="strict")
    if record_path(path) != record_key:  # one key per path: refuse other spellings
        raise ValueError(f"not a record key: {record_key!r}")
    return path


def table_path(branch: str) -> str:
    """Where the table of `branch` lives."""
    return f"{TABLES_PREFIX}{branch}.parquet"


def load_table(lakefs: LakeFS, repository: str, ref: str, branch: str) -> bytes | None:
    """The table of `branch` at `ref`, as its Parquet bytes (None if it has none yet)."""
    try:
        return lakefs.get_object(repository, ref, table_path(branch))
    except NotFoundError:
        return None


def table_records(table: bytes | None, *, key: bytes | None = None) -> list[dict[str, Any]]:
    """The records a Parquet table holds (read back from its `record` column).

    Args:
        table: the table's Parquet bytes.
        key: the signing key: only the rows clearlake signed are returned (a table is a
            file under `_clearlake/` like any other: anyone can write one). None returns
            every row as stored, unchecked.
    """
    import pyarrow.parquet as pq

    if table is None:
        return []
    rows = pq.read_table(io.BytesIO(table), columns=["record"]).column("record")
    records = (json.loads(text) for text in rows.to_pylist())
    if key is None:
        return list(records)
    return [r for r in records if verified_record(r, key) is not None]


def read_table(
    lakefs: LakeFS, repository: str, ref: str, branch: str, *, key: bytes | None = None
) -> list[dict[str, Any]]:
    """The records in the table of `branch` at `ref` ([] if it has none yet); with `key`,
    only those clearlake signed (see `table_records`)."""
    return table_records(load_table(lakefs, repository, ref, branch), key=key)


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Records as a table: flat columns to query, plus each whole record as JSON.

    Columns: path, label, outcome, reason, p_<class>, every metric, sha256, size,
    width, height, model_id, source_commit, run_id, origin, and `record` (the JSON
    the table is read back from, so no column layout is ever guessed).
    """
    import pyarrow as pa

    classes = sorted({c for r in records for c in (r["probabilities"] or {})})
    metric_names = list(dict.fromkeys(n for r in records for n in (r["metrics"] or {})))
    columns: dict[str, pa.Array] = {
        "path": pa.array([r["path"] for r in records], pa.string()),
        "label": pa.array([r["label"] for r in records], pa.string()),
        "outcome": pa.array([r["outcome"] for r in records], pa.string()),
        "reason": pa.array([r["reason"] for r in records], pa.string()),
    }
    for c in classes:
        columns[f"p_{c}"] = pa.array(
            [(r["probabilities"] or {}).get(c) for r in records], pa.float64())
    for n in metric_names:
        columns[n] = pa.array([(r["metrics"] or {}).get(n) for r in records], pa.float64())
    for name, kind in (("sha256", pa.string()), ("size", pa.int64()), ("width", pa.int32()),
                       ("height", pa.int32()), ("model_id", pa.string()),
                       ("source_commit", pa.string()), ("run_id", pa.string()),
                       ("origin", pa.string())):
        columns[name] = pa.array([r[name] for r in records], kind)
    columns["record"] = pa.array([json.dumps(r, sort_keys=True) for r in records], pa.string())
    return pa.table(columns)


def updated_table(
    base: bytes | None, new_records: Sequence[dict[str, Any]], removed: Sequence[str]
) -> bytes:
    """The branch's table as Parquet: `base` with `new_records` in place of rows of the
    same path and the rows of `removed` paths dropped, sorted by path.

    Streamed one row group at a time: kept rows are copied column by column, never
    decoded into records, and the flow never holds more of the old table decoded
    than one group, so its memory does not grow with the repository. `base` is
    sorted by path, so each group is merged with the new rows that sort before its
    last path, and the rest follow at the end.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    new = records_table(new_records).sort_by("path")
    sink = io.BytesIO()
    if base is None:
        pq.write_table(new, sink, compression="zstd", row_group_size=TABLE_GROUP_ROWS)
        return sink.getvalue()
    old = pq.ParquetFile(io.BytesIO(base))
    # A new model or metric set brings columns the kept rows lack: those are null there.
    # The new rows' column order leads (a first, empty table has no metric columns), and
    # the long `record` JSON stays last, after every column a person reads.
    unified = pa.unify_schemas([new.schema, old.schema_arrow], promote_options="default")
    schema = pa.schema([unified.field(n) for n in unified.names if n != "record"]
                       + [unified.field("record")])
    replaced = pa.array([r["path"] for r in new_records] + list(removed), pa.string())
    new_paths = new.column("path").to_pylist()
    merged = 0  # rows of `new` written so far
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for group in old.iter_batches(batch_size=TABLE_GROUP_ROWS):
            if group.num_rows == 0:
                continue
            kept = pa.Table.from_batches([group])
            kept = kept.filter(pc.invert(pc.is_in(kept["path"], value_set=replaced)))
            until = bisect.bisect_right(new_paths, group.column("path")[-1].as_py())
            chunk = pa.concat_tables([_conform(kept, schema),
                                      _conform(new.slice(merged, until - merged), schema)])
            writer.write_table(chunk.sort_by("path"), row_group_size=TABLE_GROUP_ROWS)
            merged = until
        writer.write_table(_conform(new.slice(merged), schema), row_group_size=TABLE_GROUP_ROWS)
    return sink.getvalue()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order; those it lacks are all null."""
    import pyarrow as pa

    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.table(columns, schema=schema)


def record_files(records: Iterable[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of each record's own object under `_clearlake/records/`."""
    for r in records:
        yield record_path(r["path"]), json.dumps(r, sort_keys=True, indent=1).encode()


def write_back(
    tx: Transaction,
    branch: str,
    base: bytes | None,
    new_records: Sequence[dict[str, Any]],
    removed: Sequence[str],
    metadata: dict[str, str],
    message: str,
) -> str:
    """Finish a run's results as one signed merge: deletions and the updated table join
    the records already queued on `tx` (see `record_files`); return the merge commit.

    Args:
        tx: the run's open transaction on `branch`.
        branch: the branch.
        base: the branch's table before this run.
        new_records: every record this run wrote (they replace those of the same path).
        removed: image paths whose records are deleted.

    Raises:
        clearlake.transaction.MergePending: the branch stayed dirty; the committed
            temporary branch is kept for reconcile to merge.
    """
    tx.delete([record_path(p) for p in removed])
    tx.upload(table_path(branch), updated_table(base, new_records, removed))
    return tx.commit(message, metadata)


def tally(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts of records per label and per outcome."""
    return {
        "labels": dict(Counter(r["label"] for r in records if r["label"])),
        "outcomes": dict(Counter(r["outcome"] for r in records)),
    }


def worst_images(records: Sequence[dict[str, Any]], count: int = 10) -> list[dict[str, Any]]:
    """The images least likely to be good (lowest P(good)), worst first."""
    scored = [r for r in records if r["probabilities"]]
    scored.sort(key=lambda r: (r["probabilities"].get("good", 0.0), r["path"]))
    return scored[:count]


def marker_for(
    plan_: Plan,
    run_id: str,
    model: Model,
    model_commit: str,
    counts: dict[str, int],
    retry: list[str],
) -> ResultsMarker:
    """The signed provenance of this run's results commit."""
    return ResultsMarker(
        repository=plan_.repository,
        branch=plan_.branch,
        source_commit=plan_.source_commit,
        previous_source_commit=plan_.previous.source_commit if plan_.previous else "",
        run_id=run_id,
        model_id=model.id,
        model_commit=model_commit,
        analysis_version=ANALYSIS_VERSION,
        clearlake_version=__version__,
        counts=counts,
        retry=retry,
    )
