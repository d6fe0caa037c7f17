"""Benchmark: `clearlake score` against the seed's naive loop, on the same images and cores.

Run ``python -m bench.score`` (or ``python bench/score.py``). By default it times
the commands as a user runs them, end to end (interpreter start, imports, worker
start, the work, the summary), each a subprocess:

* **seed loop** — ``python -m bench.score --seed-loop FOLDER``: the seed's script,
  `cv2.imread` + its three measures in a `multiprocessing.Pool` of one process
  per core (see below);
* **clearlake score** — the ``clearlake score FOLDER`` console script, with an
  empty metrics cache (``CLEARLAKE_CACHE_DIR``), then once more warm; it computes
  the metrics the packaged model reads, as the command does by default
  (``--metrics all``: every built-in metric, as the command did before);

on two folders it writes from the photographs installed packages carry: 320
JPEGs with a long side of 256–1024 px, and 60 of 1–2 MP (``--keep DIR`` keeps
them, as DIR/set0 and DIR/set1). Seed and clearlake
runs alternate (``--repeat`` pairs), so a change in background load hits both
alike; each pair gives one ratio. Then ``clearlake --help``, ``--help-runs``
times: the median wall time, an absolute figure. CPU times are of the process
and the children it waited for (`RUSAGE_CHILDREN`).

``--per-metric`` times, in this process on the same two folders, the CPU per image of
decoding and of each built-in metric (`per_metric_cpu`), no command started.

``--in-process`` runs the older comparison instead: `score_directory` timed
inside the measuring process, without interpreter start-up and imports. It
writes a few hundred JPEGs at about 1024 px and 2048 px (upscaled crops of the
photographs installed packages carry — fine for speed, not for accuracy) into
a temporary folder, then times, each in a fresh Python process:

* **seed**: one process per core (`multiprocessing.Pool`), each image
  `cv2.imread` + the seed's three measures exactly as written (variance of
  the Laplacian, variance of the Sobel derivatives, the complex128 FFT
  high-frequency mean);
* **clearlake cold**: `score_directory` — the function behind `clearlake
  score` — with an empty cache: every file read, hashed, header-checked,
  decoded once, all metrics computed, labelled by the packaged model;
* **clearlake warm**: the same call again over the unchanged folder.

It prints the ratios measured in this run (clearlake time / seed time; the
target is ≤ 0.5 cold), images per second per core, and peak memory: the
measuring process's own peak RSS, and the largest peak RSS of any worker
process (sampled from ``/proc/<pid>/status`` VmHWM, a per-process high-water
mark, because `clearlake` workers are forked by a forkserver that
`RUSAGE_CHILDREN` never sees). Nothing here is asserted: times are reported,
never tested.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from bench import cleanup

SIZES = (1024, 2048)


# --- the seed's loop, as written ---------------------------------------------------


def seed_variance_of_laplacian(grey: np.ndarray) -> float:
    """The seed's blur measure."""
    return cv2.Laplacian(grey, cv2.CV_64F).var()


def seed_sobel_variance(grey: np.ndarray) -> tuple[float, float]:
    """The seed's gradient measures (y, then x)."""
    return cv2.Sobel(grey, cv2.CV_64F, 0, 1).var(), cv2.Sobel(grey, cv2.CV_64F, 1, 0).var()


def seed_detect_blur_fft(grey: np.ndarray, size: int = 60) -> float:
    """The seed's FFT high-frequency mean."""
    (h, w) = grey.shape
    (c_x, c_y) = (int(w / 2.0), int(h / 2.0))
    fft = np.fft.fft2(grey)
    fft_shift = np.fft.fftshift(fft)
    fft_shift[c_y - size : c_y + size, c_x - size : c_x + size] = 0
    fft_shift = np.fft.ifftshift(fft_shift)
    recon = np.fft.ifft2(fft_shift)
    magnitude = 20 * np.log(np.abs(recon))
    return float(np.mean(magnitude))


def seed_measure(path: str) -> tuple[str, float, float, float, float] | None:
    """One image through the seed's pipeline."""
    image = cv2.imread(path)
    if image is None:
        return None
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    sobel_y, sobel_x = seed_sobel_variance(grey)
    return path, seed_variance_of_laplacian(grey), sobel_y, sobel_x, seed_detect_blur_fft(grey)


# --- images --------------------------------------------------------------------------


def _photographs() -> list[np.ndarray]:
    """BGR photographs shipped by installed packages (scikit-learn, scikit-image)."""
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image(name)[..., ::-1] for name in ("china.jpg", "flower.jpg")]
    try:
        import skimage.data
    except ImportError:
        return photos
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        try:
            photo = getattr(skimage.data, name)()
        except (OSError, ValueError):  # a data file this install does not carry
            continue
        photos.append(np.ascontiguousarray(photo[..., :3][..., ::-1]))
    return photos


ScaleRule = Callable[[np.random.Generator, int, int], float]
"""(rng, crop height, crop width) → the scale factor an image is resized by."""


def long_side(side: int) -> ScaleRule:
    """Resize to a long side of exactly `side` px."""
    return lambda rng, h, w: side / max(h, w)


def long_side_between(low: int, high: int) -> ScaleRule:
    """Resize to a long side drawn uniformly from [low, high] px."""
    return lambda rng, h, w: int(rng.integers(low, high + 1)) / max(h, w)


def megapixels_between(low: float, high: float) -> ScaleRule:
    """Resize to a pixel count drawn uniformly from [low, high] MP."""
    return lambda rng, h, w: float(np.sqrt(rng.uniform(low, high) * 1e6 / (h * w)))


def write_images(
    folder: Path,
    count: int,
    scale: ScaleRule,
    seed: int = 0,
    photos: list[np.ndarray] | None = None,
) -> list[Path]:
    """Write distinct JPEGs (quality 90): random crops of real photographs, flipped at
    random, resized by `scale` (INTER_AREA down, INTER_CUBIC up).

    Args:
        folder: destination (created).
        count: how many.
        scale: the resize rule.
        seed: RNG seed (the set is reproducible).
        photos: the source photographs (default: `_photographs()`).

    Returns:
        The paths written.
    """
    rng = np.random.default_rng(seed)
    photos = photos if photos is not None else _photographs()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        factor = scale(rng, ch, cw)
        size = (max(1, round(cw * factor)), max(1, round(ch * factor)))
        method = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(np.ascontiguousarray(crop), size, interpolation=method)
        path = folder / f"img{index:04d}.jpg"
        cv2.imwrite(str(path), resized, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def make_images(folder: Path, per_size: dict[int, int], seed: int = 0) -> list[Path]:
    """Write distinct JPEGs upscaled to each long side, in one subfolder per side.

    Args:
        folder: destination.
        per_size: ``{long side in px: number of images}``.
        seed: RNG seed (the set is reproducible).

    Returns:
        The paths written.
    """
    photos = _photographs()
    return [
        path
        for offset, (side, count) in enumerate(per_size.items())
        for path in write_images(folder / f"{side}", count, long_side(side), seed + offset, photos)
    ]


# --- memory and CPU of the process tree ----------------------------------------------------


class Descendants:
    """Samples every descendant process in the background: peak RSS and CPU time.

    Reads ``/proc/<pid>/status`` (VmHWM, a per-process high-water mark) and
    ``/proc/<pid>/stat`` (utime + stime). A process's last sample is at most
    `interval` before it exits, so its CPU time may be short by that much.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Descendants:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_kib(self) -> int:
        """The largest peak RSS of any descendant seen, in KiB."""
        return max(self.peaks.values(), default=0)

    @property
    def cpu_seconds(self) -> float:
        """CPU time (user + system) of all descendants seen."""
        return sum(self.cpu.values())

    def _loop(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                self._sample()
                return

    def _sample(self) -> None:
        stats = _proc_stats()
        for pid in _descendants(os.getpid(), stats):
            fields = stats[pid]
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick
            peak = _vm_hwm_kib(pid)
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0))


def _proc_stats() -> dict[int, list[bytes]]:
    """``/proc/<pid>/stat`` fields after the command name, for every process."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stats[int(entry)] = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
    return stats


def _descendants(root: int, stats: dict[int, list[bytes]]) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, fields in stats.items() if int(fields[1]) == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- one measurement per fresh process -------------------------------------------------


def _measure(kind: str, folder: Path, cache: Path, jobs: int) -> dict[str, float]:
    """Time one kind of run in this process; report wall and CPU time and memory."""
    if kind == "seed":
        paths = sorted(str(p) for p in folder.rglob("*.jpg"))
        with Descendants() as tree:
            cpu_before = time.process_time()
            started = time.perf_counter()
            with multiprocessing.Pool(processes=jobs) as pool:
                results = pool.map(seed_measure, paths, chunksize=4)
                pool.close()
                pool.join()
            seconds = time.perf_counter() - started
        images = sum(1 for r in results if r is not None)
        computed = images
    else:
        from clearlake.quality.score import score_directory

        model = _default_model()
        with Descendants() as tree:
            cpu_before = time.process_time()
            started = time.perf_counter()
            result = score_directory(folder, model=model, jobs=jobs, cache_dir=cache)
            seconds = time.perf_counter() - started
        images = len(result.records)
        computed = result.computed
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Reaped children (the seed's Pool) are exact in RUSAGE_CHILDREN; forkserver
    # workers are not reaped by this process, so only the sampling sees them.
    children_cpu = children.ru_utime + children.ru_stime
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_before + max(children_cpu, tree.cpu_seconds),
        "images": images,
        "computed": computed,
        "parent_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mib": max(tree.max_kib, children.ru_maxrss) / 1024,
    }


def _default_model() -> object | None:
    """The packaged model, or None (with a note) when this checkout has none yet."""
    try:
        from clearlake.quality.classifier import Model, ModelError
    except ImportError as exc:
        print(f"(no classifier module, labels skipped: {exc})", file=sys.stderr)
        return None
    try:
        return Model.load(None)
    except ModelError as exc:
        print(f"(no packaged model, labels skipped: {exc})", file=sys.stderr)
        return None


def _run_fresh(kind: str, folder: Path, cache: Path, jobs: int) -> dict[str, float]:
    """Run `_measure` in a fresh interpreter, so memory and imports do not mix between runs."""
    command = [
        sys.executable,
        "-m",
        "bench.score",
        "--measure",
        kind,
        "--folder",
        str(folder),
        "--cache",
        str(cache),
        "--jobs",
        str(jobs),
    ]
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = cleanup.run(command, capture_output=True, text=True, cwd=root, env=env)
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the {kind} run failed (exit status {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the commands, end to end --------------------------------------------------------


def seed_loop(folder: Path, jobs: int) -> int:
    """The seed's script: every JPEG under `folder` through `seed_measure`, one process
    per core. Returns the number of images measured."""
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    with multiprocessing.Pool(processes=jobs) as pool:
        results = pool.map(seed_measure, paths, chunksize=4)
    return sum(1 for r in results if r is not None)


def clearlake_command() -> list[str]:
    """The `clearlake` console script of this environment (as a user runs it)."""
    script = Path(sys.executable).with_name("clearlake")
    return [str(script)] if script.exists() else [sys.executable, "-m", "clearlake.cli"]


def timed(command: Sequence[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command to its end: its wall time, and its CPU time with the children it reaped."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = cleanup.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu}


def _row(label: str, run: dict[str, float], seed: dict[str, float], load: float) -> str:
    return (f"{label:<24}{run['seconds']:>8.2f}{run['cpu_seconds']:>8.2f}"
            f"{run['seconds'] / seed['seconds']:>12.3f}"
            f"{run['cpu_seconds'] / seed['cpu_seconds']:>11.3f}{load:>6.1f}")


def image_sets(small: int, large: int) -> dict[str, tuple[int, ScaleRule, float]]:
    """The two folders `clearlake score` is measured on: {name: (count, size rule, target
    wall ratio)}, written with seeds 0 and 1 in this order."""
    return {
        "small (long side 256-1024 px)": (small, long_side_between(256, 1024), 0.7),
        "1-2 MP": (large, megapixels_between(1.0, 2.0), 0.4),
    }


def per_metric_cpu(args: argparse.Namespace) -> None:
    """CPU per image of decoding and of each metric `--metrics` names, over the two folders.

    In this process, one OpenCV/BLAS thread, the metrics within `sharing` in computing
    order (as `clearlake score` computes them): a metric's time includes the shared
    intermediates it is the first to need. `--repeat` passes over each folder after a
    first, uncounted one; the mean per image is printed.
    """
    from clearlake.quality import decode as decoding
    from clearlake.quality import metrics
    from clearlake.quality.classifier import Model
    from clearlake.quality.memory import keep_freed_memory
    from clearlake.quality.score import metrics_to_compute, use_one_thread

    use_one_thread()
    keep_freed_memory()
    chosen = [(m.name, m.function) for m in metrics_to_compute(Model.load(None), args.metrics)]
    names = ["decode", *(name for name, _ in chosen)]
    columns = {}
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-") as tmp:
        photos = _photographs()
        for number, (name, (count, scale, _)) in enumerate(
                image_sets(args.small, args.large).items()):
            paths = write_images((args.keep or Path(tmp)) / f"set{number}", count, scale,
                                 seed=number, photos=photos)
            blobs = [p.read_bytes() for p in paths]
            spent = dict.fromkeys(names, 0.0)
            for counted in [False] + [True] * args.repeat:
                for data in blobs:
                    started = time.process_time()
                    image = decoding.decode(data).image
                    took = {"decode": time.process_time() - started}
                    with metrics.sharing(image):
                        for metric, function in chosen:
                            started = time.process_time()
                            function(image)
                            took[metric] = time.process_time() - started
                    if counted:
                        for key, seconds in took.items():
                            spent[key] += seconds
            columns[name] = {key: 1000 * seconds / (len(blobs) * args.repeat)
                             for key, seconds in spent.items()}
    print(f"CPU ms per image (mean of {args.repeat} passes; load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    print(f"{'':<24}" + "".join(f"{name.split(' (')[0]:>10}" for name in columns))
    for key in [*names, "total"]:
        cells = (sum(column.values()) if key == "total" else column[key]
                 for column in columns.values())
        print(f"{key:<24}" + "".join(f"{cell:>10.2f}" for cell in cells))


def compare_commands(args: argparse.Namespace, jobs: int) -> None:
    """`clearlake score` and the seed's script on two folders, then `clearlake --help`."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    seed_command = [sys.executable, "-m", "bench.score", "--jobs", str(jobs), "--seed-loop"]
    score_command = [*clearlake_command(), "score", "--jobs", str(jobs), "--metrics", args.metrics]
    sets = image_sets(args.small, args.large)
    print(f"{jobs} cores; OpenCV {cv2.__version__}, NumPy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-") as tmp:
        photos = _photographs()
        for number, (name, (count, scale, target)) in enumerate(sets.items()):
            folder = (args.keep or Path(tmp)) / f"set{number}"
            if folder.exists() and any(folder.iterdir()):
                raise SystemExit(f"{folder} is not empty: give --keep a new folder")
            paths = write_images(folder, count, scale, seed=number, photos=photos)
            shapes = sorted(cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape for p in paths)
            sides = sorted(8 * max(shape) for shape in shapes)
            megabytes = sum(p.stat().st_size for p in paths) / 1e6
            print(f"\n{name}: {len(paths)} JPEGs, {megabytes:.0f} MB, long side "
                  f"~{sides[0]}-{sides[-1]} px (median ~{sides[len(sides) // 2]})")
            print(f"{'run':<24}{'wall s':>8}{'CPU s':>8}{'wall ratio':>12}{'CPU ratio':>11}"
                  f"{'load':>6}")
            ratios = []
            for attempt in range(args.repeat):
                cache = Path(tmp) / f"cache{number}-{attempt}"  # empty: a cold run
                cache_env = {**env, "CLEARLAKE_CACHE_DIR": str(cache)}
                seed = timed([*seed_command, str(folder)], env)
                cold = timed([*score_command, str(folder)], cache_env)
                ratios.append(cold["seconds"] / seed["seconds"])
                load = os.getloadavg()[0]
                print(_row("seed loop", seed, seed, load))
                print(_row("clearlake score, cold", cold, seed, load))
            warm = timed([*score_command, str(folder)], cache_env)
            print(_row("clearlake score, warm", warm, seed, os.getloadavg()[0]))
            ratio = statistics.median(ratios)
            verdicts.append(
                f"clearlake score / seed loop, {name}: wall ratio "
                f"{', '.join(f'{r:.3f}' for r in ratios)} (median {ratio:.3f}; "
                f"target <= {target}: {'met' if ratio <= target else 'MISSED'})")
    helps = [timed([*clearlake_command(), "--help"]) for _ in range(args.help_runs)]
    wall = statistics.median(h["seconds"] for h in helps)
    cpu = statistics.median(h["cpu_seconds"] for h in helps)
    print()
    for line in verdicts:
        print(line)
    print(f"clearlake --help: median {wall:.3f} s wall, {cpu:.3f} s CPU over {args.help_runs} "
          f"runs (target < 0.3 s: {'met' if wall < 0.3 else 'MISSED'}); "
          f"load average {os.getloadavg()[0]:.1f} at the end")


def main(argv: list[str] | None = None) -> None:
    """The commands end to end (default), or the older in-process comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="cores to use (default: all)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="seed/clearlake pairs, interleaved (default: 2; --in-process: 3)")
    parser.add_argument("--small", type=int, default=320,
                        help="JPEGs with a long side of 256-1024 px")
    parser.add_argument("--large", type=int, default=60, help="JPEGs of 1-2 MP")
    parser.add_argument("--metrics", default="model",
                        help="`clearlake score --metrics`: model (its default: the seven the "
                             "packaged model reads), all, or names")
    parser.add_argument("--help-runs", type=int, default=9, help="runs of `clearlake --help`")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write the two folders to DIR/set0 and DIR/set1 and keep them "
                             "(to profile `clearlake score` on the same images)")
    parser.add_argument("--per-metric", action="store_true",
                        help="CPU per image of decoding and of each metric, in this process")
    parser.add_argument("--in-process", action="store_true",
                        help="the older comparison: score_directory timed in-process")
    parser.add_argument("--n1024", type=int, default=200, help="--in-process: images at ~1024 px")
    parser.add_argument("--n2048", type=int, default=100, help="--in-process: images at ~2048 px")
    parser.add_argument("--seed-loop", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("seed", "cold", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jobs = args.jobs or len(os.sched_getaffinity(0))

    if args.seed_loop:
        print(seed_loop(args.seed_loop, jobs))
        return
    if args.measure:
        print(json.dumps(_measure(args.measure, args.folder, args.cache, jobs)))
        return
    if args.per_metric:
        args.repeat = args.repeat or 3
        per_metric_cpu(args)
        return
    if not args.in_process:
        args.repeat = args.repeat or 2
        compare_commands(args, jobs)
        return
    args.repeat = args.repeat or 3

    runs: dict[str, list[dict[str, float]]] = {"seed loop": [], "clearlake cold": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-") as tmp:
        folder = Path(tmp) / "images"
        started = time.perf_counter()
        paths = make_images(folder, {1024: args.n1024, 2048: args.n2048})
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"{len(paths)} JPEGs ({args.n1024} at ~1024 px, {args.n2048} at ~2048 px, "
            f"{total_mb:.0f} MB) written in {time.perf_counter() - started:.1f} s; "
            f"{jobs} cores; OpenCV {cv2.__version__}, NumPy {np.__version__}; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
        )
        # Interleaved, so that a change in background load hits both alike.
        for attempt in range(args.repeat):
            cache = Path(tmp) / f"cache{attempt}"  # empty: a cold run
            runs["seed loop"].append(_run_fresh("seed", folder, cache, jobs))
            runs["clearlake cold"].append(_run_fresh("cold", folder, cache, jobs))
        runs["clearlake warm"] = [_run_fresh("warm", folder, cache, jobs)]
    load_after = os.getloadavg()[0]

    best = {name: min(results, key=lambda r: r["seconds"]) for name, results in runs.items()}
    seed_wall = best["seed loop"]["seconds"]
    seed_cpu = best["seed loop"]["cpu_seconds"]
    print(
        f"\nbest of {args.repeat} interleaved runs (warm: 1); load average "
        f"{load_before:.1f} before, {load_after:.1f} after\n"
    )
    print(
        f"{'run':<16}{'wall s':>8}{'CPU s':>8}{'images':>8}{'measured':>10}{'img/s/core':>12}"
        f"{'wall ratio':>12}{'CPU ratio':>11}{'parent MiB':>12}{'worker MiB':>12}"
    )
    for name, run in best.items():
        print(
            f"{name:<16}{run['seconds']:>8.2f}{run['cpu_seconds']:>8.2f}{run['images']:>8.0f}"
            f"{run['computed']:>10.0f}{run['images'] / run['seconds'] / jobs:>12.2f}"
            f"{run['seconds'] / seed_wall:>12.3f}{run['cpu_seconds'] / seed_cpu:>11.3f}"
            f"{run['parent_peak_mib']:>12.0f}{run['worker_peak_mib']:>12.0f}"
        )
    walls = {name: [round(r["seconds"], 2) for r in results] for name, results in runs.items()}
    print(f"\nall wall times (s): {walls}")
    print(
        f"cold ratio (clearlake / seed, wall): {best['clearlake cold']['seconds'] / seed_wall:.3f}"
        f"   warm ratio: {best['clearlake warm']['seconds'] / seed_wall:.4f}"
        "   (target: cold ≤ 0.5)"
    )


if __name__ == "__main__":
    cleanup.main(main)
