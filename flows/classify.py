"""The `classify-commit` flow: measure and label what a lakeFS commit changed.

Thin orchestration of `clearlake.pipeline`: plan in this process, measure batches
of images on a Dask cluster (chosen per run), label and upload each batch's results
as it finishes, and apply them to the branch as one signed merge.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from clearlake import pipeline, report, scripts
from clearlake.config import DASK_WORKER_MALLOC_ENV, dask_quiet_settings
from clearlake.errors import (
    ClearlakeError,
    ConfigurationError,
    NotFoundError,
    UnavailableError,
)
from clearlake.lakefs import LakeFS
from clearlake.metrics_store import MetricsStore
from clearlake.provenance import signing_key
from clearlake.quality import registry
from clearlake.settings import settings
from clearlake.transaction import MergePending, Transaction, TransactionLost

if TYPE_CHECKING:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

T = TypeVar("T")
LOCK_LEASE_S = 60.0  # Prefect's minimum; renewed while the run lives, freed soon after it dies
BATCH_RETRIES = 2


def local_cluster(**cluster_kwargs: Any) -> LocalCluster:
    """A Dask LocalCluster set up as the stack's: its worker processes start with
    `DASK_WORKER_MALLOC_ENV`, and it keeps Dask's housekeeping to `DASK_QUIET_CONFIG`.

    Dask's nanny puts `distributed.nanny.pre-spawn-environ` into a worker's
    environment before starting it, the only time glibc reads it; the settings in
    force while the cluster starts are those its scheduler and workers keep.
    """
    import dask
    from distributed import LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **DASK_WORKER_MALLOC_ENV}
    with dask.config.set({**dask_quiet_settings(),
                          "distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(**cluster_kwargs)


def resolve_dask_address(address: str | None, cluster_block: str | None) -> str | None:
    """The Dask scheduler a run uses: `address`, else the saved `DaskCluster` block named
    `cluster_block`, else `CLEARLAKE_DASK_ADDRESS`; None for a LocalCluster."""
    if address and cluster_block:
        raise ConfigurationError("give a Dask address or a DaskCluster block, not both")
    if cluster_block:
        from clearlake.blocks import DaskCluster

        try:
            return DaskCluster.load(cluster_block).address
        except ValueError as error:  # Prefect's "Unable to find block document named …"
            raise ConfigurationError(
                f"no DaskCluster block named {cluster_block!r}: save one first, e.g. "
                f"DaskCluster(address='tcp://host:8786').save({cluster_block!r})") from error
    return address or settings().dask_address


def dask_task_runner(address: str | None) -> DaskTaskRunner:
    """The Dask cluster at `address`, else a LocalCluster with one single-threaded worker
    process per core (measuring is CPU-bound)."""
    # Imported here: it pulls in distributed (seconds of start-up) which a run that
    # finds nothing to measure never needs.
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    cores = len(os.sched_getaffinity(0))
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={"n_workers": cores, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None},
    )


@functools.cache
def _one_thread_per_worker() -> None:
    """Dask runs one worker process per core: OpenCV's own threads would oversubscribe them."""
    from clearlake.quality.score import use_one_thread

    use_one_thread()


def dask_setup(worker: Any) -> None:
    """Ready a worker that preloads this module (`--preload clearlake.flows.classify`: the stack's
    workers, the benchmark's) before its first batch, which would pay for both.

    A process's first Prefect task loads every installed Prefect collection, and
    prefect-aws brings in boto3: seconds that would otherwise fall inside a run
    (bench.pipeline: flow start → first batch 4.2 → 1.5 s at 1,000 images).
    OpenCV is set to one thread.
    """
    from prefect.plugins import load_prefect_collections

    load_prefect_collections()
    _one_thread_per_worker()


@task(retries=BATCH_RETRIES, retry_delay_seconds=1, cache_policy=NO_CACHE)
def measure_batch(
    repository: str, commit: str, datums: list[dict[str, Any]], run_id: str,
    presigned: bool = False, metrics: list[dict[str, str]] | None = None,
    scripts_pin: str | None = None,
) -> list[dict[str, Any]]:
    """Measure one batch on a Dask worker, reading the bytes itself: from the object store
    through presigned URLs, or from lakeFS's object API.

    `metrics` (a `MetricSet.spec`) names the metrics and versions the flow planned
    with; the worker computes them with its own code, the installed entry points and
    the modules of `scripts_pin`, and refuses a version it does not have.
    """
    _one_thread_per_worker()
    lakefs = LakeFS()  # the worker's own credentials: none travel in task parameters
    measured = pipeline.measure_batch(
        lakefs, MetricsStore(lakefs), repository, commit,
        [pipeline.Datum(**d) for d in datums], run_id, presigned=presigned,
        metric_set=run_metrics(lakefs, metrics, scripts_pin),
    )
    return [m.to_dict() for m in measured]


def run_metrics(
    lakefs: LakeFS, spec: list[dict[str, str]] | None, scripts_pin: str | None
) -> registry.MetricSet:
    """This process's metrics for a run: those `spec` names (default: all available),
    from the built-ins, the installed entry points and the scripts at `scripts_pin`."""
    pinned = scripts.load(lakefs, scripts.ScriptsPin.parse(scripts_pin)) if scripts_pin else []
    available = registry.available(pinned)
    return available if spec is None else registry.from_spec(spec, available)


def measure_on_dask(
    repository: str, commit: str, datums: list[pipeline.Datum], batch_size: int, run_id: str,
    address: str | None, *, presigned: bool = False,
    metric_set: registry.MetricSet | None = None, scripts_pin: str | None = None,
) -> Iterator[list[pipeline.Measured]]:
    """Map batches of datums over a Dask cluster, each a Prefect task run of its own; yield
    each batch's measurements as soon as it finishes, so the caller can write them meanwhile.

    Batches hold at most `batch_size` images and shrink towards the end to the
    cluster's size (see `pipeline.batches`). `address` is a scheduler's (see
    `resolve_dask_address`); None starts a LocalCluster for the run. With `presigned`,
    workers read images from the object store through presigned URLs. Workers compute
    the metrics of `metric_set` (default: what they have), loading `scripts_pin`'s.

    The batches go to the task runner directly rather than through a subflow: a
    subflow's parameters are stored by the Prefect server (512 KiB at most), and a
    task's are not. A batch that still fails after its retries gives typed 'failed'
    records for its images instead of failing the run.
    """
    from distributed import as_completed

    with dask_task_runner(address) as runner:
        # Worker threads that have joined so far (none yet: size batches as for one).
        workers = max(1, sum(runner.client.nthreads().values()))
        submitted = {}
        for batch in pipeline.batches(datums, batch_size, workers):
            future = runner.submit(measure_batch, parameters={
                "repository": repository, "commit": commit,
                "datums": [vars(d) for d in batch], "run_id": run_id, "presigned": presigned,
                "metrics": metric_set.spec() if metric_set is not None else None,
                "scripts_pin": scripts_pin})
            submitted[future.wrapped_future] = (batch, future)
        # Outcomes come from Dask itself: the Prefect server learns task states through
        # events, a moment later than the future completes.
        for dask_future in as_completed(submitted, loop=runner.client.loop):
            batch, future = submitted.pop(dask_future)
            error = dask_future.exception()
            state = dask_future.result() if error is None else None
            if state is not None and state.is_completed():
                yield [pipeline.Measured.from_dict(m) for m in future.result()]
            else:
                why = state.message if state is not None else f"{type(error).__name__}: {error}"
                reason = f"batch failed after {BATCH_RETRIES} retries: {why}"
                yield pipeline.failed_batch(batch, reason, run_id, commit)


def branch_lock(repository: str, branch: str) -> str:
    """The name of the concurrency limit that lets one run at a time write to a branch."""
    return f"clearlake-branch-{repository}-{branch}"


LOCK_RETRY_S = 120.0  # backoff slept in all while Prefect answers 5xx or not at all
MAX_LOCK_BACKOFF_S = 15.0


def prefect_was_unavailable(error: BaseException) -> bool:
    """True when `error` (or what caused it) is Prefect's server not answering, or answering
    with a server error (503 when overloaded): worth asking again, unlike a refusal."""
    import httpx

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, httpx.TransportError):
            return True
        if isinstance(seen, httpx.HTTPStatusError):  # Prefect's client raises a subclass
            status = seen.response.status_code
            return status >= 500 or status == 429
        seen = seen.__cause__ or seen.__context__
    return False


def patiently_with_prefect(action: Callable[[], T], what: str,
                           timeout_s: float = LOCK_RETRY_S) -> T:
    """`action()`, tried again with exponential backoff while Prefect is unavailable
    (`prefect_was_unavailable`), sleeping `timeout_s` at most in all.

    Only the sleeps count: an attempt may wait long on purpose (for a slot another run
    holds) before Prefect fails it, and that wait is not Prefect being away.
    """
    delay, slept = 1.0, 0.0
    while True:
        try:
            return action()
        except Exception as error:
            if not prefect_was_unavailable(error) or slept + delay > timeout_s:
                raise
            _logger().warning("%s: Prefect unavailable (%s); trying again in %.0f s",
                              what, error, delay)
            time.sleep(delay)
            slept += delay
            delay = min(delay * 2, MAX_LOCK_BACKOFF_S)


def _logger() -> Any:
    """The run's logger (its lines reach the Prefect UI), this module's outside a run."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@contextlib.contextmanager
def branch_lock_held(name: str) -> Iterator[None]:
    """Hold the one-slot concurrency limit `name` (created if missing) for the body.

    Prefect answering 503 or not at all while the slot is asked for (its server
    restarting or overloaded) is waited out, sleeping up to LOCK_RETRY_S in all, instead
    of failing the run; so is failing to release the slot once the body is done.
    """
    patiently_with_prefect(lambda: ensure_lock(name), f"creating the lock {name}")
    held = contextlib.ExitStack()
    patiently_with_prefect(
        lambda: held.enter_context(
            concurrency(name, occupy=1, strict=True, lease_duration=LOCK_LEASE_S)),
        f"acquiring the lock {name}")
    try:
        yield
    finally:
        try:
            held.close()
        except Exception as error:
            if not prefect_was_unavailable(error):
                raise
            # The run's work is done (or its own error is on its way): a lease that
            # cannot be released now expires by itself LOCK_LEASE_S after its last
            # renewal, and the server frees the slot.
            _logger().warning("could not release the lock %s, Prefect unavailable (%s): "
                              "it frees itself within %.0f s", name, error, LOCK_LEASE_S)


def ensure_lock(name: str) -> None:
    """Create a one-slot global concurrency limit unless it exists.

    A limit that does not exist limits nothing, so the flow creates it first and
    then acquires it with `strict=True`.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1))


@flow(name="classify-commit", log_prints=True)
def classify_commit(
    repository: str,
    branch: str,
    commit: str | None = None,
    prefix: str = "",
    glob: str | None = None,
    batch_size: int = pipeline.DEFAULT_BATCH_SIZE,
    dask_address: str | None = None,
    dask_cluster: str | None = None,
    merge_timeout_s: float = 60.0,
    catch_up: bool = False,
) -> dict[str, Any]:
    """Classify the images a commit added or changed on a branch, and commit the results.

    Args:
        repository: the lakeFS repository.
        branch: the branch whose results are updated.
        commit: the commit to process; default the branch head as of the start.
        prefix: only images under this folder.
        glob: fnmatch pattern below `prefix`; default any image extension.
        batch_size: most images per Dask task (batches shrink towards the end of a run).
        dask_address: an existing Dask scheduler; default `CLEARLAKE_DASK_ADDRESS`, else a
            LocalCluster sized to the machine.
        dask_cluster: instead of `dask_address`, the name of a saved `DaskCluster` block.
        merge_timeout_s: how long to retry the merge while the branch has uncommitted
            changes before leaving the results pending for `reconcile`.
        catch_up: with `commit`, process the branch's head instead if it has moved on
            from `commit` by the time this run holds the branch (`pipeline.caught_up`):
            a burst of commits is covered by a run or two, not one run each. Runs
            triggered by commits do this.

    Returns:
        A summary: status ('up_to_date', 'merged' or 'pending'), counts, commits. A run
        whose branch is deleted under it ends 'branch_deleted' (nothing to do); one whose
        temporary branch is deleted ends 'interrupted', and one that found lakeFS or its
        object store unavailable for minutes ends 'unavailable', each having applied
        nothing (the branch's next run, or reconcile, does the work). 'pending' results
        (the branch dirty, or the quality gate unreachable) are merged by reconcile.
    """
    address = resolve_dask_address(dask_address, dask_cluster)  # a bad one fails before the lock
    # Runs of one branch queue here: a run plans from what the previous one wrote.
    with branch_lock_held(branch_lock(repository, branch)):
        try:
            if catch_up and commit:
                asked, commit = commit, pipeline.caught_up(LakeFS(), repository, branch, commit)
                if commit != asked:
                    get_run_logger().info("%s has moved on from %s to %s: covering its head",
                                          branch, asked[:12], commit[:12])
            return _classify(repository, branch, commit, prefix, glob, batch_size, address,
                             merge_timeout_s)
        except NotFoundError as error:
            if (outcome := _vanished(repository, branch, commit, error)) is None:
                raise
            return outcome
        except UnavailableError as error:
            # Waited out for minutes already (`transaction.UNAVAILABLE_TIMEOUT_S`): nothing
            # was applied, and the head stays uncovered for the next run and reconcile.
            get_run_logger().warning("lakeFS or its object store stayed unavailable; the "
                                     "branch's next run (or reconcile) does this work: %s",
                                     error)
            return {"status": "unavailable", "source_commit": commit, "reason": str(error)}


def _vanished(
    repository: str, branch: str, commit: str | None, error: NotFoundError
) -> dict[str, Any] | None:
    """The outcome of a run that lost a branch under it, None if `error` is about another thing.

    The branch itself gone: nothing is left to do. The run's temporary branch gone:
    nothing was applied, and the branch's head stays uncovered for the next run.
    """
    logger = get_run_logger()
    try:
        LakeFS().head(repository, branch)
    except NotFoundError:
        logger.warning("%s/%s no longer exists: nothing to do (%s)", repository,
                       branch, error)
        return {"status": "branch_deleted", "source_commit": commit, "reason": str(error)}
    if isinstance(error, TransactionLost):
        logger.warning("%s; the branch's next run (or reconcile) does this work", error)
        return {"status": "interrupted", "source_commit": commit,
                "temp_branch": error.temp_branch, "reason": str(error)}
    return None


def _classify(
    repository: str,
    branch: str,
    commit: str | None,
    prefix: str,
    glob: str | None,
    batch_size: int,
    dask_address: str | None,
    merge_timeout_s: float,
) -> dict[str, Any]:
    logger = get_run_logger()
    clock = _Stopwatch()
    run_id = str(flow_run.id or "local")
    lakefs = LakeFS()
    key = signing_key()
    model, model_commit = pipeline.load_model(lakefs, repository, commit or branch)
    # The metrics: built-ins, installed entry points, and the scripts the branch pins.
    pin = scripts.configured(lakefs, repository, commit or branch)
    scripts_pin = str(pin) if pin else None
    metric_set = run_metrics(lakefs, None, scripts_pin)
    model.check(metric_set)  # a model reading a metric this run lacks: say so, now
    inputs = pipeline.Inputs(prefix=prefix, glob=glob)
    plan = pipeline.make_plan(lakefs, repository, branch, commit=commit, inputs=inputs,
                             model_id=model.id, key=key, metric_versions=metric_set.versions)
    clock.lap("plan")
    if plan.up_to_date:
        logger.info("%s@%s is already covered by the results of %s: nothing to do",
                    branch, plan.source_commit[:12], plan.previous.source_commit[:12])
        return {"status": "up_to_date", "source_commit": plan.source_commit}
    logger.info("%s@%s: %d images to measure, %d removed%s%s", branch,
                plan.source_commit[:12], len(plan.to_measure), len(plan.removed),
                ", relabelling all (model changed)" if plan.relabel_all else "",
                f", new metrics {plan.new_metrics} for every image"
                if plan.previous and plan.new_metrics else "")

    # The results transaction and the store's write are open while batches are measured:
    # each batch's records and store entries are uploaded as soon as it finishes.
    with (Transaction(lakefs, repository, branch, merge_timeout_s=merge_timeout_s) as results,
          MetricsStore(lakefs).write() as new_entries):
        measured: list[pipeline.Measured] = []
        new_records: list[dict[str, Any]] = []
        read_path = None
        if plan.to_measure:
            presigned = lakefs.storage_config().pre_sign_support
            read_path = "presigned" if presigned else "object-api"
            logger.info("images are read %s", "from the object store through presigned URLs"
                        if presigned else "through lakeFS's object API (no presigning)")
            for batch in measure_on_dask(repository, plan.source_commit,
                                         plan.to_measure, batch_size, run_id, dask_address,
                                         presigned=presigned, metric_set=metric_set,
                                         scripts_pin=scripts_pin):
                measured += batch
                new_entries.add(pipeline.store_documents(batch))
                labelled = pipeline.label(batch, model, plan.source_commit, run_id, key=key,
                                          metric_set=metric_set)
                results.upload_in_background(pipeline.record_files(labelled))
                new_records += labelled
        clock.lap("measure")

        origins = Counter(m.origin for m in measured)
        new_entries.commit(f"clearlake: {origins['computed']} analyses from "
                           f"{repository}@{plan.source_commit[:12]}")
        clock.lap("store")

        head = lakefs.head(repository, branch)
        table = pipeline.stored_table(lakefs, repository, head, branch)
        if table.empty and plan.previous and plan.previous.branch != branch:
            # A new branch inherits the results of the branch it was created from.
            table = pipeline.stored_table(lakefs, repository, head, plan.previous.branch)
        if plan.relabel_all:
            replaced = {r["path"] for r in new_records} | set(plan.removed)
            kept = [r for r in table.records(lakefs) if r["path"] not in replaced]
            relabelled = pipeline.relabel(kept, model, run_id, key=key)
            results.upload_in_background(pipeline.record_files(relabelled))
            new_records += relabelled
        clock.lap("label")

        counts = {"computed": origins["computed"], "reused": origins["reused"],
                  "failed": sum(1 for m in measured if m.analysis.outcome != "ok"),
                  "removed": len(plan.removed),
                  "relabelled": len(new_records) - len(measured)}
        retry = [m.path for m in measured if m.origin == "failed"]
        marker = pipeline.marker_for(plan, run_id, model, model_commit, counts, retry,
                                     metric_set=metric_set, scripts=scripts_pin or "")
        if retry:
            wait = pipeline.retry_wait_s(min(marker.attempts.values()))
            logger.warning("%d images could not be measured (%d runs in a row at most): the "
                           "branch's next run measures them again, and so does reconcile %s",
                           len(retry), max(marker.attempts.values()),
                           f"once {wait:.0f} s have passed" if wait else "at its next pass")
        try:
            results_commit = pipeline.write_back(
                lakefs, results, branch, table, new_records, plan.removed, marker.to_metadata(key),
                f"clearlake: {counts['computed']} computed, {counts['reused']} reused, "
                f"{counts['removed']} removed at {plan.source_commit[:12]}")
            status, pending = "merged", None
        except MergePending as error:
            logger.warning("%s", error)
            status, results_commit, pending = "pending", None, error.temp_branch
    clock.lap("write_back")

    summary = {"status": status, "source_commit": plan.source_commit,
               "results_commit": results_commit, "pending_branch": pending,
               "counts": counts, "metrics_computed": pipeline.computations(measured),
               "scripts": scripts_pin, "read_path": read_path, **pipeline.tally(new_records),
               "seconds": clock.laps,
               "transaction_seconds": {"results": results.seconds, "store": new_entries.seconds}}
    # The results are applied by now: Prefect away for a while must not fail the run.
    try:
        summary["report_reads"] = patiently_with_prefect(
            lambda: _publish_artifacts(lakefs, key, repository, branch, summary, new_records,
                                       inputs), "publishing the run's report")
    except Exception as error:
        if not prefect_was_unavailable(error):
            raise
        logger.warning("no report for this run: Prefect unavailable (%s)", error)
        summary["report_reads"] = 0
    clock.lap("report")  # summary["seconds"] is clock.laps: the lap shows there
    logger.info("%s", {k: v for k, v in summary.items() if k != "labels"})
    return summary


def _publish_artifacts(
    lakefs: LakeFS, key: bytes, repository: str, branch: str, summary: dict[str, Any],
    records: list[dict[str, Any]], inputs: pipeline.Inputs,
) -> int:
    """The run's report in the Prefect UI: charts, the worst images' thumbnails, links, and
    for a merge the quality diff it brought. Returns how many images it read (for their
    thumbnails), the only images a run reads twice.

    One markdown artifact, its pictures inline (`clearlake.report` says what Prefect's
    UI renders and why); its key groups a branch's reports under Artifacts.
    """
    links = report.RunLinks(report.bridge_url(), lakefs.settings.endpoint, repository, branch)
    worst = pipeline.worst_images(records, report.MAX_THUMBNAILS)
    thumbnails = report.read_thumbnails(lakefs, repository, summary["source_commit"], worst,
                                        presigned=summary["read_path"] == "presigned")
    merge_diff = _merge_diff(lakefs, key, repository, summary, inputs)
    labels = ", ".join(f"{n} {label}" for label, n in report.label_counts(records).items())
    create_markdown_artifact(
        report.render_report(summary, records, links, thumbnails, merge_diff),
        key=report.report_key(repository, branch),
        description=f"clearlake {summary['status']} at `{summary['source_commit'][:12]}`: "
                    f"{labels or 'no images'}",
    )
    return sum(1 for t in thumbnails.values() if not t.missing.startswith("not read"))


def _merge_diff(
    lakefs: LakeFS, key: bytes, repository: str, summary: dict[str, Any], inputs: pipeline.Inputs
) -> report.MergeDiff | None:
    """The quality diff of the run's source commit when it is a merge, None otherwise: from
    the merge's first parent (what the branch held) to the merge's results (the merge
    itself while they are pending). A diff that fails leaves its reason in the report:
    the results are applied by then, and the run stays a success."""
    from clearlake.quality_diff import quality_diff, summary_lines

    source = summary["source_commit"]
    parents = lakefs.get_commit(repository, source).parents
    if len(parents) < 2:
        return None
    compared_to = summary["results_commit"] or source
    try:
        diff = quality_diff(lakefs, repository, parents[0], compared_to, key=key, inputs=inputs)
    except ClearlakeError as error:
        get_run_logger().warning("no quality diff for the merge %s: %s", source[:12], error)
        return report.MergeDiff(parents[0], source, compared_to, [f"not available: {error}"])
    return report.MergeDiff(parents[0], source, compared_to, summary_lines(diff))


class _Stopwatch:
    """Seconds spent in each phase of a run, reported in its summary."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

