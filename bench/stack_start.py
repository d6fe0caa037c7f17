"""Benchmark: a cold `clearlake stack up` on the S3 server (default) against the local blockstore.

Run ``python -m bench.stack_start [--repeat K] [--json PATH]``.

Each start is ``python -m clearlake.cli stack up --blockstore B`` in a fresh process,
as a person types it, on a fresh state directory (nothing in it: new secrets, new
lakeFS and Prefect databases, a new S3 data folder) and on loopback ports that were
free a moment before (``free_loopback_ports()``, passed as ``CLEARLAKE_<NAME>_PORT``).
lakeFS is built and the SeaweedFS binary checked beforehand (both cached by clearlake
across state directories, as on any machine after its first start), so a start is
what every later cold start costs. Starts alternate between the two blockstores
(s3, local, then local, s3, …) so that load on the shared machine falls on both.

Reported per blockstore: the median wall time of the command (interpreter start to
exit), when each service reported itself healthy (from the command's own output,
time-stamped as it arrives), and the CPU seconds each service had used when the
command returned (its process tree, from ``/proc``). The ratio is s3's median against
local's. Each stack is stopped with ``clearlake stack down`` afterwards. Nothing is
asserted; the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cleanup
from bench.score import _descendants, _proc_stats

ROOT = Path(__file__).resolve().parent.parent
BLOCKSTORES = ("s3", "local")
_HEALTHY = re.compile(r"^([\w-]+): healthy")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (reaped ones included)."""
    stats = _proc_stats()
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *_descendants(pid, stats)]
    return sum(sum(int(v) for v in stats[p][11:15]) for p in pids if p in stats) / tick


def _environment(home: Path) -> dict[str, str]:
    """This process's environment without any stack's, pointing at `home` and free ports."""
    from clearlake.stack.services import free_loopback_ports, port_variable

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARLAKE_", "PREFECT_", "LAKEFS_"))}
    env.update({port_variable(name): str(port) for name, port in free_loopback_ports().items()})
    env.update(CLEARLAKE_HOME=str(home), COLUMNS="200", NO_COLOR="1")
    return env


def one_start(blockstore: str, home: Path) -> dict[str, Any]:
    """`clearlake stack up --blockstore B` on the fresh state directory `home`, then down."""
    env = _environment(home)
    cli = [sys.executable, "-m", "clearlake.cli", "stack"]
    healthy: dict[str, float] = {}
    output: list[str] = []
    started = time.perf_counter()
    process = subprocess.Popen([*cli, "up", "--blockstore", blockstore], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    cpu = {}
    try:
        for line in process.stdout:
            output.append(line.rstrip())
            if match := _HEALTHY.match(line.strip()):
                healthy[match.group(1)] = time.perf_counter() - started
        status = process.wait()
        wall = time.perf_counter() - started
        for record in sorted((home / "run").glob("*.json")):
            pid = json.loads(record.read_text()).get("pid")  # other files live there too
            if isinstance(pid, int):
                cpu[record.stem] = _tree_cpu(pid)
    finally:
        with cleanup.deferred():
            # Stopped mid-start: the CLI's `up` stops what it started itself, and `down`
            # stops whatever it had recorded by then.
            cleanup.stop_process(process)
            subprocess.run([*cli, "down"], cwd=ROOT, env=env, capture_output=True, check=False)
    result = {"blockstore": blockstore, "wall_s": wall, "status": status,
              "healthy_after_s": healthy, "service_cpu_s": cpu}
    if status != 0:
        result["output"] = output[-30:]
    return result


def benchmark(repeat: int) -> dict[str, Any]:
    """`repeat` cold starts of each blockstore, alternating."""
    from clearlake.stack.install import install_lakefs, verify_seaweedfs

    install_lakefs(report=lambda line: None)
    verify_seaweedfs(report=lambda line: None)
    figures: dict[str, Any] = {"load_before": os.getloadavg(), "repeat": repeat, "starts": []}
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-stack-start-") as tmp:
        for round_ in range(repeat):
            order = BLOCKSTORES if round_ % 2 == 0 else BLOCKSTORES[::-1]
            for blockstore in order:
                start = one_start(blockstore, Path(tmp) / f"{blockstore}-{round_}")
                figures["starts"].append(start)
                print(f"  {blockstore}: {start['wall_s']:.1f} s (exit {start['status']}), load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    figures["load_after"] = os.getloadavg()
    ok = {b: [s for s in figures["starts"] if s["blockstore"] == b and s["status"] == 0]
          for b in BLOCKSTORES}
    figures["median_s"] = {b: statistics.median(s["wall_s"] for s in ok[b])
                           for b in BLOCKSTORES if ok[b]}
    if len(figures["median_s"]) == 2:
        figures["ratio_s3_to_local"] = figures["median_s"]["s3"] / figures["median_s"]["local"]
    return figures


def report(figures: dict[str, Any]) -> None:
    """Print the medians, the ratio and each start's milestones."""
    print(f"\nload average before {figures['load_before'][0]:.1f}, after "
          f"{figures['load_after'][0]:.1f}; {figures['repeat']} cold starts each")
    for start in figures["starts"]:
        milestones = ", ".join(f"{name} {t:.1f}" for name, t in
                               start["healthy_after_s"].items())
        cpu = ", ".join(f"{name} {t:.1f}" for name, t in start["service_cpu_s"].items())
        print(f"{start['blockstore']:>6} {start['wall_s']:6.1f} s  healthy at: {milestones}")
        print(f"{'':>16}CPU s by then: {cpu}")
        if start["status"] != 0:
            print("\n".join(start.get("output", [])))
    for blockstore, median in figures["median_s"].items():
        print(f"median {blockstore}: {median:.1f} s")
    if "ratio_s3_to_local" in figures:
        print(f"RATIO s3 / local: {figures['ratio_s3_to_local']:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold starts per blockstore")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = parser.parse_args(argv)
    figures = benchmark(args.repeat)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    cleanup.main(main)
