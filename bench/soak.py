"""Soak: commits on several branches at a steady pace, merges, and one fault of each kind
injected while it runs; then what was lost (nothing, or the run fails).

Run ``python -m bench.soak [--commits 123] [--images 600] [--branches 3] [--pace 15]
[--faults all|none|NAME,…] [--burst 100] [--burst-seconds 60] [--json PATH]``; the
defaults are issue 12's loads: ten minutes of commits on three branches (41 commits
per writer, one due every 15 s, the last 600 s after the first, whether or not a
fault refused some), then 100 one-image commits in 60 s. It starts its own stack (every
service, on free loopback ports, state in a temporary folder) and stops it afterwards,
also on SIGTERM/SIGINT. In one run:

1. A repository with clearlake's lakeFS actions; `--branches` branches (main and
   others made from it), each with its own writer thread committing its share of
   `--commits` commits of 1–20 new photographs (`--images` in all, sizes drawn from a
   fixed seed), one commit every `--pace` s per writer. The second branch is merged into
   main half-way through, the third at the end (each merge passes main's pre-merge gate).
2. Meanwhile, one fault of each kind (`tests/reliability/support.FAULTS`), spread evenly
   over the commits: a Dask worker killed mid-batch, the Dask scheduler killed and
   restarted, a flow process killed, the Prefect worker killed with its launchers and
   restarted, the bridge, lakeFS and the Prefect server each killed and restarted, the
   S3 server down for 30 s. Commits refused during a fault are retried by the next
   commit of their writer (the staged images stay).
3. `--burst` one-image commits to main, spread evenly over `--burst-seconds` (sooner
   if lakeFS cannot take them that fast: then as fast as they go).
4. Settle: wait until every run ended (runs killed with the Prefect worker stop
   beating, and the stack's automation marks them Crashed), run `reconcile`, and check
   health (`support.check_health`): every image on every branch with its signed
   record, the table, duplicate results, stale temporary branches, failed runs.

Reported: commits, images, runs, failed and crashed runs, images without records,
duplicate results, stale temporary branches, faults injected and survived, the lag from
commit to covering results (p50, p95) and, for each fault, the slowest cover of a commit
made while it lasted (what a loss window costs: a commit whose webhook was lost waits
for `reconcile`), and the peak resident memory of a Dask worker and
of a flow-run process (sampled every 0.5 s). Exit status 1 if anything was lost.
The machine may be shared: the load average is reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cleanup

SETTLE_TIMEOUT_S = 1200.0
SAMPLE_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 600.0
FAULT_WAIT_S = 900.0  # the longest a writer waits for a fault to be injected


def sizes_for(commits: int, images: int, seed: int) -> list[int]:
    """`commits` commit sizes of 1–20 images that add up to `images`."""
    if not commits <= images <= 20 * commits:
        raise SystemExit(f"{images} images cannot make {commits} commits of 1–20 images")
    rng = random.Random(seed)
    sizes = [1] * commits
    for _ in range(images - commits):
        sizes[rng.choice([i for i, s in enumerate(sizes) if s < 20])] += 1
    return sizes


class MemorySampler(threading.Thread):
    """Peak resident memory of the Dask workers and of flow-run processes, sampled (the
    processes come and go: workers are killed and restarted by the faults)."""

    def __init__(self, stack: Any) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.peaks = {"dask_worker": 0, "flow_run": 0}
        self.done = threading.Event()

    def run(self) -> None:
        from tests.reliability.support import current_rss, flow_run_pids, peak_rss

        while not self.done.wait(SAMPLE_EVERY_S):
            try:
                nanny = self.stack._running_pid("dask-workers")
                workers = [p for p in self.stack.processes("dask-workers") if p != nanny]
                groups = {"dask_worker": workers, "flow_run": flow_run_pids(self.stack)}
            except OSError:
                continue
            for kind, pids in groups.items():
                sizes = [*current_rss(pids).values(), *peak_rss(pids).values()]
                self.peaks[kind] = max([self.peaks[kind], *sizes])


class Writer:
    """Commits its branch's share of the load, one commit every `pace` s (`run`, in a
    thread of its own)."""

    def __init__(self, ctx: dict[str, Any], branch: str, sizes: list[int], seed: int,
                 pace: float, progress: Any) -> None:
        self.ctx, self.branch, self.sizes, self.seed, self.pace = ctx, branch, sizes, seed, pace
        self.progress = progress
        self.error: BaseException | None = None
        from tests.reliability.support import Burst

        self.burst = Burst()
        self.halfway = threading.Event()

    def run(self) -> None:
        from tests.reliability.support import commit_burst

        def before(index: int) -> None:
            if index >= len(self.sizes) // 2:
                self.halfway.set()
            self.progress()

        try:
            self.burst = commit_burst(self.ctx["lakefs"], self.ctx["repo"], self.branch,
                                      self.sizes, self.seed, folder="soak", pause_s=self.pace,
                                      tolerate_errors=True, before_each=before)
        except BaseException as error:  # reported by the main thread
            self.error = error
            traceback.print_exc()
        self.halfway.set()


def merge(ctx: dict[str, Any], source: str, merged: dict[str, set[str]]) -> None:
    """Merge `source`'s head into main (retrying while a fault keeps lakeFS from it);
    remember the images it had committed by then, which main must now hold."""
    from tests.reliability.support import _retry

    head = _retry(lambda: ctx["lakefs"].head(ctx["repo"], source), 300)
    have = _committed_images(ctx, source, head)
    _retry(lambda: ctx["lakefs"].merge(ctx["repo"], head, "main", f"merge {source}"), 300)
    merged.setdefault("main", set()).update(have)
    print(f"  merged {source}@{head[:12]} into main ({len(have)} images)", flush=True)


def _committed_images(ctx: dict[str, Any], branch: str, head: str) -> set[str]:
    from tests.reliability.support import INPUTS

    return {o.path for o in ctx["lakefs"].list_objects(ctx["repo"], head, f"soak/{branch}/")
            if INPUTS.matches(o.path)}


def run_faults(ctx: dict[str, Any], names: list[str], commits_made: Any,
               thresholds: list[int], injected: list[threading.Event],
               faults: list[dict[str, Any]], writers_done: threading.Event) -> None:
    """Inject each fault when the commits reach its threshold (the writer that reaches it
    waits for `injected`); restore it two commits (or, for the S3 server, 30 s) later."""
    from tests.reliability.support import FAULTS

    for number, name in enumerate(names):
        while commits_made() < thresholds[number] and not writers_done.is_set():
            time.sleep(0.2)
        fault = FAULTS[name](ctx["stack"])
        entry: dict[str, Any] = {"fault": name, "at_commit": commits_made()}
        started = time.monotonic()
        entry["from"] = time.time()  # wall clock, like the commits' times
        try:
            try:
                fault.inject()
            finally:
                injected[number].set()
            entry["injected"] = True
            restore_at = commits_made() + 2
            deadline = time.monotonic() + 20
            while commits_made() < restore_at and time.monotonic() < deadline:
                time.sleep(0.2)
            fault.restore()
            entry["restored"] = True
        except BaseException as error:
            entry["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            ctx["stack"].up(report=lambda line: None, deploy=False)  # bring everything back
        entry["seconds"] = round(time.monotonic() - started, 1)
        entry["until"] = time.time()
        entry["note"] = fault.note
        entry["writers_were_running"] = not writers_done.is_set()
        faults.append(entry)
        print(f"  fault {name} at commit {entry['at_commit']}: "
              f"{entry.get('error') or 'injected and restored'} {fault.note}".rstrip(),
              flush=True)


def settle(repo: str, timeout_s: float) -> None:
    """Wait until every run of `repo` ended (runs killed with the Prefect worker are marked
    Crashed by the stack's heartbeat automation: `clearlake.stack.automations`)."""
    from tests.reliability.support import all_runs_final

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all_runs_final(repo):
            return
        time.sleep(2)
    raise TimeoutError(f"runs of {repo} still unfinished after {timeout_s} s")


def measure(args: argparse.Namespace, stack: Any, home: Path, result: dict[str, Any]) -> None:
    from clearlake import pipeline
    from clearlake.actions import install_actions, render_actions
    from clearlake.config import lakefs_settings
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import signing_key
    from tests.reliability.support import (
        FAULTS,
        Burst,
        check_health,
        commit_burst,
        covering_lags,
        percentile,
        run_reconcile,
    )

    lakefs = LakeFS(lakefs_settings(home))
    key = signing_key()
    repo = f"soak-{secrets.token_hex(3)}"
    lakefs.create_repository(repo)
    install_actions(lakefs, repo, "main", render_actions(stack.bridge_url))
    wait_until(lambda: pipeline.is_covered(lakefs, repo, "main", key), 300)
    branches = ["main"] + [f"soak-{n}" for n in range(1, args.branches)]
    for branch in branches[1:]:
        lakefs.create_branch(repo, branch, "main")
    ctx = {"lakefs": lakefs, "repo": repo, "stack": stack}
    sizes = sizes_for(args.commits, args.images, args.seed)
    shares = {b: sizes[i::len(branches)] for i, b in enumerate(branches)}
    seed = secrets.randbits(40)
    names = list(FAULTS) if args.faults == "all" else (
        [] if args.faults == "none" else args.faults.split(","))
    # Fault k is injected when the commits reach its threshold; the writer that gets
    # there waits for it, so every fault falls inside the load, whatever its duration.
    thresholds = [args.commits * k // (len(names) + 1) for k in range(1, len(names) + 1)]
    injected = [threading.Event() for _ in names]
    made = [0]
    lock = threading.Lock()

    def progress() -> None:
        with lock:
            made[0] += 1
            count = made[0]
        if count in thresholds:
            injected[thresholds.index(count)].wait(FAULT_WAIT_S)

    import contextvars

    sampler = MemorySampler(stack)
    sampler.start()
    started = time.monotonic()
    writers = [Writer(ctx, b, shares[b], seed + n * 1_000_000, args.pace, progress)
               for n, b in enumerate(branches)]
    writers_done = threading.Event()
    faults: list[dict[str, Any]] = []
    fault_thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(run_faults, ctx, names, lambda: made[0], thresholds, injected, faults,
              writers_done),
        daemon=True)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(w.run,),
                                daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    fault_thread.start()
    merged: dict[str, set[str]] = {}
    if len(branches) > 1:
        writers[1].halfway.wait()
        merge(ctx, branches[1], merged)
    for thread in threads:
        thread.join()
    sustained_seconds = round(time.monotonic() - started, 1)
    writers_done.set()
    fault_thread.join()
    if len(branches) > 2:
        merge(ctx, branches[2], merged)
    burst = Burst()
    for writer in writers:
        burst.merge_from(writer.burst)
    burst_seconds = None
    burst_from = time.time()  # wall clock, like the commits' times
    if args.burst:
        burst_started = time.monotonic()

        def on_schedule(index: int) -> None:
            due = burst_started + index * args.burst_seconds / args.burst
            time.sleep(max(0.0, due - time.monotonic()))

        burst.merge_from(commit_burst(lakefs, repo, "main", [1] * args.burst, seed - 1,
                                      folder="soak-burst", tolerate_errors=True,
                                      before_each=on_schedule))
        burst_seconds = round(time.monotonic() - burst_started, 1)
        print(f"  burst: {args.burst} one-image commits in {burst_seconds} s", flush=True)
    load_seconds = time.monotonic() - started
    print(f"  {burst.total_commits} commits made in {load_seconds:.0f} s; settling", flush=True)
    settle(repo, SETTLE_TIMEOUT_S)
    report = run_reconcile(repo, stack.dask_address)
    sampler.done.set()
    expected = {b: set(p) for b, p in burst.images.items()}
    expected.setdefault("main", set()).update(merged.get("main", set()))
    health = check_health(lakefs, repo, branches, key, expected=expected)
    lag_of = {commit: lag for branch in branches for commit, lag in covering_lags(
        lakefs, repo, branch, key,
        {c: t for c, t in burst.committed_at.items() if c in burst.commits.get(branch, [])}
    ).items()}
    lags = list(lag_of.values())
    burst_lags = [lag_of[c] for c, at in burst.committed_at.items()
                  if at >= burst_from and c in lag_of]
    for fault in faults:  # the cost of a loss window: how late its commits were covered
        during = [lag_of[c] for c, at in burst.committed_at.items()
                  if fault["from"] <= at <= fault["until"] and c in lag_of]
        fault["commits_during"] = len(during)
        fault["slowest_cover_s"] = _round(max(during, default=None))
    crash_causes = [f["fault"] for f in faults if FAULTS[f["fault"]].crashes_runs]
    result.update(
        repository=repo, branches=branches, load_seconds=round(load_seconds, 1),
        sustained_seconds=sustained_seconds, burst_seconds=burst_seconds,
        commits=burst.total_commits, refused_commits=burst.refused,
        images_committed=burst.total_images, images_on_heads=health.images,
        runs=health.runs, failed_runs=health.failed_runs, crashed_runs=health.crashed_runs,
        crash_causes=crash_causes,
        unfinished_runs=health.unfinished_runs,
        images_without_records=health.missing, unverified_records=health.unverified,
        orphaned_records=health.orphaned, table_mismatch=health.table_mismatch,
        duplicate_results=health.duplicate_results, stale_temp_branches=health.temp_branches,
        outcomes=dict(health.outcomes), faults=faults,
        reconcile={k: (len(v) if isinstance(v, list | dict) else v) for k, v in report.items()},
        lag_s={"p50": _round(percentile(lags, 0.5)), "p95": _round(percentile(lags, 0.95)),
               "commits": len(lags)},
        burst_lag_s={"p50": _round(percentile(burst_lags, 0.5)),
                     "p95": _round(percentile(burst_lags, 0.95)), "commits": len(burst_lags)},
        peak_rss_mib={k: round(v / 2**20) for k, v in sampler.peaks.items()},
        writer_errors=[repr(w.error) for w in writers if w.error is not None],
        load_average_end=round(os.getloadavg()[0], 2),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def wait_until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"not settled within {timeout_s} s")


def lost(result: dict[str, Any]) -> list[str]:
    """What the soak lost or left wrong (empty: nothing)."""
    checks = ("failed_runs", "unfinished_runs", "images_without_records", "unverified_records",
              "orphaned_records", "table_mismatch", "duplicate_results", "stale_temp_branches",
              "writer_errors")
    found = [f"{name}: {result[name]}" for name in checks if result.get(name)]
    if result.get("crashed_runs") and not result.get("crash_causes"):
        found.append(f"crashed_runs: {result['crashed_runs']}")
    found += [f"fault {f['fault']}: {f['error']}" for f in result.get("faults", [])
              if "error" in f]
    if result.get("images_on_heads", 0) < result.get("images_committed", 0):
        found.append("fewer images on the heads than committed")
    return found


def print_report(result: dict[str, Any]) -> None:
    faults = result.get("faults", [])
    survived = [f["fault"] for f in faults if f.get("restored")]
    rows = [
        ("commits (refused during faults, retried)",
         f"{result['commits']} ({result['refused_commits']})"),
        ("images committed / on the branch heads",
         f"{result['images_committed']} / {result['images_on_heads']}"),
        ("branches, merges", f"{len(result['branches'])}, {len(result['branches']) - 1}"),
        ("flow runs", result["runs"]),
        ("failed runs", len(result["failed_runs"])),
        ("crashed runs (killed by the flow-process / Prefect-worker faults)",
         len(result["crashed_runs"])),
        ("images without records", len(result["images_without_records"])),
        ("unverified or orphaned records",
         len(result["unverified_records"]) + len(result["orphaned_records"])),
        ("duplicate results", len(result["duplicate_results"])),
        ("stale temporary branches", len(result["stale_temp_branches"])),
        ("faults injected / survived", f"{len(faults)} / {len(survived)}: {', '.join(survived)}"),
        ("record outcomes", result["outcomes"]),
        ("commit → covering results p50 / p95",
         f"{result['lag_s']['p50']} s / {result['lag_s']['p95']} s "
         f"({result['lag_s']['commits']} commits)"),
        ("of them, the burst's commits: p50 / p95",
         f"{result['burst_lag_s']['p50']} s / {result['burst_lag_s']['p95']} s "
         f"({result['burst_lag_s']['commits']} commits)"),
        ("slowest cover of a commit made during each fault", ", ".join(
            f"{f['fault']} {f['slowest_cover_s']} s ({f['commits_during']})"
            for f in faults if f.get("commits_during"))),
        ("peak RSS: Dask worker / flow run",
         f"{result['peak_rss_mib']['dask_worker']} / {result['peak_rss_mib']['flow_run']} MiB"),
        ("load phase: writers on every branch, then the burst",
         f"{result['load_seconds']} s: {result['sustained_seconds']} s, then "
         f"{result['burst_seconds']} s"),
        ("load average (start → end)",
         f"{result['load_average_start']} → {result['load_average_end']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nbench.soak")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    problems = lost(result)
    print("  lost: " + ("nothing" if not problems else "; ".join(problems)))


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from clearlake.stack import services
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack, free_loopback_ports

    install_lakefs(report=lambda line: None)
    # On a loaded shared machine the Prefect server has taken over the stack's 120 s to
    # answer its health check (load average 14 on 2 cores): the soak waits longer.
    services.HEALTH_TIMEOUT_S = max(services.HEALTH_TIMEOUT_S, HEALTH_TIMEOUT_S)
    stack = Stack(home=home, ports=free_loopback_ports())
    os.environ.update(stack.client_env())  # before Prefect is imported
    result: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)), "args": vars(args) | {"json": str(args.json)},
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": round(os.getloadavg()[0], 2)}
    try:
        stack.up(report=lambda line: print(f"  stack: {line}", flush=True))
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
            measure(args, stack, home, result)
    finally:
        with cleanup.deferred():
            try:
                if "prefect.events.worker" in sys.modules:
                    from prefect.events.worker import EventsWorker

                    EventsWorker.drain_all()
            finally:
                stack.down(report=lambda line: None)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=123, help="commits over all branches")
    parser.add_argument("--images", type=int, default=600, help="images over all commits")
    parser.add_argument("--branches", type=int, default=3, help="branches written at once")
    parser.add_argument("--pace", type=float, default=15.0,
                        help="seconds between one writer's commits")
    parser.add_argument("--faults", default="all",
                        help="'all', 'none' or names from tests/reliability/support.FAULTS")
    parser.add_argument("--burst", type=int, default=100,
                        help="one-image commits to main after the load")
    parser.add_argument("--burst-seconds", type=float, default=60.0,
                        help="the burst's commits spread over this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the commit sizes")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    print(f"bench.soak: {args.commits} commits, {args.images} images, {args.branches} "
          f"branches, faults {args.faults}; {len(os.sched_getaffinity(0))} cores, load "
          f"average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-soak-") as tmp:
        result = run(args, Path(tmp))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    if lost(result):
        sys.exit(1)


if __name__ == "__main__":
    cleanup.main(main)
