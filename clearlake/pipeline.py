"""The incremental pipeline over lakeFS commits, free of Prefect so it can be read and tested.

A run of a branch, in four steps that `flows/classify.py` orchestrates:

1. `make_plan` finds the source commit the branch's latest (signed) results cover, and
   asks lakeFS for the two-dot diff between it and the commit to process, restricted
   to the input paths. Only added and changed images are measured; results of
   removed ones are deleted. The first run of a branch takes everything.
2. `measure_batch` (on a Dask worker) reuses stored metrics by content hash and
   (name, version), reads from lakeFS only the images that lack one, and computes
   only the metrics they lack (see `clearlake.quality.registry`).
3. `label` classifies from metrics alone (no decoding), in the flow's process, batch
   by batch as the batches finish; each batch's new store entries (`store_documents`)
   and records (`record_files`) are uploaded right away, while later batches are
   still being measured, to temporary branches of the store and of the branch.
4. The store's entries are committed and merged, then `write_back` adds deletions
   and the branch's updated table, and commits and merges the results with a
   signed marker: one atomic change that never sweeps up anyone's work.

Results live under `_clearlake/` on the branch itself (`clearlake.layout`):

    _clearlake/records/<image path>.json      one record per image (see `record_path`)
    _clearlake/tables/<branch>/part*.parquet  every record of the branch, one table in parts

A record per image makes an update cost O(changed images) and lets two processed
branches merge without conflicts unless the same image changed on both. The table
is kept in parts by hash of the path, so an update rewrites only the parts it changes
(`clearlake.table`), and its folder is named after its branch for the same reason as
the records: merging branch A into B brings `tables/A/` along, and B's next run
rewrites parts of `tables/B/`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from clearlake import __version__
from clearlake.errors import LakeFSError, NotFoundError, PermissionDeniedError
from clearlake.lakefs import LakeFS, ObjectInfo
from clearlake.layout import (
    MODEL_PATH,
    NEVER_INPUTS,
    check_layout,
    legacy_table_path,
    record_path,
    table_folder,
)
from clearlake.metrics_store import (
    LEGACY_ANALYSES,
    ImageMetrics,
    MetricsStore,
    StoredAnalysis,
    documents_for,
)
from clearlake.provenance import (
    ResultsMarker,
    latest_results,
    sign_record,
    signing_key,
    verified_marker,
    verified_record,
)
from clearlake.quality.analyse import analyse, analysis_version
from clearlake.quality.classifier import Model, predict_each
from clearlake.quality.registry import Metric, MetricSet, available
from clearlake.quality.score import IMAGE_EXTENSIONS
from clearlake.quality.types import Outcome
from clearlake.table import part_bits, part_name, parts_touched, table_records, updated_parts
from clearlake.transaction import Transaction

DEFAULT_BATCH_SIZE = 256  # chosen by bench.pipeline (bench/README.md)
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
        new_metrics: metrics (name or version) the latest results do not hold: every
            image is looked at, and only those metrics are computed.
        up_to_date: the source commit is already covered; the run does nothing.
    """

    repository: str
    branch: str
    source_commit: str
    previous: ResultsMarker | None
    to_measure: list[Datum] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabel_all: bool = False
    new_metrics: list[str] = field(default_factory=list)
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


def caught_up(lakefs: LakeFS, repository: str, branch: str, commit: str) -> str:
    """The commit a run asked for `commit` should process: the branch's head when it has
    moved on from `commit` (a descendant holds every image `commit` has, as of now),
    else `commit`. One run then covers a burst of commits, and the runs queued behind
    it on the branch's lock find nothing left to do."""
    head = lakefs.head(repository, branch)
    if head != commit and lakefs.is_ancestor(repository, commit, head):
        return head
    return commit


def covering_results(
    lakefs: LakeFS, repository: str, branch: str, key: bytes
) -> tuple[str, ResultsMarker] | None:
    """The branch's latest results (commit id, marker) if they cover its head, else None."""
    latest = latest_results(lakefs, repository, branch, key)
    if latest is None:
        return None
    source = source_of(lakefs, repository, branch, key)
    return latest if lakefs.is_ancestor(repository, source, latest[1].source_commit) else None


def is_covered(lakefs: LakeFS, repository: str, branch: str, key: bytes) -> bool:
    """True when the branch's latest results cover its head and left no image to retry
    (nothing for a run to do)."""
    covering = covering_results(lakefs, repository, branch, key)
    return covering is not None and not covering[1].retry


#: `reconcile` retries a branch's failed images at its next pass after the first failure,
#: then waits doubling from RETRY_BACKOFF_S up to RETRY_BACKOFF_MAX_S: an image that fails
#: every time costs a run a day, not one every pass, and is never given up on. (The
#: branch's next run, for a commit, retries them whatever the wait.)
RETRY_BACKOFF_S = 180.0
RETRY_BACKOFF_MAX_S = 24 * 3600.0


def retry_wait_s(attempts: int) -> float:
    """How long after results that failed an image `attempts` runs in a row `reconcile`
    waits before measuring it again."""
    if attempts <= 1:
        return 0.0
    return min(RETRY_BACKOFF_S * 2 ** (attempts - 2), RETRY_BACKOFF_MAX_S)


def retry_due(marker: ResultsMarker, results_created: float, now: float) -> bool:
    """True when an image the results (made at `results_created`, epoch seconds) left to
    retry is due for another attempt at `now`."""
    return any(now >= results_created + retry_wait_s(marker.attempts.get(path, 1))
               for path in marker.retry)


def failed_attempts(previous: ResultsMarker | None, failed: Iterable[str]) -> dict[str, int]:
    """For each image a run failed to measure, how many runs in a row have failed it (the
    previous results' count, if they had left it to retry, plus this run)."""
    retried = set(previous.retry) if previous else set()
    earlier = previous.attempts if previous else {}
    return {path: (earlier.get(path, 1) if path in retried else 0) + 1 for path in failed}


def needs_run(lakefs: LakeFS, repository: str, branch: str, key: bytes,
              now: float | None = None) -> bool:
    """True when `reconcile` should run the branch: its latest results do not cover its
    head, or images they left to retry are due again (`retry_due`)."""
    covering = covering_results(lakefs, repository, branch, key)
    if covering is None:
        return True
    commit, marker = covering
    return bool(marker.retry) and retry_due(
        marker, lakefs.get_commit(repository, commit).creation_date,
        time.time() if now is None else now)


def make_plan(
    lakefs: LakeFS,
    repository: str,
    branch: str,
    *,
    commit: str | None,
    inputs: Inputs,
    model_id: str,
    key: bytes,
    metric_versions: dict[str, str] | None = None,
) -> Plan:
    """Work out what a run must measure, relabel and remove; cost grows with the change.

    A metric the latest results lack (added, or of another version: new code, a new
    scripts pin) makes every image of the branch an input: the store has the other
    metrics of each, so only the new ones are computed.

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        branch: the branch whose results are updated.
        commit: the commit to process; None means the branch head as of now.
        inputs: which paths are images.
        model_id: the id of the model this run labels with.
        key: the signing key that validates earlier results markers.
        metric_versions: {name: version} of the metrics this run records (default:
            `registry.available()`'s).
    """
    if metric_versions is None:
        metric_versions = available().versions
    source = source_of(lakefs, repository, commit or branch, key)
    latest = latest_results(lakefs, repository, branch, key)
    previous = latest[1] if latest else None
    if previous is not None:
        check_layout(previous.layout, f"the results of {repository}/{branch}")
    plan = Plan(repository, branch, source, previous)
    if previous is None:
        changes: Iterator[ObjectInfo] = (
            ObjectInfo(o.path, o.checksum, o.size, "added")
            for o in lakefs.list_objects(repository, source, inputs.prefix)
        )
    else:
        plan.relabel_all = previous.model_id != model_id
        held = previous.metric_versions or LEGACY_ANALYSES.get(previous.analysis_version, {})
        plan.new_metrics = sorted(n for n, v in metric_versions.items() if held.get(n) != v)
        if lakefs.is_ancestor(repository, source, previous.source_commit):
            if not plan.new_metrics and not previous.retry:
                plan.up_to_date = not plan.relabel_all
                return plan
            # New metrics, or images the last run failed to measure: add them to what is
            # covered.
            source = plan.source_commit = previous.source_commit
        if plan.new_metrics:
            # Every image needs the new metrics (the store has the others, and copies of
            # the bytes measured elsewhere): look at all of them, and drop the records of
            # images removed since.
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
            plan.removed.append(change.path)
        else:
            plan.to_measure.append(Datum(change.path, change.checksum, change.size))
    if previous is not None:
        plan.to_measure += _retries(lakefs, repository, source, previous.retry, plan)
    return plan


def _retries(
    lakefs: LakeFS, repository: str, source: str, paths: Sequence[str], plan: Plan
) -> list[Datum]:
    """Images the previous run failed to measure, unless changed or removed since."""
    seen = {d.path for d in plan.to_measure} | set(plan.removed)
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
    0.35 s of a worker per task), and small last ones leave few results to upload
    after the last batch. What is left for the last round is split in equal shares,
    one or two per worker, so the workers finish together (a 200-image commit on two
    workers is 4 × 50, not 64, 64, 64, 8).
    """
    smallest = max(1, size // 4)
    result = []
    start = 0
    while start < len(items):
        remaining = len(items) - start
        if remaining <= 2 * workers * smallest:
            two_each = remaining >= 2 * workers * max(1, smallest // 2)
            shares = min(remaining, 2 * workers if two_each else workers)
            for share in range(shares):
                count = remaining // shares + (1 if share < remaining % shares else 0)
                result.append(list(items[start : start + count]))
                start += count
            break
        share = -(-remaining // (2 * workers))  # ceiling division
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
        analysis: the analysis (metrics of the run's set, outcome, where first computed).
        origin: 'computed' (this run decoded the image), 'reused' (every metric came
            from the store) or 'failed' (the bytes could not be read).
        learned_sha256: True when this run read the bytes and learned the SHA-256 for
            `checksum` (the store should remember the mapping).
        computed: the metrics this run computed for the image (empty when reused; every
            one for a new image; only the new or changed ones for an image measured before).
        document: the image's updated store document (as `ImageMetrics` fields) when this
            run added to it, else None.
    """

    path: str
    checksum: str
    analysis: StoredAnalysis
    origin: str
    learned_sha256: bool
    computed: tuple[str, ...] = ()
    document: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a Dask task returns)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measured:
        """Inverse of `to_dict`."""
        return cls(**{**data, "analysis": StoredAnalysis(**data["analysis"]),
                      "computed": tuple(data.get("computed", ()))})


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
    metric_set: MetricSet | None = None,
) -> list[Measured]:
    """Measure a batch of images, computing only the metrics the store lacks for their bytes.

    The store is asked in bulk (a missing entry costs a request like a found one):
    first for the whole batch by lakeFS checksum, then for the documents of the
    SHA-256s it knows. An image whose document holds every (metric, version) of
    `metric_set` is not read at all. The rest are read a chunk at a time, on
    `io_threads` threads while this thread measures the chunk before, and each
    chunk's SHA-256s are looked up together before anything is decoded. An image is
    decoded at most once, and only when at least one of its metrics is missing; then
    only the missing metrics are computed and merged into its document.

    With `presigned` (a blockstore that presigns), the images' bytes come straight
    from the object store: lakeFS is asked for the batch's URLs in a few listing
    requests. A URL the store refuses (expired) is presigned once more; an image
    that still cannot be read is a 'failed' record, retried by the next run.

    Args:
        metric_set: the metrics to have for every image (default: built-ins and
            installed entry points, `registry.available()`).
    """
    metric_set = metric_set if metric_set is not None else available()
    versions = metric_set.versions
    known = store.sha256s_for((d.checksum, d.size) for d in datums)
    stored = store.documents(set(known.values()))
    results = []
    to_read = []
    for datum in datums:
        sha256 = known.get((datum.checksum, datum.size))
        document = stored.get(sha256) if sha256 else None
        if document is not None and not _missing(document, metric_set):
            results.append(Measured(datum.path, datum.checksum, document.view(versions),
                                    "reused", False))
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
            stored.update(store.documents({sha256 for _, _, sha256 in chunk if sha256}
                                          - stored.keys()))
            for datum, data, sha256 in chunk:
                if isinstance(data, str):
                    results += failed_batch([datum], data, run_id, commit)
                    continue
                document = stored.get(sha256)
                missing = _missing(document, metric_set) if document else list(metric_set)
                if not missing:  # measured before, or earlier in this batch (a copy)
                    results.append(Measured(datum.path, datum.checksum, document.view(versions),
                                            "reused", True))
                    continue
                analysis = analyse(data, sha256=sha256, metric_set=metric_set, only=missing)
                if document is None:
                    document = ImageMetrics(
                        analysis.sha256, analysis.size, str(analysis.outcome), analysis.reason,
                        analysis.width, analysis.height,
                        computed_at={"repository": repository, "commit": commit,
                                     "path": datum.path, "run_id": run_id})
                document = document.merged(versions, analysis.metrics or {}, analysis.failures)
                stored[sha256] = document
                results.append(Measured(
                    datum.path, datum.checksum, document.view(versions), "computed", True,
                    tuple(m.name for m in missing if document.outcome == "ok"),
                    asdict(document)))
    return results


def _missing(document: ImageMetrics, metric_set: MetricSet) -> list[Metric]:
    """The metrics `document` lacks; none for an image that did not decode (it has none)."""
    return metric_set.missing(document.measured) if document.outcome == "ok" else []


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
    """The shared store's new objects: documents this run added to, and SHA-256s learned."""
    documents = [ImageMetrics(**m.document) for m in measured if m.document is not None]
    learned = {(m.checksum, m.analysis.size): m.analysis.sha256
               for m in measured if m.learned_sha256 and m.analysis.sha256}
    return documents_for(documents, learned)


def computations(measured: Iterable[Measured]) -> dict[str, int]:
    """How many images each metric was computed for, by name."""
    return dict(Counter(name for m in measured for name in m.computed))


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
    data = lakefs.get_object_or_none(repository, ref, MODEL_PATH)
    if data is None:
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
    *, key: bytes | None = None, version: str | None = None,
) -> dict[str, Any]:
    """The per-image record written under `_clearlake/records/`, signed with `key`
    (default `signing_key()`) so readers can tell it from one a user wrote there.

    An image that decoded but lacks a metric the model needs (the metric failed on it)
    has the outcome 'metric_failed', with the metric's failure as the reason.
    """
    analysis = measured.analysis
    outcome, reason = analysis.outcome, analysis.reason
    if outcome == "ok" and not _usable(analysis.metrics, model):
        outcome = str(Outcome.METRIC_FAILED)
        reason = "; ".join(analysis.failures.get(f, f"no value for metric {f!r}")
                           for f in model.features if f not in (analysis.metrics or {}))
    return sign_record({
        "path": measured.path,
        "checksum": measured.checksum,
        "sha256": analysis.sha256,
        "size": analysis.size,
        "width": analysis.width,
        "height": analysis.height,
        "outcome": outcome,
        "reason": reason,
        "metrics": analysis.metrics,
        "metric_failures": analysis.failures,
        **_labelled_by(model, prediction),
        "analysis_version": version or analysis_version(available()),
        "source_commit": source_commit,
        "run_id": run_id,
        "origin": measured.origin,
        "computed_at": analysis.computed_at,
    }, key if key is not None else signing_key())


def label(
    measured: Sequence[Measured], model: Model, source_commit: str, run_id: str,
    *, key: bytes | None = None, metric_set: MetricSet | None = None,
) -> list[dict[str, Any]]:
    """Classify measured images from their metrics (one model call) into signed records.

    Args:
        metric_set: the run's metrics (for the records' analysis version); default
            `registry.available()`.
    """
    key = key if key is not None else signing_key()
    version = analysis_version(metric_set if metric_set is not None else available())
    predictions = predict_each(model, {
        m.path: m.analysis.metrics for m in measured
        if m.analysis.outcome == "ok" and _usable(m.analysis.metrics, model)})
    return [record(m, model, predictions.get(m.path), source_commit, run_id, key=key,
                   version=version)
            for m in measured]


def _usable(metrics: dict[str, float] | None, model: Model) -> bool:
    """True when `metrics` has every metric `model` reads."""
    return bool(metrics) and all(f in metrics for f in model.features)


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
    by_path = predict_each(model, {r["path"]: r["metrics"] for r in records
                                  if r["outcome"] == "ok" and _usable(r["metrics"], model)})
    updated = []
    for r in records:
        prediction = by_path.get(r["path"])
        updated.append(sign_record({**r, **_labelled_by(model, prediction), "run_id": run_id},
                                   key))
    return updated


# -- 4. write back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTable:
    """A branch's table as stored at a ref: the objects of its parts (`clearlake.table`).

    Attributes:
        repository: the repository.
        ref: the commit the objects were listed at.
        branch: the branch whose table it is (a new branch starts from its parent's).
        parts: bits → the part's object.
        legacy: the one object a table written in layout 1 or 2 is (then no parts).
    """

    repository: str
    ref: str
    branch: str
    parts: dict[str, ObjectInfo]
    legacy: ObjectInfo | None = None

    @property
    def empty(self) -> bool:
        return not self.parts and self.legacy is None

    @property
    def bits(self) -> set[str]:
        """The parts' bits; a legacy table is the root, ``""``, holding every path."""
        return {""} if self.legacy is not None else set(self.parts)

    def objects(self) -> list[ObjectInfo]:
        """Every object the table is made of."""
        return [*self.parts.values(), *([self.legacy] if self.legacy else [])]

    def read(self, lakefs: LakeFS, bits: Iterable[str]) -> dict[str, bytes]:
        """The Parquet of the parts `bits` (those that exist); a legacy table is the root."""
        bits = set(bits)
        if self.legacy is not None:
            return ({"": lakefs.get_object(self.repository, self.ref, self.legacy.path)}
                    if "" in bits else {})
        wanted = {self.parts[b].path: b for b in bits if b in self.parts}
        found = lakefs.read_each(self.repository, self.ref, wanted)  # listed just now
        return {wanted[path]: data for path, data in found.items()}

    def read_all(self, lakefs: LakeFS) -> list[bytes]:
        """The Parquet of every part (or of the legacy table)."""
        return list(self.read(lakefs, self.bits).values())

    def records(self, lakefs: LakeFS, *, key: bytes | None = None) -> list[dict[str, Any]]:
        """Every record of the table, by path; with `key`, only those clearlake signed."""
        return sorted((r for data in self.read_all(lakefs) for r in table_records(data, key=key)),
                      key=lambda r: r["path"])


def stored_table(lakefs: LakeFS, repository: str, ref: str, branch: str) -> StoredTable:
    """The objects of `branch`'s table at `ref` (none when it has no table yet)."""
    folder = table_folder(branch)
    parts = {bits: info for info in lakefs.list_objects(repository, ref, folder)
             if (bits := part_bits(info.path.removeprefix(folder))) is not None}
    legacy = None
    if not parts:
        with contextlib.suppress(NotFoundError):
            legacy = lakefs.stat_object(repository, ref, legacy_table_path(branch))
    return StoredTable(repository, ref, branch, parts, legacy)


def read_table(
    lakefs: LakeFS, repository: str, ref: str, branch: str, *, key: bytes | None = None
) -> list[dict[str, Any]]:
    """The records in the table of `branch` at `ref` ([] if it has none yet), by path; with
    `key`, only those clearlake signed (see `table_records`)."""
    return stored_table(lakefs, repository, ref, branch).records(lakefs, key=key)


def record_files(records: Iterable[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of each record's own object under `_clearlake/records/`."""
    for r in records:
        yield record_path(r["path"]), json.dumps(r, sort_keys=True, indent=1).encode()


def write_back(
    lakefs: LakeFS,
    tx: Transaction,
    branch: str,
    table: StoredTable,
    new_records: Sequence[dict[str, Any]],
    removed: Sequence[str],
    metadata: dict[str, str],
    message: str,
) -> str:
    """Finish a run's results as one signed merge: deletions and the table's changed parts
    join the records already queued on `tx` (see `record_files`); return the merge commit.

    Only the parts holding a changed path are read and written again. A table in the
    one-object layout of before is rewritten in parts once, and its object deleted; a
    branch's first table, started from its parent's, copies the parts it does not change.

    Args:
        lakefs: the lakeFS client (to read the parts that change).
        tx: the run's open transaction on `branch`.
        branch: the branch.
        table: the branch's table before this run (or its parent's, for a new branch).
        new_records: every record this run wrote (they replace those of the same path).
        removed: image paths whose records are deleted.

    Raises:
        clearlake.transaction.MergePending: the branch stayed dirty; the committed
            temporary branch is kept for reconcile to merge.
    """
    parts = table.bits
    touched = parts_touched(parts, [*(r["path"] for r in new_records), *removed])
    written = updated_parts(parts, table.read(lakefs, touched), new_records, removed)
    folder = table_folder(branch)
    inherited = table.branch != branch
    if inherited:  # the parent's parts this run leaves alone, copied to the branch
        written = {**table.read(lakefs, parts - set(written)), **written}
    tx.delete([*(record_path(p) for p in removed),
               *([] if inherited or table.legacy is None else [table.legacy.path]),
               *(folder + part_name(bits) for bits, data in written.items()
                 if data is None and not inherited)])
    tx.upload_in_background((folder + part_name(bits), data)
                            for bits, data in written.items() if data is not None)
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
    plan: Plan,
    run_id: str,
    model: Model,
    model_commit: str,
    counts: dict[str, int],
    retry: list[str],
    metric_set: MetricSet | None = None,
    scripts: str = "",
) -> ResultsMarker:
    """The signed provenance of this run's results commit: which metrics (names, versions,
    the scripts commit they were loaded from) its records hold, among the rest."""
    metric_set = metric_set if metric_set is not None else available()
    return ResultsMarker(
        repository=plan.repository,
        branch=plan.branch,
        source_commit=plan.source_commit,
        previous_source_commit=plan.previous.source_commit if plan.previous else "",
        run_id=run_id,
        model_id=model.id,
        model_commit=model_commit,
        analysis_version=analysis_version(metric_set),
        clearlake_version=__version__,
        counts=counts,
        retry=retry,
        attempts=failed_attempts(plan.previous, retry),
        metric_versions=metric_set.versions,
        scripts=scripts,
    )
