"""Benchmark: the Dask workers' process settings, each against the setting it replaced.

Run ``python -m bench.worker_env [--images N]``. Two measurements on the same
1024-px JPEGs (``bench.score``'s generator):

1. **malloc.** One fresh process per setting runs ``analyse`` over every image and
   reports its page faults (``ru_minflt``), CPU seconds and peak RSS: Dask's nanny
   default (``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap
   threshold), glibc's defaults, and ``DASK_WORKER_MALLOC_ENV``. Ratios are
   against Dask's default.
2. **OpenCV threads.** Two processes at once (one per core, as the workers run),
   each analysing every image, with OpenCV's default thread count and with one
   thread (``use_one_thread``); the wall time until both finish, ratio against
   the default.

Nothing is asserted; the load average before is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cleanup
from bench.score import make_images
from clearlake.config import DASK_WORKER_MALLOC_ENV

DASK_NANNY_DEFAULT = {"MALLOC_TRIM_THRESHOLD_": "65536"}
MALLOC_SETTINGS = {
    "Dask's nanny default": DASK_NANNY_DEFAULT,
    "glibc defaults": {},
    "DASK_WORKER_MALLOC_ENV": DASK_WORKER_MALLOC_ENV,
}
_MALLOC_VARIABLES = {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"}


def _child(folder: Path, one_thread: bool) -> None:
    """Analyse every image in `folder`; print CPU s, page faults and peak RSS as JSON."""
    from clearlake.quality.analyse import analyse
    from clearlake.quality.score import use_one_thread

    if one_thread:
        use_one_thread()
    paths = sorted(folder.rglob("*.jpg"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    for path in paths:
        analyse(path.read_bytes())
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "system_s": after.ru_stime - before.ru_stime,
        "page_faults": after.ru_minflt - before.ru_minflt,
        "peak_rss_mib": after.ru_maxrss / 1024,
    }))


# Every measuring process started, so that a stopped run stops them too.
_children: list[subprocess.Popen[str]] = []


def _start(folder: Path, env: dict[str, str], one_thread: bool) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARIABLES}
    command = [sys.executable, "-m", "bench.worker_env", "--child", str(folder)]
    with cleanup.deferred():  # recorded before a stop may interrupt
        _children.append(subprocess.Popen([*command, *(["--one-thread"] if one_thread else [])],
                                          env={**base, **env}, stdout=subprocess.PIPE,
                                          text=True))
    return _children[-1]


def _result(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a measuring process failed ({process.returncode})")
    return json.loads(out.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="1024-px JPEGs per process")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one-thread", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.one_thread)
        return
    print(f"bench.worker_env: {args.images} images, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-env-") as tmp:
        try:
            _measure(Path(tmp), args.images)
        finally:
            with cleanup.deferred():
                for process in _children:
                    cleanup.stop_process(process)


def _measure(folder: Path, images: int) -> None:
    """Both measurements on `images` new JPEGs in `folder`; print them."""
    make_images(folder, {1024: images})

    print("\nmalloc, one process each            page faults   CPU s  system s  peak MiB"
          "  CPU ratio")
    reference = None
    for name, env in MALLOC_SETTINGS.items():
        figures = _result(_start(folder, {**env, "OMP_NUM_THREADS": "1"}, one_thread=True))
        reference = reference or figures
        print(f"  {name:<32} {figures['page_faults']:>12,} {figures['cpu_s']:>7.2f} "
              f"{figures['system_s']:>9.2f} {figures['peak_rss_mib']:>9.0f}"
              f"  {figures['cpu_s'] / reference['cpu_s']:>9.2f}")

    print("\nOpenCV threads, two processes at once        wall s  ratio")
    walls = {}
    for label, one_thread in (("OpenCV's default", False), ("one thread", True)):
        started = time.perf_counter()
        pair = [_start(folder, DASK_WORKER_MALLOC_ENV, one_thread) for _ in range(2)]
        for process in pair:
            _result(process)
        walls[label] = time.perf_counter() - started
        print(f"  {label:<40} {walls[label]:>8.2f}  "
              f"{walls[label] / walls[next(iter(walls))]:.2f}")


if __name__ == "__main__":
    cleanup.main(main)
