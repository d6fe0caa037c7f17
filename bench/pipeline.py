"""Benchmark: the classify-commit flow (lakeFS + Prefect + Dask) against a plain process pool.

Run ``python -m bench.pipeline [--images N] [--incremental-base N] [--blockstore s3|local|both]
[--json PATH]``, or ``python -m bench.pipeline --flat 10000,100000`` for the flatness run
(item 8). Everything runs on a stack this benchmark starts itself (the S3 server,
lakeFS and a Prefect server on free loopback ports, state in a temporary folder) and
stops after. ``--blockstore`` picks the stack's profile: ``s3`` (the default stack:
lakeFS over the S3 blockstore of the stack's own SeaweedFS, images read through
presigned URLs), ``local`` (lakeFS's local blockstore, images read through lakeFS's
object API) or ``both``: the same images on ``s3`` and then on ``local``, each on a
stack of its own with its own baselines and ratio, so the default's cost is visible
side by side.

Method, in one run:

1. **Images.** N distinct JPEGs of 1024 × 768 px (quality 90) are written to a
   local temporary folder: crops of the photographs scikit-learn and
   scikit-image install, upscaled once to a long side of 1536 px, each image at a
   different (photograph, offset, mirror) position — so no two share bytes
   (checked by SHA-256). Upscaled photographs are fine for speed, not for accuracy.
2. **Baseline.** A fresh Python process runs a plain ``multiprocessing.Pool``
   with one process per core over the same files on local disk, each image
   ``analyse(path.read_bytes())`` — the per-image work the pipeline does (hash,
   decode once, every metric) — with nothing else: no lakeFS, no Prefect, no
   Dask, no labels, no results. Its time includes the pool's start-up. It runs
   before and after the full run; ratios use the faster of the two (the
   pipeline's ratio is then, if anything, overstated).
3. **Upload** of the N images to a fresh lakeFS repository and one commit:
   timed, reported apart (it is the user's commit, not the pipeline's work).
4. **Full run.** A Dask ``LocalCluster`` (one single-threaded worker process
   per core, on 127.0.0.1, set up like the stack's long-lived workers: the flow's
   code preloaded and ``DASK_WORKER_MALLOC_ENV``; its start-up reported as a fixed
   cost) and
   ``clearlake classify REPO main --dask-address ADDR`` in a fresh process, as a
   user would run it, with a metrics store that has never seen the images. The
   **run time** is the flow run's own start → end as the Prefect server recorded
   it: from the flow's start until the results merge has returned. The process's
   wall time (interpreter start, imports, flow-run creation) is reported next to
   it. The ratio is run time / baseline time. Fixed costs are reported apart:
   the cluster's start-up, a client's connection to it, the gap between the
   flow's start and its first batch starting on a worker (planning, task
   runner set-up and connection, as the flow sees it), the flow's own phase
   seconds (plan, measure, store, label, write_back), the lakeFS steps of its two
   transactions (results and metrics store: temporary branch, waiting for the last
   uploads, commit, merge), and an **empty run** — a commit that adds a text file
   and changes no image.
5. **Batch size.** The full measurement for each of ``--batch-sizes`` on the
   first ``--sweep-images`` images (a branch per run, a fresh metrics store per
   run, so every run measures everything), against a baseline of the same
   images measured just before and after; the fastest is reported and
   recommended.
6. **Incremental.** In a repository of ``--incremental-base`` images that has
   been processed (by default the full run's), 10 images are replaced with new
   bytes and committed, and the flow runs. Its time is reported, and the proof
   that it read only those 10: the summary's counts, and every API request
   lakeFS served during the run, counted from its own request log. lakeFS logs
   each request ("HTTP call ended", with method and path) at its
   ``logging.audit_log_level``, DEBUG by default, below its default INFO level;
   this benchmark starts lakeFS with ``LAKEFS_LOGGING_AUDIT_LOG_LEVEL=INFO`` in
   its environment so those lines reach ``logs/lakefs.log`` (no file of the
   project changes). Object reads are ``GET …/refs/{ref}/objects?path=…``.
7. **CPU and requests.** Every run reports the CPU seconds it cost each process: the
   Dask workers, the flow process, lakeFS, the S3 server (``weed mini``, the stack's
   ``s3`` service, with its process tree), the Prefect server, and this process with
   the Dask scheduler. Requests per new image: every API request lakeFS logged during
   the run, and every request the S3 server counted (its Prometheus counters, served
   on ``weed mini``'s admin port with no extra flag: ``bench/s3_metrics.py``), each
   divided by the images computed. The summary's ``read_path`` ('presigned' or
   'object-api') is reported. With presigned reads lakeFS's log no longer names the
   images read (it shows listing pages with ``presign=true``, and a ``stat_object``
   with ``presign=true`` per path presigned one by one), and the S3 server's counters
   do not name objects: the proof that an incremental run read exactly the changed
   images is then that lakeFS served no image itself, that the S3 server's GETs not
   caused by lakeFS's object API (each object-API GET is one GET of lakeFS from the S3
   server) number the changed images, and that any path presigned one by one is one
   of them.
8. **Flatness** (``--flat SIZES``, instead of items 2–7). Repositories of each size
   are built from ``--flat-distinct`` distinct 64 × 48 px JPEGs, repeated: the
   distinct ones are committed and processed once in a seed repository (the metrics
   store then knows them by lakeFS checksum), the base objects are put straight into
   the S3 server (outside every repository's namespace, a minimal SigV4 client on 8
   threads) and each repository gets them in one lakeFS import (zero-copy, one
   commit), processed by one run (``--flat-setup-batch-size``; every image reused,
   none read). Then the incremental run, 10 images spread over the repository
   replaced by new 1024-px JPEGs, runs ``--flat-repeat`` times at each size,
   interleaved; the median at each size is reported with its ratio to the smallest
   size's, and each run's proof that it read exactly the 10.
9. **Memory.** The flow process's peak RSS is its ``VmHWM``, sampled every
   20 ms while it runs. Each Dask worker's peak is ``VmHWM`` in
   ``/proc/<pid>/status``, reset before every run (writing 5 to
   ``/proc/<pid>/clear_refs``), so each run reports its own peak. Compare the
   full run with the batch-size runs on fewer images: the peaks must not grow
   with the repository.

It prints one table of all figures and, with ``--json PATH``, writes them as
JSON. Nothing is asserted: times are reported, never tested. The load average
before and after is printed, because other work on the machine adds noise.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import cleanup
from bench.s3_metrics import S3Metrics, S3Uploader, difference
from bench.score import _descendants, _photographs, _proc_stats, _vm_hwm_kib

ROOT = Path(__file__).resolve().parent.parent
IMAGE_PREFIX = "images/"
CROP_H, CROP_W = 768, 1024
CANVAS_SIDE = 1536
CHANGED = 10
DEFAULT_BATCH_SIZES = (64, 128, 256, 512)
# The Prefect server refuses flow-run parameters over 512 KiB, and the measuring
# subflow takes every datum as a parameter (~90 bytes each): ~5,700 images at most.
SETUP_FIRST = 4000
# `LakeFS.diff` fails on its second page (1,000 entries): keep later commits below.
SETUP_LATER = 900
REQUEST_LOG_ENV = "LAKEFS_LOGGING_AUDIT_LOG_LEVEL"
# The flatness run's base images: small, few distinct ones repeated, put straight into
# the S3 server under FLAT_SOURCE and imported by lakeFS (zero-copy).
SMALL_W, SMALL_H = 64, 48
FLAT_SOURCE = "bench-flat-source"
FLAT_METRICS = "bench-metrics-flat"


# --- images ------------------------------------------------------------------------------

_canvases: list[np.ndarray] = []
_orders: dict[int, np.ndarray] = {}


def _init_generator() -> None:
    """Pool initializer: the photographs, upscaled once to a long side of 1536 px."""
    cv2.setNumThreads(1)
    for photo in _photographs():
        h, w = photo.shape[:2]
        scale = CANVAS_SIDE / max(h, w)
        canvas = cv2.resize(photo, (round(w * scale), round(h * scale)),
                            interpolation=cv2.INTER_CUBIC)
        if canvas.shape[0] >= CROP_H and canvas.shape[1] >= CROP_W:
            _canvases.append(canvas)


def _write_image(job: tuple[int, str]) -> str:
    """Write image number `index`: a crop at a position no other index uses; return its SHA-256.

    Index k takes photograph k mod P and the (k div P)-th entry of a fixed random
    order of that photograph's (y, x, mirrored) positions, so indices never collide.
    """
    index, path = job
    ok, buffer = cv2.imencode(".jpg", _crop(index), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"could not encode image {index}")
    data = buffer.tobytes()
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _crop(index: int) -> np.ndarray:
    """Image number `index` (see `_write_image`), decoded."""
    photo = index % len(_canvases)
    canvas = _canvases[photo]
    ny, nx = canvas.shape[0] - CROP_H + 1, canvas.shape[1] - CROP_W + 1
    if photo not in _orders:
        _orders[photo] = np.random.default_rng(photo).permutation(ny * nx * 2)
    position = int(_orders[photo][index // len(_canvases)])
    mirrored, position = position % 2, position // 2
    y, x = divmod(position, nx)
    crop = canvas[y : y + CROP_H, x : x + CROP_W]
    if mirrored:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def small_jpegs(count: int) -> list[bytes]:
    """`count` distinct small JPEGs (`SMALL_W` × `SMALL_H`): images 0… shrunk, quality 90."""
    if not _canvases:
        _init_generator()
    found: dict[str, bytes] = {}
    index = 0
    while len(found) < count:
        small = cv2.resize(_crop(index), (SMALL_W, SMALL_H), interpolation=cv2.INTER_AREA)
        ok, buffer = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"could not encode small image {index}")
        found.setdefault(hashlib.sha256(buffer).hexdigest(), buffer.tobytes())
        index += 1
    return list(found.values())


def make_images(folder: Path, indices: range, jobs: int) -> list[Path]:
    """Write the images numbered `indices` into `folder` in parallel; check they are distinct."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:05d}.jpg" for i in indices]
    with multiprocessing.Pool(jobs, initializer=_init_generator) as pool:
        digests = pool.map(_write_image, zip(indices, map(str, paths), strict=True), chunksize=16)
        pool.close()
        pool.join()
    if len(set(digests)) != len(digests):
        raise SystemExit(f"{len(digests) - len(set(digests))} generated images share bytes")
    return paths


# --- baseline: a plain process pool over local files ---------------------------------------


def _analyse_file(path: str) -> str:
    """The pipeline's per-image work on a local file; returns the outcome."""
    from clearlake.quality.analyse import analyse

    return str(analyse(Path(path).read_bytes()).outcome)


def _baseline(paths: list[str], jobs: int) -> dict[str, Any]:
    """Time `multiprocessing.Pool(jobs)` over `paths` (in this, a fresh, process)."""
    import clearlake.quality.analyse  # noqa: F401  (imported before the clock starts, as in the flow)

    started = time.perf_counter()
    with multiprocessing.Pool(processes=jobs) as pool:
        outcomes = pool.map(_analyse_file, paths, chunksize=4)
        pool.close()
        pool.join()
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "images": len(outcomes),
        "outcomes": dict(Counter(outcomes)),
        "cpu_seconds": children.ru_utime + children.ru_stime,
        "worker_peak_mib": children.ru_maxrss / 1024,
    }


def run_baseline(paths: list[Path], jobs: int, scratch: Path) -> dict[str, Any]:
    """`_baseline` in a fresh interpreter, so that nothing of this process leaks into it."""
    listing = scratch / f"baseline-{time.monotonic_ns()}.json"
    listing.write_text(json.dumps([str(p) for p in paths]))
    done = cleanup.run(
        [sys.executable, "-m", "bench.pipeline", "--baseline-child", str(listing),
         "--jobs", str(jobs)],
        capture_output=True, text=True, cwd=ROOT, env=_env_with_root(os.environ),
    )
    if done.returncode != 0:
        raise SystemExit(f"the baseline failed (exit status {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the stack, the cluster, the runs ---------------------------------------------------------


def _env_with_root(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                               env.get("PYTHONPATH")]))}


def _set_environ(name: str, value: str) -> None:
    """Run on each Dask worker: the metrics store is chosen per run by environment."""
    os.environ[name] = value


def _opencv_threads() -> int:
    return cv2.getNumThreads()


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of `pids` and all their descendants, reaped ones included."""
    stats = _proc_stats()
    tick = os.sysconf("SC_CLK_TCK")
    seen = set()
    for pid in pids:
        seen |= {pid, *_descendants(pid, stats)}
    return sum(sum(int(v) for v in stats[p][11:15]) for p in seen if p in stats) / tick


def _reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Bench:
    """The running stack, the Dask cluster and what every run needs to know."""

    def __init__(self, home: Path, scratch: Path, jobs: int, prefix: str,
                 blockstore: str = "s3") -> None:
        self.home = home
        self.prefix = prefix
        self.scratch = scratch
        self.jobs = jobs
        self.blockstore = blockstore
        self.stack: Any = None
        self.cluster: Any = None
        self.client: Any = None
        self.lakefs: Any = None
        self.s3_metrics: S3Metrics | None = None
        self.worker_pids: list[int] = []
        self.fixed: dict[str, float] = {}
        self.peaks_reset = True
        self.service_pids: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def up(self) -> None:
        from clearlake.stack.install import install_lakefs
        from clearlake.stack.services import Stack, free_loopback_ports

        install_lakefs(report=lambda line: None)
        # Every API request lakeFS serves is logged at INFO (counted for the incremental run).
        os.environ[REQUEST_LOG_ENV] = "INFO"
        self.stack = Stack(home=self.home, ports=free_loopback_ports(),
                           blockstore=self.blockstore)
        # Whatever else the stack starts besides lakeFS and Prefect stays idle: this
        # benchmark deploys nothing (no trigger can start a run) and brings its own cluster.
        options = {"deploy": False} if "deploy" in inspect.signature(Stack.up).parameters else {}
        started = time.perf_counter()
        self.stack.up(report=lambda line: None, **options)
        self.fixed["stack_up_s"] = time.perf_counter() - started
        # Read by this process, the flow processes and (inherited) the Dask workers.
        os.environ["CLEARLAKE_HOME"] = str(self.home)
        os.environ["PREFECT_API_URL"] = self.stack.prefect_api_url
        os.environ["PYTHONPATH"] = _env_with_root(os.environ)["PYTHONPATH"]
        from clearlake.config import lakefs_settings
        from clearlake.lakefs import LakeFS

        self.lakefs = LakeFS(lakefs_settings(self.home))
        self.service_pids = {s.name: s.pid for s in self.stack.status()
                             if s.pid and s.name in ("lakefs", "s3", "prefect")}
        if "s3" in self.service_pids:
            self.s3_metrics = S3Metrics(self.stack.ports["s3"])

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the workers, lakeFS, the S3 server, the Prefect server and
        this process."""
        return {"workers": _tree_cpu(self.worker_pids),
                **{name: _tree_cpu([pid]) for name, pid in self.service_pids.items()},
                "scheduler+bench": time.process_time()}

    def s3_snapshot(self) -> dict[str, float] | None:
        """The S3 server's request counters now (None without an S3 server)."""
        return self.s3_metrics.snapshot() if self.s3_metrics else None

    def start_cluster(self) -> None:
        """Workers set up as the stack's long-lived ones: the flow's code preloaded and
        `DASK_WORKER_MALLOC_ENV` (the flow's own LocalCluster gets the same environment)."""
        from clearlake.flows.classify import local_cluster
        from distributed import Client

        started = time.perf_counter()
        # Kept before a stop may interrupt, so that `down` closes it.
        with cleanup.deferred():
            self.cluster = local_cluster(n_workers=self.jobs, threads_per_worker=1,
                                         processes=True, host="127.0.0.1",
                                         dashboard_address=None,
                                         preload=["clearlake.flows.classify"])
        self.fixed["cluster_start_s"] = time.perf_counter() - started
        started = time.perf_counter()
        probe = Client(self.cluster.scheduler_address)
        self.fixed["client_connect_s"] = time.perf_counter() - started
        probe.close()
        self.client = Client(self.cluster.scheduler_address)
        self.worker_pids = list(self.client.run(os.getpid).values())
        self.client.get_task_stream()  # installs the scheduler's task-stream plugin

    def down(self) -> None:
        """Stop what `up` and `start_cluster` started, each even if an earlier step fails."""
        with cleanup.deferred():
            try:
                if self.client is not None:
                    self.client.close()
            finally:
                try:
                    if self.cluster is not None:
                        self.cluster.close()
                finally:
                    if self.stack is not None:
                        self._stop_stack()

    def _stop_stack(self) -> None:
        try:
            if "prefect" in sys.modules:  # deliver events still held before the server stops
                from prefect.events.worker import EventsWorker

                EventsWorker.drain_all()
        finally:
            self.stack.down(report=lambda line: None)

    # -- repositories ---------------------------------------------------------------------
    def upload(self, repository: str, files: dict[str, Path], message: str) -> dict[str, float]:
        """Create `repository` (if new), upload `files` {lakeFS path: local file}, commit."""
        self.lakefs.create_repository(repository)
        started = time.perf_counter()
        items = list(files.items())
        for i in range(0, len(items), 500):  # upload_many reads its whole iterable at once
            self.lakefs.upload_many(repository, "main",
                                    ((key, path.read_bytes()) for key, path in items[i : i + 500]))
        uploaded = time.perf_counter()
        commit = self.lakefs.commit(repository, "main", message)
        done = time.perf_counter()
        return {"images": len(files), "upload_s": uploaded - started, "commit_s": done - uploaded,
                "commit": commit,
                "mb": sum(p.stat().st_size for p in files.values()) / 1e6}

    # -- one run of the flow ------------------------------------------------------------------
    def run_flow(
        self, repository: str, branch: str, batch_size: int, metrics_repository: str,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        """`clearlake classify` in a fresh process; times, counts, requests and memory.

        A run that fails is reported (with its error), not raised: the benchmark goes on.
        """
        prefix = self.prefix if prefix is None else prefix
        self.client.run(_set_environ, "CLEARLAKE_METRICS_REPOSITORY", metrics_repository)
        self.peaks_reset = all([_reset_peak(pid) for pid in self.worker_pids])
        env = {**os.environ, "CLEARLAKE_METRICS_REPOSITORY": metrics_repository,
               "COLUMNS": "100000"}  # rich must not wrap the printed summary
        log = self.stack.log_path("lakefs")
        log_offset = log.stat().st_size
        out = self.scratch / f"flow-{time.monotonic_ns()}.out"
        since = datetime.now(UTC)
        epoch = time.time()
        s3_before = self.s3_snapshot()
        cpu_before = self.cpu()
        started = time.perf_counter()
        with out.open("wb") as stdout:
            process = subprocess.Popen(
                [sys.executable, "-m", "clearlake.cli", "classify", repository, branch,
                 "--dask-address", self.cluster.scheduler_address,
                 "--batch-size", str(batch_size), *(["--prefix", prefix] if prefix else [])],
                stdout=stdout, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            )
            peak = _PeakSampler(process.pid)
            try:
                _, status, usage = os.wait4(process.pid, 0)
            except BaseException:
                cleanup.stop_process(process)  # stopped: the flow must not run on
                raise
            finally:
                peak.stop()
        wall = time.perf_counter() - started
        cpu = {k: v - cpu_before[k] for k, v in self.cpu().items()}
        cpu["flow"] = usage.ru_utime + usage.ru_stime
        cpu["total"] = sum(cpu.values())
        process.returncode = os.waitstatus_to_exitcode(status)
        text = out.read_text(errors="replace")
        failed = process.returncode != 0
        summary = {"status": "failed"} if failed else _summary_from(text)
        requests = _requests_since(log, log_offset, repository, metrics_repository)
        s3_requests = (difference(self.s3_metrics.snapshot(), s3_before)
                       if self.s3_metrics and s3_before is not None else None)
        computed = summary.get("counts", {}).get("computed") or 0
        if s3_requests is not None:
            # Each object-API GET lakeFS served is one GET of lakeFS from the S3 server:
            # what is left of the S3 server's GETs are the presigned reads (and any read of
            # lakeFS's own metadata that missed its local cache).
            s3_requests["gets_not_by_object_api"] = (
                s3_requests["gets_ok"] - requests["object_gets_ok"])
        result: dict[str, Any] = {
            "repository": repository,
            "branch": branch,
            "batch_size": batch_size,
            "prefix": prefix,
            "status": summary.get("status"),
            "results_commit": summary.get("results_commit"),
            "error": _error_of(text) if failed else None,
            "counts": summary.get("counts", {}),
            "metrics_computed": summary.get("metrics_computed", {}),
            "phases_s": summary.get("seconds", {}),
            "transaction_s": summary.get("transaction_seconds", {}),
            "process_wall_s": wall,
            "flow_peak_mib": peak.kib / 1024,
            "worker_peak_mib": max((_vm_hwm_kib(p) or 0) for p in self.worker_pids) / 1024,
            "requests": requests,
            "s3_requests": s3_requests,
            "read_path": summary.get("read_path"),
            "report_reads": summary.get("report_reads"),
            "lakefs_requests_per_new_image": requests["api"] / computed if computed else None,
            "s3_requests_per_new_image": (s3_requests["requests"] / computed
                                          if computed and s3_requests else None),
            "cpu_s": cpu,
        }
        result.update(_prefect_timings(since, repository, branch))
        result.update(_dask_timings(self.client.get_task_stream(start=epoch),
                                    result.pop("subflow_start", None)))
        # The run time: the flow run's own start → end, else the process's wall time.
        result["run_s"] = result.get("flow_run_s") or wall
        return result


def _error_of(text: str) -> str:
    """The exception a failed `clearlake classify` ended with (its last such line)."""
    errors = [line for line in text.splitlines()
              if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
    return (errors or [line for line in text.splitlines() if line.strip()][-1:] or [""])[-1]


class _PeakSampler:
    """Samples a process's VmHWM every 20 ms until stopped.

    Not `ru_maxrss` from `wait4`: a forked child starts with its parent's RSS as its
    high-water mark, and this benchmark's process is the bigger one.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.02):
            self.kib = max(self.kib, _vm_hwm_kib(self.pid) or 0)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _summary_from(text: str) -> dict[str, Any]:
    """The JSON summary `clearlake classify` prints last (after Prefect's log lines)."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] == "{":
            try:
                return json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                break
    raise SystemExit(f"no summary in the output of clearlake classify:\n{text[-4000:]}")


_METHOD = re.compile(r"\bmethod=(\w+)")
_PATH = re.compile(r'\bpath="?([^"\s]+)')
_STATUS = re.compile(r"\bstatus_code=(\d+)")
_API = re.compile(r"^/api/v1/repositories/([^/?]+)(/[^?]*)?(?:\?(.*))?$")


def _request_kind(method: str, rest: str, query: str = "") -> str:
    """A name for a lakeFS API call from its method and the path after the repository
    (with ' presign' for a listing or stat that asked for presigned URLs)."""
    kind = _request_kind_of(method, rest)
    if re.search(r"(?:^|&)presign=true(?:&|$)", query, re.IGNORECASE):  # the SDK sends True
        kind += " presign"
    return kind


def _request_kind_of(method: str, rest: str) -> str:
    if re.fullmatch(r"/refs/[^/]+/objects", rest):
        return "get_object" if method == "GET" else f"{method.lower()}_object"
    if re.fullmatch(r"/refs/[^/]+/objects/stat", rest):
        return "stat_object"
    if re.fullmatch(r"/refs/[^/]+/objects/ls", rest):
        return "list_objects"
    if re.fullmatch(r"/refs/[^/]+/diff/[^/]+", rest):
        return "diff"
    if re.fullmatch(r"/branches/[^/]+/objects", rest):
        return "upload_object" if method == "POST" else f"{method.lower()}_object"
    if re.fullmatch(r"/branches/[^/]+/objects/delete", rest):
        return "delete_objects"
    if re.fullmatch(r"/branches/[^/]+/commits", rest):
        return "commit"
    if re.fullmatch(r"/refs/[^/]+/merge/[^/]+", rest):
        return "merge" if method == "POST" else "merge_base"
    if re.fullmatch(r"/refs/[^/]+/commits", rest):
        return "log"
    if rest.startswith("/commits/"):
        return "get_commit"
    if rest.startswith("/branches"):
        return f"branch_{method.lower()}"
    return f"{method.lower()} {re.sub(r'/[^/]+', '/…', rest) or '/'}"


def _requests_since(
    log: Path, offset: int, repository: str, metrics_repository: str
) -> dict[str, Any]:
    """Count the API requests lakeFS logged after `offset`, by repository and kind.

    `image_reads` counts GETs of objects under `images/` in `repository`; `paths_read`
    lists them when there are at most 50. `presigned_paths` lists the paths presigned
    one by one (`stat_object` with `presign=true`), at most 50; `object_gets_ok` counts
    every object GET answered 200 (each one a GET of lakeFS from its blockstore).
    """
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    by_kind: Counter[str] = Counter()
    image_reads: list[str] = []
    presigned_paths: list[str] = []
    logged = api = object_gets_ok = 0
    for line in lines:
        if "HTTP call ended" not in line:
            continue
        logged += 1
        method, path = _METHOD.search(line), _PATH.search(line)
        if not (method and path):
            continue
        if path.group(1).startswith("/api/"):
            api += 1
        match = _API.match(path.group(1))
        if not match:
            continue
        repo, rest, query = match.group(1), match.group(2) or "", match.group(3) or ""
        kind = _request_kind(method.group(1), rest, query)
        status = _STATUS.search(line)
        if kind == "get_object" and status and status.group(1) == "200":
            object_gets_ok += 1
        if kind == "stat_object presign" and repo == repository:
            presigned_paths.append(urllib.parse.parse_qs(query).get("path", [""])[0])
        owner = ("source" if repo == repository else
                 "metrics" if repo == metrics_repository else "other")
        by_kind[f"{owner}:{kind}"] += 1
        if owner == "source" and kind == "get_object":
            object_path = urllib.parse.parse_qs(query).get("path", [""])[0]
            if object_path.startswith(IMAGE_PREFIX) and status and status.group(1) == "200":
                image_reads.append(object_path)
    return {
        "logged": logged,
        "api": api,
        "object_gets_ok": object_gets_ok,
        "presigned_paths": sorted(presigned_paths) if len(presigned_paths) <= 50 else None,
        "presigned_one_by_one": len(presigned_paths),
        "image_reads": len(image_reads),
        "distinct_images_read": len(set(image_reads)),
        "paths_read": sorted(image_reads) if len(image_reads) <= 50 else None,
        "by_kind": dict(sorted(by_kind.items())),
    }


def _prefect_timings(since: datetime, repository: str, branch: str) -> dict[str, Any]:
    """The flow run's start → end as Prefect recorded it, and its measuring subflow's batches."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    timings: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["classify-commit"])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
            sort=FlowRunSort.START_TIME_DESC, limit=5,
        )
        runs = [r for r in runs if r.parameters.get("repository") == repository
                and r.parameters.get("branch") == branch]
        if not runs or not (runs[0].start_time and runs[0].end_time):
            return timings
        run = runs[0]
        timings["flow_run_s"] = (run.end_time - run.start_time).total_seconds()
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(
                any_=[run.id])), limit=5)
        # Batches used to run in a measuring subflow; now they are the run's own tasks.
        sub = subflows[0] if subflows else run
        timings["subflow_start"] = sub.start_time.timestamp() if sub.start_time else None
        if sub.start_time and sub.end_time:
            timings["measure_subflow_s"] = (sub.end_time - sub.start_time).total_seconds()
        timings.update(_batch_timings(client, sub))
    return timings


def _dask_timings(stream: list[dict[str, Any]], subflow_start: float | None) -> dict[str, Any]:
    """What Dask itself saw: when the first task started computing on a worker, and the
    compute time of all tasks (a Prefect task's own engine work included)."""
    spans = [(s["start"], s["stop"]) for record in stream
             for s in record.get("startstops", ()) if s.get("action") == "compute"]
    if not spans:
        return {}
    first = min(start for start, _ in spans)
    return {
        "dask_tasks": len(stream),
        "dask_compute_s": sum(stop - start for start, stop in spans),
        "dask_first_compute_after_s": first - subflow_start if subflow_start else None,
        "dask_span_s": max(stop for _, stop in spans) - first,
    }


def _batch_timings(client: Any, sub: Any) -> dict[str, Any]:
    """Start-up gap, busy time and spread of the measuring subflow's batch task runs.

    Task runs on Dask workers report their states as events, recorded by the server a
    moment later: wait (up to 15 s) until every batch has an end time.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    batches = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        tasks, offset = [], 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sub.id])),
                limit=200, offset=offset)
            tasks += page
            offset += len(page)
            if len(page) < 200:
                break
        done = [t for t in tasks if t.start_time and t.end_time]
        batches = len(tasks)
        if tasks and len(done) == len(tasks):
            break
        time.sleep(0.5)
    if not done or not sub.start_time:
        return {"batches": batches}
    first_start = min(t.start_time for t in done)
    last_end = max(t.end_time for t in done)
    busy = sum((t.end_time - t.start_time).total_seconds() for t in done)
    return {
        "batches": batches,
        "first_batch_after_s": (first_start - sub.start_time).total_seconds(),
        "batches_span_s": (last_end - first_start).total_seconds(),
        "after_last_batch_s": ((sub.end_time - last_end).total_seconds()
                               if sub.end_time else None),
        "batch_busy_s": busy,
        "batch_mean_s": busy / len(done),
    }


# --- the benchmark ---------------------------------------------------------------------------


def code_digest() -> str:
    """SHA-256 over the project's Python sources: was the code changed during the run?"""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("clearlake/**/*.py"), *ROOT.glob("flows/*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _best(*runs: dict[str, Any]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def blockstores(choice: str) -> list[str]:
    """The blockstores one invocation measures, in order: `both` is the default (s3) first."""
    return ["s3", "local"] if choice == "both" else [choice]


def benchmark(args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """All measurements of one run, for each blockstore asked for; returns the figures.

    The images are written once; each blockstore gets its own stack (its own state
    folder and ports), its own baselines before and after its full run, and its own
    ratio."""
    n = args.images
    figures: dict[str, Any] = {
        "images": n, "cores": jobs, "blockstore": args.blockstore,
        "load_before": os.getloadavg(),
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__},
        "code_before": code_digest(), "by_blockstore": {},
    }
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-pipeline-") as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        paths = make_images(scratch / "images", range(n), jobs)
        figures["generate_s"] = time.perf_counter() - started
        figures["image_mb"] = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{n} distinct JPEGs ({CROP_W}×{CROP_H}, {figures['image_mb']:.0f} MB) written "
              f"in {figures['generate_s']:.1f} s; {jobs} cores", flush=True)
        for blockstore in blockstores(args.blockstore):
            _say(f"--- blockstore {blockstore}")
            part = _one_blockstore(args, jobs, scratch, paths, blockstore)
            part.update(images=n, image_mb=figures["image_mb"], cores=jobs)
            part["full"]["cores"] = jobs
            figures["by_blockstore"][blockstore] = part
    figures["load_after"] = os.getloadavg()
    figures["code_changed_during_run"] = code_digest() != figures["code_before"]
    return figures


def _one_blockstore(
    args: argparse.Namespace, jobs: int, scratch: Path, paths: list[Path], blockstore: str
) -> dict[str, Any]:
    """The whole benchmark on a stack of `blockstore`, over the images at `paths`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clearlake import pipeline

    n = len(paths)
    sweep_n = min(1000 if args.sweep_images is None else args.sweep_images, n)
    base_n = args.incremental_base or n
    figures: dict[str, Any] = {
        "blockstore": blockstore, "sweep_images": sweep_n, "incremental_base": base_n,
        "prefix": args.prefix, "default_batch_size": pipeline.DEFAULT_BATCH_SIZE,
        "load_before": os.getloadavg(), "code_before": code_digest(),
    }
    bench = Bench(scratch / f"home-{blockstore}", scratch, jobs, args.prefix, blockstore)
    try:
        bench.up()
        # This process's Prefect client talks to this stack's server (a second stack in
        # the same invocation has another port; Prefect reads its settings once).
        with temporary_settings(updates={PREFECT_API_URL: bench.stack.prefect_api_url}):
            _measure_all(bench, args, jobs, scratch, paths, figures, sweep_n, base_n)
    finally:
        bench.down()
    figures["fixed"] = bench.fixed
    figures["worker_peak_reset"] = bench.peaks_reset
    figures["load_after"] = os.getloadavg()
    figures["code_changed_during_run"] = code_digest() != figures["code_before"]
    return figures


def _measure_all(
    bench: Bench, args: argparse.Namespace, jobs: int, scratch: Path, paths: list[Path],
    figures: dict[str, Any], sweep_n: int, base_n: int,
) -> None:
    from clearlake import pipeline

    n = len(paths)
    figures["baseline_before"] = run_baseline(paths, jobs, scratch)
    _say(f"baseline (Pool({jobs}), {n} images): "
         f"{figures['baseline_before']['seconds']:.1f} s")

    files = {f"{IMAGE_PREFIX}{p.name}": p for p in paths}
    figures["upload"] = bench.upload("bench-full", files, f"add {n} images")
    _say(f"upload + commit: {figures['upload']['upload_s']:.1f} + "
         f"{figures['upload']['commit_s']:.2f} s")
    bench.start_cluster()
    _say(f"Dask LocalCluster up in {bench.fixed['cluster_start_s']:.1f} s")

    full = bench.run_flow("bench-full", "main", pipeline.DEFAULT_BATCH_SIZE,
                          "bench-metrics-full")
    figures["full"] = full
    # After a run: the batches set the workers' OpenCV threads.
    bench.fixed["worker_opencv_threads"] = max(bench.client.run(_opencv_threads).values())
    _say(f"full run: {full['run_s']:.1f} s (process {full['process_wall_s']:.1f} s), "
         f"counts {full['counts']}, read path {full['read_path']}")
    figures["baseline_after"] = run_baseline(paths, jobs, scratch)
    baseline = _best(figures["baseline_before"], figures["baseline_after"])
    figures["baseline_s"] = baseline["seconds"]
    figures["ratio"] = full["run_s"] / baseline["seconds"]
    _say(f"baseline again: {figures['baseline_after']['seconds']:.1f} s; "
         f"ratio {figures['ratio']:.2f}")

    # A commit that changes no image.
    bench.lakefs.upload_object("bench-full", "main", "docs/note.txt", b"no image\n")
    bench.lakefs.commit("bench-full", "main", "a commit without images")
    figures["empty"] = bench.run_flow("bench-full", "main", pipeline.DEFAULT_BATCH_SIZE,
                                      "bench-metrics-full")
    _say(f"empty run: {figures['empty']['run_s']:.1f} s")

    figures["incremental"] = _incremental(bench, args, scratch, paths, base_n, jobs, figures)
    _say(f"incremental run: {figures['incremental']['run_s']:.1f} s, "
         f"{_read_proof(figures['incremental'])}")

    if args.prefix and full["results_commit"]:
        figures["incremental_default_prefix"] = _default_prefix(
            bench, scratch, full["results_commit"], n, jobs)
    if sweep_n:
        figures["sweep"] = _sweep(bench, args, scratch, paths[:sweep_n], jobs)


def _read_proof(run: dict[str, Any]) -> str:
    """What shows which images a run read: lakeFS's image GETs (object API) or the S3
    server's GETs that lakeFS did not make (presigned)."""
    requests, s3 = run["requests"], run.get("s3_requests")
    text = (f"lakeFS served {requests['image_reads']} image GETs "
            f"({requests['distinct_images_read']} distinct)")
    if s3:
        text += (f"; the S3 server served {s3['gets_ok']} GETs, {s3['gets_not_by_object_api']} "
                 f"of them not for lakeFS's object API")
    if requests.get("presigned_one_by_one"):
        text += f"; {requests['presigned_one_by_one']} paths presigned one by one"
    return text


def _incremental(
    bench: Bench, args: argparse.Namespace, scratch: Path, paths: list[Path], base_n: int,
    jobs: int, figures: dict[str, Any],
) -> dict[str, Any]:
    """Replace 10 images in a processed repository of `base_n` images, commit, run."""
    from clearlake import pipeline

    n = len(paths)
    repository = "bench-full"
    if base_n != n:
        # Beyond the N images, the repository repeats their bytes at other paths: its first
        # run reuses their metrics by content (nothing decoded), and the incremental run
        # must not read any of them anyway.
        # It is built in commits of at most SETUP_FIRST, then SETUP_LATER images, each
        # processed before the next: one run of more than ~5,700 images fails (see
        # SETUP_FIRST), and so does a later run whose diff spans more than one page.
        repository = "bench-incremental"
        keys = [f"{IMAGE_PREFIX}img{i:05d}.jpg" for i in range(base_n)]
        chunks = [keys[:SETUP_FIRST]] + [keys[i : i + SETUP_LATER]
                                         for i in range(SETUP_FIRST, base_n, SETUP_LATER)]
        setup: dict[str, Any] = {"images": base_n, "upload_s": 0.0, "runs": []}
        for chunk in chunks:
            uploaded = bench.upload(repository, {k: paths[int(k[-9:-4]) % n] for k in chunk},
                                    f"add {len(chunk)} images")
            setup["upload_s"] += uploaded["upload_s"] + uploaded["commit_s"]
            run = bench.run_flow(repository, "main", pipeline.DEFAULT_BATCH_SIZE,
                                 "bench-metrics-full")
            setup["runs"].append(run)
            _say(f"incremental repository: +{len(chunk)} images, run {run['status']} in "
                 f"{run['run_s']:.1f} s {run['error'] or ''}")
        figures["incremental_setup"] = setup
    step = max(1, base_n // CHANGED)
    targets = [f"{IMAGE_PREFIX}img{i:05d}.jpg" for i in range(0, base_n, step)][:CHANGED]
    fresh = make_images(scratch / "changed", range(base_n + n, base_n + n + len(targets)), jobs)
    bench.lakefs.upload_many(repository, "main",
                             ((t, p.read_bytes()) for t, p in zip(targets, fresh, strict=True)))
    bench.lakefs.commit(repository, "main", f"change {len(targets)} images")
    result = bench.run_flow(repository, "main", pipeline.DEFAULT_BATCH_SIZE, "bench-metrics-full")
    result["changed_paths"] = targets
    result["read_exactly_the_changed"] = _read_exactly(result, targets)
    return result


def _read_exactly(run: dict[str, Any], targets: list[str]) -> bool:
    """Whether the run read exactly the `targets`' bytes, and nothing else under images/,
    besides the report's thumbnails (`report_reads` images among them, read again).

    Through the object API, lakeFS's request log names every image it served. Through
    presigned URLs, the S3 server's GETs that lakeFS's object API did not cause must
    number the targets and the report's reads (its counters do not name the objects),
    the paths presigned one by one must be among the targets, and lakeFS must have
    served no image itself."""
    requests, s3 = run["requests"], run.get("s3_requests")
    report_reads = run.get("report_reads") or 0
    if run.get("read_path") != "presigned":
        read = requests["paths_read"] or []
        return sorted(set(read)) == sorted(targets) and len(read) == len(targets) + report_reads
    return bool(s3 is not None and requests["image_reads"] == 0
                and s3["gets_not_by_object_api"] == len(targets) + report_reads
                and set(requests.get("presigned_paths") or []) <= set(targets))


# --- flatness: the incremental run at several repository sizes ------------------------------


def flat_benchmark(args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """The same incremental run in repositories of each of `args.flat` images, one stack."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    figures: dict[str, Any] = {
        "mode": "flat", "sizes": sorted(args.flat), "cores": jobs, "repeat": args.flat_repeat,
        "blockstore": args.blockstore, "load_before": os.getloadavg(),
        "code_before": code_digest(),
    }
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-flat-") as tmp:
        scratch = Path(tmp)
        bench = Bench(scratch / "home", scratch, jobs, args.prefix, args.blockstore)
        try:
            bench.up()
            with temporary_settings(updates={PREFECT_API_URL: bench.stack.prefect_api_url}):
                _flat(bench, args, jobs, scratch, figures)
        finally:
            bench.down()
        figures["fixed"] = bench.fixed
    figures["load_after"] = os.getloadavg()
    figures["code_changed_during_run"] = code_digest() != figures["code_before"]
    return figures


def _flat_key(index: int, sizes: list[int]) -> tuple[int, str]:
    """The segment and the file name of base image `index`: segment j holds the images
    from sizes[j-1] (0 for the first) up to sizes[j]."""
    segment = next(j for j, size in enumerate(sizes) if index < size)
    return segment, f"{index:06d}.jpg"


def _flat(
    bench: Bench, args: argparse.Namespace, jobs: int, scratch: Path, figures: dict[str, Any]
) -> None:
    """Seed the store, put the base images into the S3 server, import a repository per
    size and process it, then run the incremental change at each size, interleaved."""
    import lakefs_sdk

    from clearlake import pipeline
    from clearlake.config import StackSecrets
    from clearlake.stack.seaweedfs import BUCKET

    sizes: list[int] = figures["sizes"]
    storage = bench.lakefs.storage_config()
    if not storage.import_support:
        raise SystemExit(f"--flat needs lakeFS's import ({storage.blockstore_type} blockstore "
                         "cannot): use --blockstore s3")
    bench.start_cluster()
    _say(f"Dask LocalCluster up in {bench.fixed['cluster_start_s']:.1f} s")

    # 1. The distinct small images, processed once: the store then knows them by lakeFS
    #    checksum, and every base image (one of them) is reused without being read.
    started = time.perf_counter()
    small = small_jpegs(args.flat_distinct)
    folder = scratch / "small"
    folder.mkdir()
    seed_files = {}
    for i, data in enumerate(small):
        (folder / f"s{i:04d}.jpg").write_bytes(data)
        seed_files[f"{IMAGE_PREFIX}s{i:04d}.jpg"] = folder / f"s{i:04d}.jpg"
    bench.upload("flat-seed", seed_files, f"{len(small)} distinct small images")
    seed = bench.run_flow("flat-seed", "main", pipeline.DEFAULT_BATCH_SIZE, FLAT_METRICS)
    figures["seed"] = {"images": len(small), "bytes_mean": sum(map(len, small)) / len(small),
                       "run_s": seed["run_s"], "counts": seed["counts"],
                       "s": time.perf_counter() - started}
    _say(f"seed: {len(small)} small images processed in {seed['run_s']:.1f} s "
         f"{seed['counts']}")

    # 2. The base images, straight into the S3 server (outside every repository's namespace).
    secrets = StackSecrets.load(bench.home)
    uploader = S3Uploader(bench.stack.s3_endpoint, secrets.s3_access_key_id,
                          secrets.s3_secret_access_key.get_secret_value())
    started = time.perf_counter()
    put = uploader.put_many(BUCKET, (
        (f"{FLAT_SOURCE}/p{segment}/{name}", small[i % len(small)])
        for i in range(sizes[-1]) for segment, name in [_flat_key(i, sizes)]), threads=8)
    figures["source_put"] = {"objects": put, "s": time.perf_counter() - started}
    _say(f"source: {put} objects put into the S3 server in "
         f"{figures['source_put']['s']:.1f} s")

    # 3. A repository per size: one import of its segments (one commit), then one run.
    imports = lakefs_sdk.ImportApi(bench.lakefs.client)
    figures["setup"] = {}
    for j, size in enumerate(sizes):
        repository = f"flat-{size}"
        bench.lakefs.create_repository(repository)
        creation = lakefs_sdk.ImportCreation(
            paths=[lakefs_sdk.ImportLocation(
                type="common_prefix", path=f"s3://{BUCKET}/{FLAT_SOURCE}/p{i}/",
                destination=f"{IMAGE_PREFIX}p{i}/") for i in range(j + 1)],
            commit=lakefs_sdk.CommitCreation(message=f"import {size} small images"))
        started = time.perf_counter()
        import_id = imports.import_start(repository, "main", creation).id
        while True:
            status = imports.import_status(repository, "main", import_id)
            if status.error is not None:
                raise SystemExit(f"import into {repository} failed: {status.error.message}")
            if status.completed:
                break
            time.sleep(0.2)
        imported_s = time.perf_counter() - started
        run = bench.run_flow(repository, "main", args.flat_setup_batch_size, FLAT_METRICS)
        figures["setup"][size] = {
            "import_s": imported_s, "imported": status.ingested_objects, "run_s": run["run_s"],
            "status": run["status"], "error": run["error"], "counts": run["counts"],
            "phases_s": run["phases_s"], "cpu_s": run["cpu_s"],
            "flow_peak_mib": run["flow_peak_mib"]}
        _say(f"{repository}: {status.ingested_objects} imported in {imported_s:.1f} s, "
             f"processed in {run['run_s']:.1f} s {run['counts']} {run['error'] or ''}")

    # 4. The incremental run, interleaved over the sizes: 10 images spread over the
    #    repository replaced by new 1024-px JPEGs, committed, processed.
    per_run = CHANGED
    total = per_run * len(sizes) * args.flat_repeat
    first = 1_000_000
    fresh = iter(make_images(scratch / "flat-changed", range(first, first + total), jobs))
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for repeat in range(args.flat_repeat):
        for size in sizes:
            repository = f"flat-{size}"
            step = size // per_run
            indices = [(i * step + 7 * repeat + 3) % size for i in range(per_run)]
            targets = []
            for index in indices:
                segment, name = _flat_key(index, sizes)
                targets.append(f"{IMAGE_PREFIX}p{segment}/{name}")
            bench.lakefs.upload_many(repository, "main",
                                     ((t, next(fresh).read_bytes()) for t in targets))
            bench.lakefs.commit(repository, "main", f"change {len(targets)} images")
            run = bench.run_flow(repository, "main", pipeline.DEFAULT_BATCH_SIZE, FLAT_METRICS)
            run["changed_paths"] = targets
            run["read_exactly_the_changed"] = _read_exactly(run, targets)
            runs[size].append(run)
            _say(f"incremental {per_run} of {size}: {run['run_s']:.2f} s, "
                 f"exactly the changed read: {run['read_exactly_the_changed']}; "
                 f"{_read_proof(run)} {run['error'] or ''}")
    figures["incremental"] = {size: runs[size] for size in sizes}
    medians = {size: statistics.median(r["run_s"] for r in runs[size]) for size in sizes}
    figures["median_run_s"] = medians
    figures["ratio_to_smallest"] = {size: medians[size] / medians[sizes[0]] for size in sizes}


def report_flat(f: dict[str, Any]) -> None:
    """Print the flatness figures."""
    sizes = f["sizes"]
    print(f"\nflatness: {CHANGED} changed 1024-px images in repositories of "
          f"{', '.join(map(str, sizes))} small ({SMALL_W}×{SMALL_H}) images; "
          f"blockstore {f['blockstore']}, {f['cores']} cores, {f['repeat']} runs each, "
          f"interleaved")
    print(f"load average before / after: {f['load_before'][0]:.1f} / {f['load_after'][0]:.1f}")
    seed, put = f["seed"], f["source_put"]
    print(f"set-up: seed {seed['images']} distinct images ({seed['bytes_mean']:.0f} B each) "
          f"processed in {seed['run_s']:.1f} s; {put['objects']} objects put into the S3 "
          f"server in {put['s']:.1f} s ({put['objects'] / put['s']:.0f}/s); "
          f"stack up {f['fixed']['stack_up_s']:.1f} s, cluster "
          f"{f['fixed']['cluster_start_s']:.1f} s")
    for size, setup in f["setup"].items():
        print(f"  flat-{size}: import of {setup['imported']} in {setup['import_s']:.1f} s; "
              f"first run {setup['run_s']:.1f} s {json.dumps(setup['counts'])}"
              f"{' FAILED: ' + setup['error'][:200] if setup['error'] else ''}; phases "
              f"{_phases(setup['phases_s'])}; CPU {_cpu(setup)}")
    print(f"\n{'size':>8}{'median s':>10}{'ratio':>7}  runs s · exactly the 10 read · "
          f"phases of the median run")
    for size in sizes:
        runs = f["incremental"][size]
        median = f["median_run_s"][size]
        middle = min(runs, key=lambda r: abs(r["run_s"] - median))
        times = " / ".join(f"{r['run_s']:.2f}" for r in runs)
        print(f"{size:>8}{median:>10.2f}{f['ratio_to_smallest'][size]:>7.2f}  {times} · "
              f"{all(r['read_exactly_the_changed'] for r in runs)} · "
              f"{_phases(middle['phases_s'])}")
    for size in sizes:
        run = f["incremental"][size][0]
        print(f"  {size}, first run: process wall {run['process_wall_s']:.1f} s; "
              f"{_read_proof(run)}; read path {run['read_path']}")
        print(f"    source-repo lakeFS requests: {_kinds(run['requests'], 'source:')}")
        if run.get("s3_requests"):
            print(f"    S3 server: {_s3_kinds(run['s3_requests'])}")
        print(f"    peak RSS flow / worker {run['flow_peak_mib']:.0f} / "
              f"{run['worker_peak_mib']:.0f} MiB; CPU {_cpu(run)}")
    largest = sizes[-1]
    print(f"FLATNESS: {largest} / {sizes[0]} = {f['ratio_to_smallest'][largest]:.2f} "
          f"(target ≤ 1.2)")
    if f["code_changed_during_run"]:
        print("WARNING: clearlake/ or flows/ changed during this run")


def _s3_kinds(s3: dict[str, Any]) -> str:
    """The S3 server's requests by type and status, summed over buckets."""
    kinds: Counter[str] = Counter()
    for key, value in s3["by_kind"].items():
        kinds[key.split(":", 1)[1]] += value
    return (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-") + (
        f"; sent {s3['sent_mb']:.1f} MB, received {s3['received_mb']:.1f} MB")


def _default_prefix(
    bench: Bench, scratch: Path, full_results: str, n: int, jobs: int
) -> dict[str, Any]:
    """10 images changed right after the full run, processed with the flow's default prefix ''.

    On a branch from the full run's results merge, so the previous results are the full
    run's: the two-dot diff since its source commit then also holds the N records that
    merge wrote under `_clearlake/` (the diff is restricted by prefix only).
    """
    from clearlake import pipeline

    branch = "default-prefix"
    bench.lakefs.create_branch("bench-full", branch, full_results)
    step = max(1, n // CHANGED)
    targets = [f"{IMAGE_PREFIX}img{i:05d}.jpg" for i in range(step // 2, n, step)][:CHANGED]
    first = 3 * n + 100_000  # indices no other image of this run uses
    fresh = make_images(scratch / "changed-default", range(first, first + len(targets)), jobs)
    bench.lakefs.upload_many("bench-full", branch,
                             ((t, p.read_bytes()) for t, p in zip(targets, fresh, strict=True)))
    bench.lakefs.commit("bench-full", branch, f"change {len(targets)} images")
    run = bench.run_flow("bench-full", branch, pipeline.DEFAULT_BATCH_SIZE,
                         "bench-metrics-full", prefix="")
    run["changed_paths"] = targets
    _say(f"incremental with prefix '': {run['status']} {run['error'] or ''}")
    return run


def _sweep(
    bench: Bench, args: argparse.Namespace, scratch: Path, paths: list[Path], jobs: int
) -> dict[str, Any]:
    """The full measurement per batch size on the same images: a branch and a store each."""
    repository = "bench-sweep"
    upload = bench.upload(repository, {f"{IMAGE_PREFIX}{p.name}": p for p in paths},
                          f"add {len(paths)} images")
    baselines = [run_baseline(paths, jobs, scratch)]
    runs: list[dict[str, Any]] = []
    for repeat in range(args.sweep_repeat):
        for size in args.batch_sizes:
            branch = f"b{size}-r{repeat}"
            bench.lakefs.create_branch(repository, branch, upload["commit"])
            run = bench.run_flow(repository, branch, size, f"bench-metrics-b{size}-r{repeat}")
            runs.append(run)
            _say(f"batch size {size}: {run['run_s']:.1f} s")
    baselines.append(run_baseline(paths, jobs, scratch))
    baseline = _best(*baselines)
    table = []
    for size in args.batch_sizes:
        mine = [r for r in runs if r["batch_size"] == size]
        best = min(mine, key=lambda r: r["run_s"])
        table.append({"batch_size": size, "run_s": best["run_s"],
                      "all_run_s": [round(r["run_s"], 2) for r in mine],
                      "ratio": best["run_s"] / baseline["seconds"],
                      "phases_s": best["phases_s"], "batches": best.get("batches"),
                      "batch_mean_s": best.get("batch_mean_s"),
                      "first_batch_after_s": best.get("first_batch_after_s"),
                      "flow_peak_mib": best["flow_peak_mib"],
                      "worker_peak_mib": best["worker_peak_mib"],
                      "computed": best["counts"].get("computed"),
                      "cpu_s": best.get("cpu_s"), "status": best["status"]})
    fastest = min(table, key=lambda r: r["run_s"])
    return {"images": len(paths), "baselines_s": [b["seconds"] for b in baselines],
            "baselines_cpu_s": [b["cpu_seconds"] for b in baselines],
            "baseline_s": baseline["seconds"], "table": table,
            "fastest_batch_size": fastest["batch_size"]}


def _say(line: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)


# --- the report -----------------------------------------------------------------------------


def report(f: dict[str, Any]) -> None:
    """Print every figure in one compact table."""
    full, empty, inc, sweep = f["full"], f["empty"], f["incremental"], f.get("sweep")
    fixed = f["fixed"]
    rows: list[tuple[str, str]] = [
        ("blockstore", f"{f['blockstore']} (lakeFS over "
                       + ("the stack's S3 server, SeaweedFS)" if f["blockstore"] == "s3"
                          else "its local blockstore)")),
        ("images (full run)", f"{f['images']} × {CROP_W}×{CROP_H} JPEG, "
                              f"{f['image_mb']:.0f} MB, {f['cores']} cores"),
        ("load average before / after", f"{f['load_before'][0]:.1f} / {f['load_after'][0]:.1f}"),
        ("baseline Pool, before / after", f"{f['baseline_before']['seconds']:.1f} s / "
                                          f"{f['baseline_after']['seconds']:.1f} s"),
        ("full run, flow start → end", f"{full['run_s']:.1f} s "
                                       f"(process wall {full['process_wall_s']:.1f} s)"
                                       f"{_failure(full)}"),
        ("RATIO run / baseline", f"{f['ratio']:.2f}  (target ≤ 1.5, goal ≤ 1.2)"),
        ("  counts", json.dumps(full["counts"])),
        ("  phases s", _phases(full["phases_s"])),
        ("  fixed: branch, commit, merge s", _transactions(full)),
        ("  CPU s", f"{_cpu(full)} vs baseline {f['baseline_before']['cpu_seconds']:.0f} / "
                    f"{f['baseline_after']['cpu_seconds']:.0f}"),
        ("  read path", f"{full.get('read_path')}"),
        ("  requests per new image", _per_image(full)),
        ("  lakeFS requests", _kinds(full["requests"])),
        ("  S3 server requests", _s3_kinds(full["s3_requests"]) if full.get("s3_requests")
                                 else "- (no S3 server)"),
        ("  batches", _batches(full)),
        ("upload + commit (not timed)", f"{f['upload']['upload_s']:.1f} s + "
                                        f"{f['upload']['commit_s']:.2f} s "
                                        f"({f['upload']['images'] / f['upload']['upload_s']:.0f}"
                                        " images/s)"),
        ("fixed: stack up", f"{fixed['stack_up_s']:.1f} s"),
        ("fixed: Dask cluster start", f"{fixed['cluster_start_s']:.1f} s "
                                      f"(workers' OpenCV threads after a run: "
                                      f"{fixed['worker_opencv_threads']})"),
        ("fixed: client connect", f"{fixed['client_connect_s'] * 1000:.0f} ms (from the bench); "
                                  f"flow start → first batch "
                                  f"{_s(full.get('first_batch_after_s'))}"),
        ("fixed: empty run", f"{empty['run_s']:.1f} s{_failure(empty)} (process wall "
                             f"{empty['process_wall_s']:.1f} s) — phases "
                             f"{_phases(empty['phases_s'])}"),
        ("  empty run: requests", _kinds(empty["requests"])),
        ("  empty run: branch, commit, merge s", _transactions(empty)),
        (f"incremental: {CHANGED} of {f['incremental_base']}",
         f"{inc['run_s']:.1f} s{_failure(inc)} (process wall {inc['process_wall_s']:.1f} s)"
         " — phases "
         f"{_phases(inc['phases_s'])}"),
        ("  counts", json.dumps(inc["counts"])),
        ("  images read", f"{_read_proof(inc)}; read path {inc.get('read_path')}; "
                          f"exactly the changed ones: {inc['read_exactly_the_changed']} "
                          f"(and {inc.get('report_reads') or 0} of them again for the "
                          "report's thumbnails)"),
        ("  all source-repo requests", _kinds(inc["requests"], "source:")),
        ("  S3 server requests", _s3_kinds(inc["s3_requests"]) if inc.get("s3_requests")
                                 else "- (no S3 server)"),
        *_default_prefix_rows(f.get("incremental_default_prefix")),
        ("peak RSS flow / worker, full", f"{full['flow_peak_mib']:.0f} / "
                                         f"{full['worker_peak_mib']:.0f} MiB "
                                         f"({f['images']} images)"),
        ("peak RSS flow / worker, incr.", f"{inc['flow_peak_mib']:.0f} / "
                                          f"{inc['worker_peak_mib']:.0f} MiB"),
        *_setup_rows(f.get("incremental_setup")),
        ("baseline worker peak RSS", f"{f['baseline_before']['worker_peak_mib']:.0f} MiB"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if sweep:
        _sweep_table(sweep, f["default_batch_size"])
    if f["code_changed_during_run"]:
        print("WARNING: clearlake/ or flows/ changed during this run: the baselines (fresh "
              "processes) and the flow runs may have measured different code")
    if not f["worker_peak_reset"]:
        print("(worker peaks could not be reset between runs: each is the peak so far)")


def _per_image(run: dict[str, Any]) -> str:
    lakefs, s3 = run.get("lakefs_requests_per_new_image"), run.get("s3_requests_per_new_image")
    if lakefs is None:
        return "n/a"
    text = f"lakeFS {lakefs:.2f} (every API request it logged / images computed)"
    if s3 is not None:
        text += f", S3 server {s3:.2f}"
    return text


def report_side_by_side(figures: dict[str, Any]) -> None:
    """One line per blockstore: the default's cost next to the local blockstore's."""
    parts = figures["by_blockstore"]
    if len(parts) < 2:
        return
    print(f"\nside by side, {figures['images']} images, {figures['cores']} cores (each ratio "
          "against the pool baseline measured on its own stack):")
    names = ["workers", "flow", "lakefs", "s3", "prefect", "scheduler+bench"]
    print(f"{'blockstore':<11}{'pool s':>8}{'run s':>8}{'ratio':>7}{'CPU s':>7}  "
          f"{' / '.join(names):<44}{'lakeFS/img':>11}{'S3/img':>8}{'1st batch':>10}"
          f"{'incr. s':>8}  load")
    for name, f in parts.items():
        full, cpu = f["full"], f["full"].get("cpu_s") or {}
        s3 = full.get("s3_requests_per_new_image")
        print(f"{name:<11}{f['baseline_s']:>8.1f}{full['run_s']:>8.1f}{f['ratio']:>7.2f}"
              f"{cpu.get('total', 0):>7.0f}  "
              f"{' / '.join(f'{cpu.get(k, 0):.1f}' for k in names):<44}"
              f"{full.get('lakefs_requests_per_new_image') or 0:>11.2f}"
              f"{'-' if s3 is None else f'{s3:.2f}':>8}"
              f"{full.get('first_batch_after_s') or 0:>10.2f}"
              f"{f['incremental']['run_s']:>8.2f}  "
              f"{f['load_before'][0]:.1f} / {f['load_after'][0]:.1f}")


def _sweep_table(sweep: dict[str, Any], default_batch_size: int) -> None:
    print(f"\nbatch size sweep: {sweep['images']} images, baseline "
          f"{' / '.join(f'{s:.1f}' for s in sweep['baselines_s'])} s "
          f"(best {sweep['baseline_s']:.1f} s; CPU "
          f"{' / '.join(f'{s:.1f}' for s in sweep.get('baselines_cpu_s', []))} s)")
    print(f"{'batch':>6}{'run s':>8}{'ratio':>7}{'tasks':>7}{'s/task':>8}{'1st task':>9}"
          f"{'flow MiB':>10}{'worker MiB':>11}{'CPU s':>7}{'workers':>8}  phases s")
    for r in sweep["table"]:
        print(f"{r['batch_size']:>6}{r['run_s']:>8.1f}{r['ratio']:>7.2f}{r['batches'] or 0:>7}"
              f"{r['batch_mean_s'] or 0:>8.2f}{r['first_batch_after_s'] or 0:>9.2f}"
              f"{r['flow_peak_mib']:>10.0f}{r['worker_peak_mib']:>11.0f}"
              f"{(r.get('cpu_s') or {}).get('total', 0):>7.1f}"
              f"{(r.get('cpu_s') or {}).get('workers', 0):>8.1f}  "
              f"{_phases(r['phases_s'])}")
    print(f"fastest batch size: {sweep['fastest_batch_size']} "
          f"(default now {default_batch_size})")


def _default_prefix_rows(run: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The incremental run once more, with the flow's default prefix ''."""
    if not run:
        return []
    outcome = (f"FAILED after {run['process_wall_s']:.1f} s: {run['error'][:300]}"
               if run["error"]
               else f"{run['run_s']:.1f} s, counts {json.dumps(run['counts'])}")
    return [(f"incr. {CHANGED} of {run['repository']}, prefix ''", outcome),
            ("  all source-repo requests", _kinds(run["requests"], "source:"))]


def _setup_rows(setup: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The runs that built the incremental repository, when it is not the full run's."""
    if not setup:
        return []
    runs = setup["runs"]
    last = runs[-1]
    return [
        (f"incr. repository: {setup['images']} images",
         f"{len(runs)} commits + runs ({', '.join(str(r['status']) for r in runs)}), "
         f"{sum(r['run_s'] for r in runs):.0f} s of runs, upload {setup['upload_s']:.0f} s"),
        ("  its last run", f"{last['run_s']:.1f} s, counts {json.dumps(last['counts'])}, phases "
                           f"{_phases(last['phases_s'])}, peak RSS flow / worker "
                           f"{last['flow_peak_mib']:.0f} / {last['worker_peak_mib']:.0f} MiB"),
    ]


def _failure(run: dict[str, Any]) -> str:
    return f" FAILED: {run['error'][:300]}" if run.get("error") else ""


def _cpu(run: dict[str, Any]) -> str:
    cpu = run.get("cpu_s") or {}
    parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "total")
    return f"{cpu.get('total', 0):.0f} ({parts})"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _phases(phases: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in phases.items()) or "-"


def _transactions(run: dict[str, Any]) -> str:
    """The lakeFS steps of a run's two transactions: its results and the metrics store."""
    steps = run.get("transaction_s", {})
    return "; ".join(f"{name}: {_phases(steps.get(name, {}))}" for name in ("results", "store"))


def _batches(run: dict[str, Any]) -> str:
    if not run.get("batch_busy_s"):
        return "n/a"
    return (f"{run['batches']} × {run['batch_size']}, mean {run['batch_mean_s']:.2f} s/batch, "
            f"span {run['batches_span_s']:.1f} s, busy {run['batch_busy_s']:.1f} s "
            f"(busy / (span × cores) = "
            f"{run['batch_busy_s'] / run['batches_span_s'] / run.get('cores', 1):.2f}); "
            f"Dask: first compute {_s(run.get('dask_first_compute_after_s'))} after the flow "
            f"starts, compute {_s(run.get('dask_compute_s'))}")


def _kinds(requests: dict[str, Any], prefix: str = "") -> str:
    kinds = {k.removeprefix(prefix): v for k, v in requests["by_kind"].items()
             if k.startswith(prefix)}
    return ", ".join(f"{k} {v}" for k, v in kinds.items()) or "-"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; run the benchmark (or, internally, the baseline in a fresh process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the full run")
    parser.add_argument("--incremental-base", type=int, default=None,
                        help="images in the repository of the incremental run "
                             "(default: --images)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=list(DEFAULT_BATCH_SIZES), help="comma-separated")
    parser.add_argument("--sweep-images", type=int, default=None,
                        help="images per batch-size run (default: min(--images, 1000))")
    parser.add_argument("--sweep-repeat", type=int, default=1,
                        help="runs per batch size, interleaved; the best is reported")
    parser.add_argument("--prefix", default=IMAGE_PREFIX,
                        help="the flow's input prefix (default images/, where the images are; "
                             "'' for the flow's default)")
    parser.add_argument("--blockstore", choices=("s3", "local", "both"), default="s3",
                        help="the stack's blockstore: s3 (the default stack), local, or both "
                             "(the same images on s3 and then on local, a stack each)")
    parser.add_argument("--flat", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="instead of everything else: the incremental run in repositories "
                             "of these sizes (comma-separated, e.g. 10000,100000) of small "
                             "images, and its time at each size against the smallest")
    parser.add_argument("--flat-repeat", type=int, default=3,
                        help="incremental runs per size, interleaved (median reported)")
    parser.add_argument("--flat-distinct", type=int, default=256,
                        help="distinct small images the flatness bases repeat")
    parser.add_argument("--flat-setup-batch-size", type=int, default=1024,
                        help="batch size of the runs that process the flatness bases")
    parser.add_argument("--jobs", type=int, default=None, help="cores (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jobs = args.jobs or len(os.sched_getaffinity(0))

    if args.baseline_child:
        print(json.dumps(_baseline(json.loads(args.baseline_child.read_text()), jobs)))
        return

    if args.flat:
        if args.blockstore == "both":
            parser.error("--flat runs on one blockstore: s3 (lakeFS's import needs it)")
        figures = flat_benchmark(args, jobs)
        report_flat(figures)
    else:
        figures = benchmark(args, jobs)
        for part in figures["by_blockstore"].values():
            report(part)
        report_side_by_side(figures)
        print(f"load average at the start / end of the invocation: "
              f"{figures['load_before'][0]:.1f} / {figures['load_after'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    cleanup.main(main)
