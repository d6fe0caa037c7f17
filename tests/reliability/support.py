"""What the reliability suite and `bench.soak` share: load, faults, and the health check
every scenario ends with.

The health check states what "nothing lost" means here, for one repository:

* every image on each checked branch's head has a record that clearlake signed for
  exactly that image (path and lakeFS checksum), and no record is left for an image
  that is gone;
* the branch's results table holds each image once, the same set;
* no source commit is covered by two results commits on a branch's first-parent line
  (no duplicate results);
* no temporary branch (`clearlake-tx-…`) is left;
* every `classify-commit` run of the repository ended, and none FAILED (a CRASHED run
  is allowed only where the scenario killed it on purpose, and is counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clearlake import layout, pipeline
from clearlake.errors import LakeFSError
from clearlake.lakefs import LakeFS
from clearlake.provenance import ResultsMarker, verified_marker, verified_record
from clearlake.stack.services import Stack
from clearlake.transaction import TEMP_BRANCH_PREFIX
from tests.pipeline_support import photo, wait_until

INPUTS = pipeline.Inputs()
# Generous: outcomes are asserted, not timing, and the machine may be heavily shared.
RUN_TIMEOUT_S = 900.0
MiB = 2**20


# -- load --------------------------------------------------------------------------------


@dataclass
class Burst:
    """What a writer committed: commit ids, and every image path it added, by branch.

    `refused` counts commits lakeFS (or the S3 server behind it) refused while a fault
    was injected: nothing was committed, so nothing of theirs is expected.
    """

    commits: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, set[str]] = field(default_factory=dict)
    committed_at: dict[str, float] = field(default_factory=dict)
    refused: int = 0

    def add(self, branch: str, commit: str, paths: Sequence[str]) -> None:
        self.commits.setdefault(branch, []).append(commit)
        self.images.setdefault(branch, set()).update(paths)
        self.committed_at[commit] = time.time()

    def merge_from(self, other: Burst) -> None:
        for branch, commits in other.commits.items():
            self.commits.setdefault(branch, []).extend(commits)
        for branch, paths in other.images.items():
            self.images.setdefault(branch, set()).update(paths)
        self.committed_at.update(other.committed_at)
        self.refused += other.refused

    @property
    def total_commits(self) -> int:
        return sum(len(c) for c in self.commits.values())

    @property
    def total_images(self) -> int:
        return sum(len(p) for p in self.images.values())


def commit_burst(
    lakefs: LakeFS, repo: str, branch: str, sizes: Sequence[int], seed: int, *,
    folder: str = "burst", pause_s: float = 0.0, tolerate_errors: bool = False,
    before_each: Callable[[int], None] | None = None,
) -> Burst:
    """Commit `len(sizes)` commits to `branch`, the i-th adding `sizes[i]` new small photos.

    With `pause_s`, the i-th commit is due `i * pause_s` after the first (a commit
    refused during a fault keeps its slot), so the load lasts as long as planned.

    Args:
        tolerate_errors: a commit lakeFS refuses (a service is down on purpose) is
            counted in `refused` and its staged images are left to the next commit,
            whose success brings them in; otherwise the error is raised.
        before_each: called with the commit's index before it is made (fault injection).
    """
    burst = Burst()
    staged: list[str] = []
    started = time.monotonic()
    for index, size in enumerate(sizes):
        if pause_s:
            time.sleep(max(0.0, started + index * pause_s - time.monotonic()))
        if before_each is not None:
            before_each(index)
        images = {f"{folder}/{branch}/{index:04d}-{n}.jpg": photo(seed + index * 100 + n, size=96)
                  for n in range(size)}
        try:
            lakefs.upload_many(repo, branch, images.items())
            staged += images
            commit = lakefs.commit(repo, branch, f"{folder}: {size} images ({index})")
        except LakeFSError:
            if not tolerate_errors:
                raise
            burst.refused += 1
            time.sleep(0.5)
            continue
        burst.add(branch, commit, staged)
        staged = []
    if staged and tolerate_errors:  # the last commits were refused: commit what is staged
        commit = _retry(lambda: lakefs.commit(repo, branch, f"{folder}: the rest",
                                              allow_empty=True))
        burst.add(branch, commit, staged)
    return burst


def _retry(action: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except LakeFSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def in_parallel(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads (each in a copy of this context: Prefect's settings travel
    in it) and return their results in order; the first error is raised."""
    import contextvars

    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], Any]) -> None:
        try:
            results[index] = job()
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run, i, job))
               for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# -- flow runs ---------------------------------------------------------------------------


def runs_of(repo: str) -> list[Any]:
    """Every `classify-commit` deployment run for `repo` (paged: a session holds hundreds)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    found, offset, page = [], 0, 200
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["classify-commit"])), limit=page, offset=offset)
            found += [r for r in runs if r.parameters.get("repository") == repo]
            if len(runs) < page:
                return found
            offset += page


def all_runs_final(repo: str) -> bool:
    runs = runs_of(repo)
    return all(r.state is not None and r.state.is_final() for r in runs)


def runs_settled(repo: str, quiet_s: float = 10.0, timeout_s: float = 900.0,
                 each: Callable[[], Any] | None = None) -> None:
    """Wait until every run of `repo` has ended and no new one appeared for `quiet_s`:
    lakeFS sends post-commit hooks asynchronously, so under load a commit's run can be
    created well after the commit returned (`each` is called on every poll)."""
    deadline = time.monotonic() + timeout_s
    quiet_since, seen = None, -1
    while time.monotonic() < deadline:
        if each is not None:
            each()
        runs = runs_of(repo)
        if all(r.state is not None and r.state.is_final() for r in runs) and len(runs) == seen:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        seen = len(runs)
        time.sleep(1.0)
    raise TimeoutError(f"runs of {repo} not settled within {timeout_s} s")


DASK_ADDRESS_ENV = "CLEARLAKE_DASK_ADDRESS"  # where reconcile's runs find the cluster


def run_reconcile(repo: str, dask_address: str, stale_after_s: float = 0.0) -> dict[str, Any]:
    """What the scheduled `reconcile` does, now, for one repository, on the stack's Dask
    cluster. A temporary branch of a run Prefect has seen end counts as stale at once (a
    live run's is always kept)."""
    from clearlake.flows.reconcile import reconcile

    saved = os.environ.get(DASK_ADDRESS_ENV)
    os.environ[DASK_ADDRESS_ENV] = dask_address
    try:
        return reconcile([repo], stale_after_s=stale_after_s)[repo]
    finally:
        if saved is None:
            os.environ.pop(DASK_ADDRESS_ENV, None)
        else:
            os.environ[DASK_ADDRESS_ENV] = saved


def covered_by_its_own_run(lakefs: LakeFS, repo: str, commit: str) -> float:
    """Wait until a classify-commit deployment run triggered for exactly `commit` (by its
    webhook: `reconcile` runs its catch-up as subflows) completed; return the seconds
    that took from the call."""
    started = time.monotonic()

    def done() -> bool:
        runs = [r for r in runs_of(repo) if r.parameters.get("commit") == commit]
        return any(r.state is not None and r.state.is_completed() for r in runs)

    wait_until(done, RUN_TIMEOUT_S)
    return time.monotonic() - started


# -- the health check --------------------------------------------------------------------


@dataclass
class Health:
    """Everything the health check found wrong (empty lists: nothing lost)."""

    missing: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    table_mismatch: list[str] = field(default_factory=list)
    duplicate_results: list[str] = field(default_factory=list)
    temp_branches: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    unfinished_runs: list[str] = field(default_factory=list)
    crashed_runs: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    runs: int = 0
    images: int = 0

    def problems(self, *, crashed_allowed: int = 0) -> dict[str, list[str]]:
        found = {name: value for name, value in vars(self).items()
                 if isinstance(value, list) and value and name != "crashed_runs"}
        if len(self.crashed_runs) > crashed_allowed:
            found["crashed_runs"] = self.crashed_runs
        return found


def results_merges(lakefs: LakeFS, repo: str, ref: str,
                   key: bytes) -> list[tuple[Any, ResultsMarker]]:
    """(commit, marker) of each results commit clearlake made on `ref`'s first-parent line,
    newest first. Results merge squashed (one parent), so only `verified_marker` tells
    them from a user's commit carrying a copied marker."""
    return [(commit, marker) for commit in lakefs.log(repo, ref, first_parent=True)
            if (marker := verified_marker(lakefs, repo, commit, key)) is not None]


def duplicated_sources(markers: Sequence[ResultsMarker]) -> dict[str, int]:
    """Source commits covered by more results than they needed, with how many results
    (markers newest first, as a log lists them).

    A source's results are needed once, and once more after each results that left
    images to retry (`ResultsMarker.retry`): a run retrying them covers the same source.
    """
    by_source: dict[str, list[ResultsMarker]] = {}
    for marker in reversed(markers):  # oldest first
        by_source.setdefault(marker.source_commit, []).append(marker)
    found = {}
    for source, results in by_source.items():
        needless = sum(1 for earlier in results[:-1] if not earlier.retry)
        if needless:
            found[source] = len(results)
    return found


def record_image(lakefs: LakeFS, repo: str, ref: str, key: str) -> str:
    """The image path a record key is for (a hashed key's record names it itself)."""
    if not key.startswith(layout.HASHED_RECORDS_PREFIX):
        return layout.image_path_of(key)
    path = json.loads(lakefs.get_object(repo, ref, key))["path"]
    assert layout.record_path(path) == key, f"{key} holds the record of {path!r}"
    return path


def check_health(lakefs: LakeFS, repo: str, branches: Sequence[str], key: bytes,
                 expected: dict[str, set[str]] | None = None) -> Health:
    """The health check of the module docstring, for `branches` of `repo`.

    Args:
        expected: image paths that must be on each branch (what the scenario committed);
            each must be there, with a record.
    """
    health = Health()
    for branch in branches:
        head = lakefs.head(repo, branch)
        images = {o.path: o.checksum for o in lakefs.list_objects(repo, head)
                  if INPUTS.matches(o.path)}
        health.images += len(images)
        health.missing += [f"{branch}:{p} (not on the branch)"
                           for p in sorted((expected or {}).get(branch, set()) - set(images))]
        records = {record_image(lakefs, repo, head, o.path): o.path
                   for o in lakefs.list_objects(repo, head, layout.RECORDS_PREFIX)}
        for path, checksum in images.items():
            if path not in records:
                health.missing.append(f"{branch}:{path}")
                continue
            record = verified_record(lakefs.get_object(repo, head, records[path]), key,
                                     path=path, checksum=checksum)
            if record is None:
                health.unverified.append(f"{branch}:{path}")
            else:
                health.outcomes[record["outcome"]] += 1
        health.orphaned += [f"{branch}:{p}" for p in sorted(set(records) - set(images))]
        rows = Counter(r["path"] for r in pipeline.read_table(lakefs, repo, head, branch, key=key))
        health.table_mismatch += [f"{branch}:{p} ×{n}" for p, n in rows.items() if n != 1]
        health.table_mismatch += [f"{branch}:{p} (not in the table)"
                                  for p in sorted(set(images) - set(rows))]
        markers = [marker for _, marker in results_merges(lakefs, repo, head, key)]
        health.duplicate_results += [f"{branch}:{s[:12]} ×{n}"
                                     for s, n in duplicated_sources(markers).items()]
    health.temp_branches = [name for name, _ in lakefs.list_branches(repo, TEMP_BRANCH_PREFIX)]
    runs = runs_of(repo)
    health.runs = len(runs)
    for run in runs:
        state = run.state
        label = f"{run.name} ({run.parameters.get('branch')}): {state.name if state else None}"
        if state is None or not state.is_final():
            health.unfinished_runs.append(label)
        elif state.is_failed():
            health.failed_runs.append(f"{label}: {state.message}")
        elif state.is_crashed():
            health.crashed_runs.append(f"{label}: {state.message}")
    return health


def assert_healthy(health: Health, *, crashed_allowed: int = 0) -> None:
    problems = health.problems(crashed_allowed=crashed_allowed)
    assert not problems, problems
    assert health.images > 0


# -- lag from commit to covering results -------------------------------------------------


def covering_lags(lakefs: LakeFS, repo: str, branch: str, key: bytes,
                  committed_at: dict[str, float]) -> dict[str, float]:
    """For each commit in `committed_at` on `branch` that results cover, seconds from its
    commit returning to the first results merge (lakeFS's creation time) covering it."""
    merges = sorted((commit.creation_date, marker.source_commit)
                    for commit, marker in results_merges(lakefs, repo, branch, key))
    lags = {}
    for commit, at in committed_at.items():
        for created, source in merges:
            if created >= int(at) - 1 and lakefs.is_ancestor(repo, commit, source):
                lags[commit] = max(0.0, created - at)
                break
    return lags


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- faults and memory -------------------------------------------------------------------


@contextlib.contextmanager
def service_down(stack: Stack, name: str, *, kill: bool = True) -> Iterator[None]:
    """Service `name` stopped (SIGKILL to its process group by default: a crash) for the
    body, then started again and healthy."""
    stack.stop_service(name, kill=kill)
    try:
        yield
    finally:
        stack.start_service(name)


def dask_worker_pids(address: str, wait_for: int = 0) -> list[int]:
    """The pids of the Dask worker processes connected to the scheduler at `address`,
    once at least `wait_for` have joined (they join minutes after starting, under load)."""
    from distributed import Client
    from distributed.comm.core import CommClosedError

    with Client(address, timeout=60) as client:
        if wait_for:
            client.wait_for_workers(wait_for, timeout=600)
        for _ in range(30):
            try:
                return sorted(client.run(os.getpid).values())
            except (CommClosedError, OSError):  # a worker went away meanwhile: ask again
                time.sleep(1)
        return sorted(client.run(os.getpid, on_error="ignore").values())


def reset_peak_rss(pids: Sequence[int]) -> None:
    """Reset each process's peak resident set (VmHWM) to its current size (Linux:
    `echo 5 > /proc/PID/clear_refs`), so a later peak is this scenario's own."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pids: Sequence[int]) -> dict[int, int]:
    """VmHWM in bytes of each process still alive."""
    peaks = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) * 1024
    return peaks


def current_rss(pids: Sequence[int]) -> dict[int, int]:
    peaks = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peaks[pid] = int(line.split()[1]) * 1024
    return peaks


def seconds_since(moment: datetime) -> float:
    return time.time() - moment.timestamp()


def load_average() -> float:
    return os.getloadavg()[0]


# -- the faults ---------------------------------------------------------------------------

S3_DOWN_S = 30.0  # the outage


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def flow_run_pids(stack: Stack) -> list[int]:
    """Flow-run processes: the forkserver's children (each a forked, running flow run)."""
    server = stack._running_pid("flow-forkserver")
    return [pid for pid in stack.processes("flow-forkserver")
            if pid != server and _parent(pid) == server]


def wait_briefly(condition: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """`condition()`'s first true value within `timeout_s`, else its last value."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


class Fault:
    """One fault: `inject` before commit FAULT_AT, `restore` before commit RESTORE_AT."""

    crashes_runs = False  # the fault kills flow runs itself

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.note = ""

    def inject(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """Nothing to do for a fault whose service restarts itself."""


class ServiceCrash(Fault):
    """SIGKILL to the service's process group; started again at `restore`."""

    service = ""

    def inject(self) -> None:
        self.stack.stop_service(self.service, kill=True)

    def restore(self) -> None:
        self.stack.start_service(self.service)


class DaskWorkerCrash(Fault):
    """A Dask worker process killed while it measures a batch; its nanny restarts it."""

    def inject(self) -> None:
        from distributed import Client

        with Client(self.stack.dask_address, timeout=60) as client:
            # Workers join some time after their processes start (minutes under load).
            client.wait_for_workers(len(os.sched_getaffinity(0)), timeout=600)
            busy = wait_briefly(lambda: [w for w, keys in client.processing().items() if keys])
            target = busy[0] if busy else next(iter(client.scheduler_info()["workers"]))
            pid = client.run(os.getpid, workers=[target])[target]
        self.note = "mid-batch" if busy else "idle (no batch was running)"
        os.kill(pid, signal.SIGKILL)

    def restore(self) -> None:
        cores = len(os.sched_getaffinity(0))
        wait_until(lambda: len(dask_worker_pids(self.stack.dask_address)) == cores, 600)


class DaskSchedulerCrash(ServiceCrash):
    """The scheduler killed and restarted at the same address.

    A worker that loses its scheduler closes itself and its nanny (distributed 2025:
    `Worker.handle_scheduler` → `close(nanny=True)`), so `dask worker` exits; the stack
    runs it under `clearlake.stack.supervise`, which starts it again, and the workers
    join the restarted scheduler. `restore` waits for them (minutes under load) and
    says in `workers_rejoined` whether they did, by themselves.
    """

    service = "dask-scheduler"
    workers_rejoined: bool | None = None
    REJOIN_TIMEOUT_S = 600.0

    def restore(self) -> None:
        super().restore()
        cores = len(os.sched_getaffinity(0))
        deadline = time.monotonic() + self.REJOIN_TIMEOUT_S
        while time.monotonic() < deadline and self.stack._running_pid("dask-workers"):
            with contextlib.suppress(OSError, TimeoutError):
                if len(dask_worker_pids(self.stack.dask_address)) == cores:
                    self.workers_rejoined = True
                    return
            time.sleep(2)
        self.workers_rejoined = False
        self.note = "the Dask workers did not come back by themselves: started again"
        self.stack.stop_service("dask-workers")
        self.stack.start_service("dask-workers")
        wait_until(lambda: len(dask_worker_pids(self.stack.dask_address)) == cores, 600)


class FlowProcessCrash(Fault):
    """A running classify-commit flow process killed (OOM-killer style)."""

    crashes_runs = True

    def inject(self) -> None:
        running = wait_briefly(lambda: flow_run_pids(self.stack))
        for pid in running[:1]:
            os.kill(pid, signal.SIGKILL)
        self.note = f"{len(running[:1])} flow process killed"


class PrefectWorkerCrash(ServiceCrash):
    """The process worker killed with its launchers: the forkserver then kills their runs,
    and nobody reports them; Prefect keeps them Running."""

    service = "prefect-worker"
    crashes_runs = True


class BridgeCrash(ServiceCrash):
    service = "bridge"


class LakeFSCrash(ServiceCrash):
    """lakeFS killed right after a commit, its post-commit hook in flight."""

    service = "lakefs"


class S3Outage(Fault):
    """The S3 server stopped for S3_DOWN_S seconds (commits meanwhile are refused)."""

    def inject(self) -> None:
        self.stack.stop_service("s3", kill=True)
        self.stopped = time.monotonic()

    def restore(self) -> None:
        time.sleep(max(0.0, S3_DOWN_S - (time.monotonic() - self.stopped)))
        self.stack.start_service("s3")


class PrefectServerCrash(ServiceCrash):
    service = "prefect"


FAULTS: dict[str, type[Fault]] = {
    "dask-worker": DaskWorkerCrash,
    "dask-scheduler": DaskSchedulerCrash,
    "flow-process": FlowProcessCrash,
    "prefect-worker": PrefectWorkerCrash,
    "bridge": BridgeCrash,
    "lakefs": LakeFSCrash,
    "s3": S3Outage,
    "prefect-server": PrefectServerCrash,
}
