"""Benchmark: trigger latency, from `lakectl commit` returning to the triggered run.

Run ``python -m bench.trigger [--commits 20] [--json PATH]``. It starts its own
stack (lakeFS, a Prefect server with the deployments, the Dask scheduler and
workers, the webhook bridge and the process worker) on free loopback ports with
its state in a temporary folder, and stops it afterwards. In one run:

1. A repository with clearlake's lakeFS actions installed; the run the action-file
   commit triggers is waited for (it warms the worker, the Dask workers and the
   metrics store), then `--warmup` one-image commits that are not counted.
2. `--commits` commits of one new JPEG each, uploaded and committed with `lakectl`
   as a user would, one at a time (each fully processed before the next, so
   nothing is batched). Per commit, with t0 = the moment `lakectl commit` returned
   (this process's clock; the servers run on the same machine):
   * **trigger** = t0 → the `classify-commit` run for that commit entering
     Running, from the run's own state history (the server's timestamp);
   * **results** = t0 → the branch's latest signed results covering the commit,
     seen by polling lakeFS every `--poll` s (the flow's end time is shown too);
   * where the trigger time goes: t0 → the Prefect event received (lakeFS's
     asynchronous post-commit hook and the bridge), → the flow run created (the
     server's trigger and automation services), → Pending (the worker's polling
     and submission), → Running (a new process: interpreter, Prefect and flow
     imports, the deployment's pull step); and after Running: → the flow's body
     starting (the per-branch lock: creating/reading the limit and the slot
     wait), the body's own phases (the flow's summary 'seconds'), → results.
3. The flow's own time for a one-image change, in this process (no trigger, no
   new process): `flows.classify.classify_commit` against the stack's Dask
   scheduler, on a second repository without actions (so nothing else runs it),
   for `--inflow` one-image commits after a first run. Compared with the 0.57 s
   issue 5 quotes for a one-image change through the seed's GNU Make prototype
   (quoted, not measured here).
4. Fresh-process import times (`python -c pass`, `import prefect`, the flow
   module as the engine loads it), which are part of Pending → Running.

The machine is shared: the load average is sampled before every commit and
reported. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cleanup

TARGET_TRIGGER_MEDIAN_S = 5.0
SEED_MAKE_ONE_IMAGE_S = 0.57  # issue 5: one-image change through the seed's GNU Make prototype
SETTLE_TIMEOUT_S = 300.0
DEPLOYMENT = "classify-commit"


# --- small helpers -------------------------------------------------------------------------


def ts(value: datetime | None) -> float | None:
    """A server timestamp as seconds since the epoch."""
    return None if value is None else value.timestamp()


def diff(later: float | None, earlier: float | None) -> float | None:
    """later - earlier, rounded, or None when either is unknown."""
    if later is None or earlier is None:
        return None
    return round(later - earlier, 3)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def stats(values: list[float | None]) -> dict[str, float | int | None]:
    """median, p95, min, max and the count of the known values."""
    known = [v for v in values if v is not None]
    if not known:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None}
    return {"n": len(known), "median": round(statistics.median(known), 3),
            "p95": round(percentile(known, 0.95), 3), "min": round(min(known), 3),
            "max": round(max(known), 3)}


def wait_until(condition: Callable[[], Any], timeout_s: float, poll_s: float = 0.25) -> Any:
    """Poll `condition` until it is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll_s)
    raise TimeoutError(f"not settled within {timeout_s} s")


# --- the stack -----------------------------------------------------------------------------


def make_stack(home: Path) -> Any:
    """The whole stack in `home` on free ports (not started); point this process at it."""
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack, free_loopback_ports

    install_lakefs(report=lambda line: None)
    stack = Stack(home=home, ports=free_loopback_ports())
    # Prefect reads its settings when first imported: set them before anything imports it.
    os.environ.update(stack.client_env())
    return stack


def start_stack(stack: Any) -> None:
    """Start every service of `stack`, printing its progress."""
    started = time.monotonic()
    stack.up(report=lambda line: print(f"  stack: {line}", flush=True))
    print(f"  stack up in {time.monotonic() - started:.1f} s", flush=True)


def lakectl(env: dict[str, str], *args: str) -> str:
    """Run the built lakectl; return its standard output."""
    return cleanup.run(["lakectl", *args], env=env, check=True, capture_output=True,
                       text=True).stdout


# --- Prefect reads -------------------------------------------------------------------------


def find_run(client: Any, repository: str, commit: str) -> Any | None:
    """The classify-commit flow run whose parameters name `commit`, if it exists yet."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[DEPLOYMENT])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=20)
    for run in runs:
        if (run.parameters.get("repository") == repository
                and run.parameters.get("commit") == commit):
            return run
    return None


def event_received(client: Any, repository: str, commit: str) -> float | None:
    """When the Prefect server received the bridge's event for `commit`."""
    from prefect.events.filters import EventFilter, EventIDFilter

    from clearlake.bridge import event_id

    # The client's default limit (100) is above what this server accepts (50).
    page = client.read_events(filter=EventFilter(id=EventIDFilter(id=[event_id(repository,
                                                                               commit)])),
                              limit=10)
    return min((ts(e.received) for e in page.events), default=None)


def state_times(client: Any, run_id: Any) -> dict[str, float]:
    """The first timestamp of each state type in a run's history."""
    times: dict[str, float] = {}
    for state in client.read_flow_run_states(run_id):
        times.setdefault(state.type.value, ts(state.timestamp))
    return times


def run_logs(client: Any, run_id: Any) -> list[tuple[float, str]]:
    """A run's log lines (timestamp, message), oldest first."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                            limit=200, sort=LogSort.TIMESTAMP_ASC)
    return [(ts(log.timestamp), log.message) for log in logs]


def summary_from_logs(logs: list[tuple[float, str]]) -> dict[str, Any] | None:
    """The flow's logged summary (status, counts, 'seconds' per phase)."""
    for _, message in reversed(logs):
        if message.startswith("{") and "'seconds'" in message:
            try:
                return ast.literal_eval(message)
            except (ValueError, SyntaxError):
                return None
    return None


def first_log(logs: list[tuple[float, str]], needle: str) -> float | None:
    """Timestamp of the first log line containing `needle`."""
    return next((t for t, message in logs if needle in message), None)


# --- one measured commit -------------------------------------------------------------------


def measure_commit(ctx: dict[str, Any], index: int, poll_s: float) -> dict[str, Any]:
    """Commit one new image with lakectl and time its way to Running and to results."""
    from prefect.client.orchestration import get_client

    from clearlake.provenance import latest_results
    from tests.pipeline_support import photo

    lakefs, repo, env, tmp = ctx["lakefs"], ctx["repo"], ctx["env"], ctx["tmp"]
    path = f"trigger/{index:03d}.jpg"
    local = tmp / f"{index:03d}.jpg"
    local.write_bytes(photo(ctx["seed"] + index))
    load = os.getloadavg()
    started = time.time()
    lakectl(env, "fs", "upload", "-s", str(local), f"lakefs://{repo}/main/{path}")
    uploaded = time.time()
    out = lakectl(env, "commit", f"lakefs://{repo}/main", "-m", f"bench image {index}")
    t0 = time.time()  # the moment `lakectl commit` returned
    commit = out.split("ID: ", 1)[1].split()[0]

    key = ctx["key"]
    run = None
    seen_running: float | None = None
    covered_at: float | None = None
    covered_by = ""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            now = time.time()
            if seen_running is None:
                run = find_run(client, repo, commit) or run
                if run is not None and run.state is not None and run.state.type.value in (
                        "RUNNING", "COMPLETED", "FAILED", "CRASHED"):
                    seen_running = now
            if covered_at is None:
                latest = latest_results(lakefs, repo, "main", key)
                if latest and lakefs.is_ancestor(repo, commit, latest[1].source_commit):
                    covered_at = time.time()
                    covered_by = latest[1].run_id
            if covered_at is not None and run is not None:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
            time.sleep(poll_s)
        else:
            return {"index": index, "commit": commit, "error": "not settled in time",
                    "load1": load[0]}
        states = state_times(client, run.id)
        # The run's process ships its logs in batches: the last ones may come after its
        # final state. Wait a little for the summary (absent when it had nothing to do).
        logs = run_logs(client, run.id)
        flushed = time.monotonic() + 15.0
        while summary_from_logs(logs) is None and time.monotonic() < flushed:
            if any("nothing to do" in message for _, message in logs):
                break
            time.sleep(0.5)
            logs = run_logs(client, run.id)
        received = event_received(client, repo, commit)
        created = ts(run.created)
        own = covered_by == str(run.id)
        if not own:  # e.g. the scheduled reconcile run got there first
            other = client.read_flow_run(covered_by)
            name = client.read_flow(other.flow_id).name
            if other.parent_task_run_id is not None:
                parent = client.read_flow_run(
                    client.read_task_run(other.parent_task_run_id).flow_run_id)
                name += f" (subflow of {client.read_flow(parent.flow_id).name})"
            covered_by = name

    summary = summary_from_logs(logs) or {}
    laps: dict[str, float] = summary.get("seconds", {})
    measuring = first_log(logs, "images to measure")
    body_start = None if measuring is None else measuring - laps.get("plan", 0.0)
    running = states.get("RUNNING")
    body_s = round(sum(laps.values()), 3) if laps else None
    row = {
        "index": index, "commit": commit, "run": str(run.id), "status": summary.get("status"),
        "state": run.state.type.value if run.state else None,
        "load1": round(load[0], 2),
        "upload_s": round(uploaded - started, 3), "lakectl_commit_s": round(t0 - uploaded, 3),
        "trigger_s": diff(running, t0),
        "trigger_polled_s": diff(seen_running, t0),
        "results_s": diff(covered_at, t0) if own else None,
        "results_any_s": diff(covered_at, t0),
        "covered_by": "this run" if own else covered_by,
        "flow_end_s": diff(ts(run.end_time), t0),
        # where the trigger time goes
        "to_event_s": diff(received, t0),
        "event_to_run_created_s": diff(created, received),
        "created_to_pending_s": diff(states.get("PENDING"), states.get("SCHEDULED", created)),
        "pending_to_running_s": diff(running, states.get("PENDING")),
        "pending_to_pull_step_s": diff(first_log(logs, "deployment pull step"),
                                       states.get("PENDING")),
        # after Running
        "running_to_body_s": diff(body_start, running),
        "body_s": body_s,
        "laps": laps,
        "counts": summary.get("counts"),
        "body_end_to_results_s": (None if body_start is None or covered_at is None
                                  or body_s is None
                                  else round(covered_at - body_start - body_s, 3)),
    }
    return row


# --- the flow in this process --------------------------------------------------------------


def inflow_runs(ctx: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """One-image changes classified in this process (no trigger, no new process)."""
    from clearlake.flows.classify import classify_commit

    from tests.pipeline_support import commit_images, photo

    lakefs, stack = ctx["lakefs"], ctx["stack"]
    repo = f"bench-inflow-{secrets.token_hex(3)}"
    lakefs.create_repository(repo)
    seed = ctx["seed"] + 10_000
    rows = []
    for index in range(count + 1):
        commit = commit_images(lakefs, repo, {f"inflow/{index:03d}.jpg": photo(seed + index)},
                               message=f"in-flow image {index}")
        started = time.perf_counter()
        summary = classify_commit(repo, "main", commit=commit, dask_address=stack.dask_address)
        wall = time.perf_counter() - started
        row = {"index": index, "first": index == 0, "status": summary["status"],
               "computed": summary.get("counts", {}).get("computed"),
               "call_s": round(wall, 3), "laps": summary.get("seconds", {}),
               "body_s": round(sum(summary.get("seconds", {}).values()), 3)}
        rows.append(row)
        print(f"  in-flow {index}: {row['status']}, body {row['body_s']:.2f} s, "
              f"call {row['call_s']:.2f} s {row['laps']}", flush=True)
    return rows


# --- fresh-process start-up ------------------------------------------------------------------


def import_times(stack: Any, repeat: int) -> dict[str, Any]:
    """Wall seconds of fresh interpreters: bare, importing Prefect, loading the flow module."""
    from clearlake.config import PROJECT_DIR

    env = {**os.environ, **stack.client_env()}
    probes = {
        "python -c pass": "pass",
        "import prefect": "import prefect",
        "import prefect.engine + clearlake.flows.classify":
            "import prefect.engine, clearlake.flows.classify",
    }
    result: dict[str, Any] = {}
    for label, code in probes.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            cleanup.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, check=True,
                        capture_output=True)
            times.append(time.perf_counter() - started)
        result[label] = stats(times)
    # What loading the flow module costs beyond Prefect's engine: its direct imports.
    done = cleanup.run([sys.executable, "-X", "importtime", "-c",
                        "import prefect.engine; import clearlake.flows.classify"], cwd=PROJECT_DIR,
                       env=env, check=True, capture_output=True, text=True)
    children: list[tuple[str, float]] = []
    tops: dict[str, dict[str, Any]] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name, seconds = parts[2].rstrip(), int(parts[1]) / 1e6
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth == 1:
            children.append((name.strip(), seconds))
        elif depth == 0:  # a top-level import closes the list of its children
            tops[name.strip()] = {"cumulative_s": seconds, "children_s": dict(
                sorted(children, key=lambda kv: -kv[1])[:8])}
            children = []
    result["importtime"] = {k: tops[k] for k in ("prefect.engine", "clearlake.flows.classify")
                            if k in tops}
    return result


# --- report --------------------------------------------------------------------------------


def fmt(value: float | None, width: int = 6) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def print_report(result: dict[str, Any]) -> None:
    rows = [r for r in result["commits"] if "error" not in r]
    print()
    print(f"{'#':>3} {'load':>5} {'trig':>6} {'res':>6} | {'→evt':>6} {'→run':>6} "
          f"{'→pend':>6} {'→runn':>6} | {'→body':>6} {'body':>6} {'→res':>6}")
    for r in rows:
        print(f"{r['index']:>3} {r['load1']:5.2f} {fmt(r['trigger_s'])} {fmt(r['results_s'])} | "
              f"{fmt(r['to_event_s'])} {fmt(r['event_to_run_created_s'])} "
              f"{fmt(r['created_to_pending_s'])} {fmt(r['pending_to_running_s'])} | "
              f"{fmt(r['running_to_body_s'])} {fmt(r['body_s'])} "
              f"{fmt(r['body_end_to_results_s'])}")
    for r in result["commits"]:
        if "error" in r:
            print(f"{r['index']:>3} {r['error']}")
    print()
    s = result["summary"]
    print(f"{'seconds':<46} {'median':>7} {'p95':>7} {'min':>7} {'max':>7}")
    for key, label in [
        ("trigger_s", "commit → Running (server state time)"),
        ("trigger_polled_s", "commit → Running (seen by polling)"),
        ("results_s", "commit → results cover it (by its own run)"),
        ("results_any_s", "commit → results cover it (any run)"),
        ("to_event_s", "  commit → event received (hook + bridge)"),
        ("event_to_run_created_s", "  event → flow run created (automation)"),
        ("created_to_pending_s", "  created → Pending (worker poll + submit)"),
        ("pending_to_running_s", "  Pending → Running (run process starts, loads)"),
        ("pending_to_pull_step_s", "    of which Pending → pull step log"),
        ("running_to_body_s", "  Running → flow body (branch lock)"),
        ("body_s", "  flow body (plan … write_back)"),
        ("body_end_to_results_s", "  body end → results seen"),
        ("lakectl_commit_s", "  (lakectl commit itself)"),
    ]:
        v = s[key]
        print(f"{label:<46} {fmt(v['median'], 7)} {fmt(v['p95'], 7)} {fmt(v['min'], 7)} "
              f"{fmt(v['max'], 7)}")
    for index, name in s["covered_by_another_run"]:
        print(f"commit {index} was covered first by a run of {name!r} (not in 'own run' rows)")
    laps = s.get("laps_median", {})
    if laps:
        print("triggered body phases, median s: "
              + ", ".join(f"{k} {v:.3f}" for k, v in laps.items()))
    trig = s["trigger_s"]["median"]
    if trig is not None:
        verdict = "met" if trig <= TARGET_TRIGGER_MEDIAN_S else "NOT met"
        print(f"target trigger median ≤ {TARGET_TRIGGER_MEDIAN_S:.0f} s: {verdict}")
    shares = s.get("shares_of_results")
    if shares:
        print("share of commit → results (medians): "
              + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    inflow = result.get("inflow", {}).get("summary")
    if inflow:
        print(f"in-flow one-image change (this process, {inflow['body_s']['n']} runs): body "
              f"median {inflow['body_s']['median']:.2f} s "
              f"({inflow['body_s']['median'] / SEED_MAKE_ONE_IMAGE_S:.2f} × the seed's Make "
              f"0.57 s, quoted), flow call median {inflow['call_s']['median']:.2f} s; phases: "
              + ", ".join(f"{k} {v:.3f}" for k, v in inflow["laps_median"].items()))
    imports = result.get("imports")
    if imports:
        print("fresh process, median s: " + ", ".join(
            f"{k} {v['median']:.2f}" for k, v in imports.items() if isinstance(v, dict)
            and "median" in v))
        for name, entry in imports.get("importtime", {}).items():
            print(f"-X importtime {name} {entry['cumulative_s']:.2f} s, biggest direct imports: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in entry["children_s"].items()))
    load = result["load"]
    print(f"load average (1 min) over the run: min {load['min']:.2f}, median "
          f"{load['median']:.2f}, max {load['max']:.2f} on {result['cores']} cores")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    keys = ["trigger_s", "trigger_polled_s", "results_s", "flow_end_s", "to_event_s",
            "event_to_run_created_s", "created_to_pending_s", "pending_to_running_s",
            "pending_to_pull_step_s", "running_to_body_s", "body_s", "body_end_to_results_s",
            "lakectl_commit_s", "upload_s", "results_any_s"]
    summary: dict[str, Any] = {k: stats([r.get(k) for r in ok]) for k in keys}
    phases = sorted({p for r in ok for p in r["laps"]})
    summary["laps_median"] = {p: round(statistics.median([r["laps"][p] for r in ok
                                                          if p in r["laps"]]), 3)
                              for p in phases}
    results = summary["results_s"]["median"]
    if results:
        parts = {
            "trigger (commit → Pending)": sum(
                summary[k]["median"] or 0.0 for k in
                ("to_event_s", "event_to_run_created_s", "created_to_pending_s")),
            "process start-up (Pending → Running)": summary["pending_to_running_s"]["median"],
            "branch lock (Running → body)": summary["running_to_body_s"]["median"],
            "flow's work (body)": summary["body_s"]["median"],
            "after body (artifacts, state, poll)": summary["body_end_to_results_s"]["median"],
        }
        summary["shares_of_results"] = {k: round((v or 0.0) / results, 3)
                                        for k, v in parts.items()}
    summary["errors"] = len(rows) - len(ok)
    summary["covered_by_another_run"] = [(r["index"], r["covered_by"]) for r in ok
                                         if r["covered_by"] != "this run"]
    return summary


# --- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    stack = make_stack(home)
    result: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)),
                              "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                              "args": vars(args) | {"json": str(args.json)}}
    try:
        start_stack(stack)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
            measure(args, stack, home, result)
    finally:
        with cleanup.deferred():
            try:
                if "prefect.events.worker" in sys.modules:  # events still held, then the server
                    from prefect.events.worker import EventsWorker

                    EventsWorker.drain_all()
            finally:
                stack.down(report=lambda line: None)
    return result


def measure(args: argparse.Namespace, stack: Any, home: Path, result: dict[str, Any]) -> None:
    from clearlake import pipeline
    from clearlake.actions import install_actions, render_actions
    from clearlake.config import lakefs_settings
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import signing_key
    from clearlake.stack.install import lakectl_environment

    lakefs = LakeFS(lakefs_settings(home))
    key = signing_key()
    repo = f"bench-trigger-{secrets.token_hex(3)}"
    lakefs.create_repository(repo)
    settings = lakefs.settings
    env = lakectl_environment(settings.endpoint, settings.access_key_id,
                              settings.secret_access_key.get_secret_value())
    env["HOME"] = str(home)  # no ~/.lakectl.yaml of the developer's
    started = time.monotonic()
    install_actions(lakefs, repo, "main", render_actions(stack.bridge_url))
    wait_until(lambda: pipeline.is_covered(lakefs, repo, "main", key), SETTLE_TIMEOUT_S)
    result["action_commit_covered_s"] = round(time.monotonic() - started, 2)
    print(f"  action files covered after {result['action_commit_covered_s']:.1f} s", flush=True)

    tmp = home / "bench-images"
    tmp.mkdir()
    ctx = {"lakefs": lakefs, "repo": repo, "env": env, "tmp": tmp, "key": key, "stack": stack,
           "seed": secrets.randbits(40)}
    warmup = []
    for index in range(args.warmup):
        row = measure_commit(ctx, 1000 + index, args.poll)
        warmup.append(row)
        print(f"  warm-up: trigger {row.get('trigger_s')} s, results {row.get('results_s')} s",
              flush=True)
    rows = []
    for index in range(args.commits):
        row = measure_commit(ctx, index, args.poll)
        rows.append(row)
        if "error" in row:
            print(f"  commit {index}: {row['error']}", flush=True)
        else:
            print(f"  commit {index}: trigger {row['trigger_s']} s, results {row['results_s']} s"
                  f" (load {row['load1']})", flush=True)
    loads = [r["load1"] for r in rows]
    result.update(repository=repo, warmup=warmup, commits=rows, summary=summarise(rows),
                  load={"min": min(loads), "median": statistics.median(loads),
                        "max": max(loads), "end": os.getloadavg()[0]})
    if args.inflow:
        inflow = inflow_runs(ctx, args.inflow)
        later = [r for r in inflow if not r["first"] and r["status"] == "merged"]
        phases = sorted({p for r in later for p in r["laps"]})
        result["inflow"] = {"runs": inflow, "summary": {
            "body_s": stats([r["body_s"] for r in later]),
            "call_s": stats([r["call_s"] for r in later]),
            "laps_median": {p: round(statistics.median([r["laps"][p] for r in later]), 3)
                            for p in phases},
            "ratio_to_seed_make": (round(statistics.median([r["body_s"] for r in later])
                                         / SEED_MAKE_ONE_IMAGE_S, 3) if later else None),
        } if later else None}
    if args.imports:
        result["imports"] = import_times(stack, args.imports)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=20, help="measured one-image commits")
    parser.add_argument("--warmup", type=int, default=1, help="one-image commits not counted")
    parser.add_argument("--inflow", type=int, default=5,
                        help="one-image changes run in this process (after a first run)")
    parser.add_argument("--imports", type=int, default=3,
                        help="repeats of each fresh-process import probe (0: skip)")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between polls")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    print(f"bench.trigger: {args.commits} commits on {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-trigger-") as tmp:
        result = run(args, Path(tmp))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    cleanup.main(main)
