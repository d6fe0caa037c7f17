"""Benchmark: the CPU an idle stack takes, with Dask's housekeeping quiet and at Dask's defaults.

Run ``python -m bench.idle_cpu [--rounds K] [--settle S] [--seconds S] [--json PATH]``.

Each round starts two stacks one after the other, in alternating order, each with
``clearlake stack up`` on a fresh state directory and free loopback ports (as
`bench.stack_start` does): one as the stack starts by default (`DASK_QUIET_CONFIG`),
one with Dask's own defaults for those settings, restored through Dask's environment
variables (a user's own `DASK_*` variables win over the stack's). After ``--settle``
seconds it measures, over ``--seconds``, the CPU of each service's process tree (from
``/proc``), then stops the stack. Nothing runs on the stack meanwhile.

Reported per configuration: the median, over the rounds, of each service's share of
one core, and the ratios quiet / defaults for the Dask workers, the scheduler and the
whole stack. Nothing is asserted; the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cleanup
from bench.stack_start import _environment, _tree_cpu

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATIONS = ("quiet", "defaults")


def dask_defaults_environment() -> dict[str, str]:
    """Dask's own defaults for the settings `DASK_QUIET_CONFIG` changes, as variables."""
    import dask
    import distributed  # noqa: F401  (loads distributed's defaults into dask.config)

    from clearlake.config import DASK_QUIET_CONFIG, dask_environment

    defaults: dict[str, Any] = {}
    for source in dask.config.defaults:
        defaults = dask.config.merge(defaults, source)
    return dask_environment({key: dask.config.get(key, config=defaults)
                             for key in DASK_QUIET_CONFIG})


def one_stack(configuration: str, home: Path, settle_s: float, seconds: float) -> dict[str, Any]:
    """Start a stack in `home`, let it settle, measure each service's CPU while idle, stop it."""
    env = _environment(home)
    if configuration == "defaults":
        env.update(dask_defaults_environment())
    cli = [sys.executable, "-m", "clearlake.cli", "stack"]
    try:
        up = subprocess.run([*cli, "up"], cwd=ROOT, env=env, capture_output=True, text=True)
        if up.returncode != 0:
            return {"configuration": configuration, "status": up.returncode,
                    "output": up.stdout[-3000:] + up.stderr[-3000:]}
        time.sleep(settle_s)
        pids = {}
        for record in sorted((home / "run").glob("*.json")):
            pid = json.loads(record.read_text()).get("pid")  # other files live there too
            if isinstance(pid, int):
                pids[record.stem] = pid
        before = {name: _tree_cpu(pid) for name, pid in pids.items()}
        time.sleep(seconds)
        after = {name: _tree_cpu(pid) for name, pid in pids.items()}
    finally:
        with cleanup.deferred():
            subprocess.run([*cli, "down"], cwd=ROOT, env=env, capture_output=True, check=False)
    share = {name: 100 * (after[name] - before[name]) / seconds for name in pids}
    return {"configuration": configuration, "status": 0, "percent_of_a_core": share}


def benchmark(rounds: int, settle_s: float, seconds: float) -> dict[str, Any]:
    """`rounds` pairs of idle stacks, the order alternating."""
    figures: dict[str, Any] = {"load_before": os.getloadavg(), "rounds": rounds,
                               "settle_s": settle_s, "seconds": seconds, "stacks": []}
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-idle-") as tmp:
        for round_ in range(rounds):
            order = CONFIGURATIONS if round_ % 2 == 0 else CONFIGURATIONS[::-1]
            for configuration in order:
                stack = one_stack(configuration, Path(tmp) / f"{configuration}-{round_}",
                                  settle_s, seconds)
                figures["stacks"].append(stack)
                total = sum(stack.get("percent_of_a_core", {}).values())
                print(f"  {configuration}: {total:.1f} % of a core in all (exit "
                      f"{stack['status']}), load {os.getloadavg()[0]:.1f}", flush=True)
    figures["load_after"] = os.getloadavg()
    figures["median_percent"] = {}
    for configuration in CONFIGURATIONS:
        ok = [s["percent_of_a_core"] for s in figures["stacks"]
              if s["configuration"] == configuration and s["status"] == 0]
        if ok:
            services = sorted({name for shares in ok for name in shares})
            medians = {name: statistics.median(s.get(name, 0.0) for s in ok) for name in services}
            medians["all"] = statistics.median(sum(s.values()) for s in ok)
            figures["median_percent"][configuration] = medians
    return figures


def report(figures: dict[str, Any]) -> None:
    """Print each service's median share of a core, and the ratios."""
    medians = figures["median_percent"]
    print(f"\nload average before {figures['load_before'][0]:.1f}, after "
          f"{figures['load_after'][0]:.1f}; {figures['rounds']} rounds, idle "
          f"{figures['seconds']:.0f} s after {figures['settle_s']:.0f} s to settle")
    for stack in figures["stacks"]:
        if stack["status"] != 0:
            print(f"{stack['configuration']} failed:\n{stack['output']}")
    names = [*sorted({name for shares in medians.values() for name in shares} - {"all"}), "all"]
    print(f"{'% of a core (median)':<22}" + "".join(f"{c:>10}" for c in medians))
    for name in names:
        print(f"{name:<22}" + "".join(f"{medians[c].get(name, 0.0):>10.2f}" for c in medians))
    if len(medians) == 2:
        for name in ("dask-workers", "dask-scheduler", "all"):
            quiet, default = medians["quiet"].get(name), medians["defaults"].get(name)
            if quiet is not None and default:
                print(f"RATIO quiet / defaults, {name}: {quiet / default:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="pairs of stacks")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = parser.parse_args(argv)
    figures = benchmark(args.rounds, args.settle, args.seconds)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    cleanup.main(main)
