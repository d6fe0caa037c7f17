"""Local prototype mode: score every image under a folder, on all cores, with a metrics cache.

`score_directory` walks a folder, analyses each image in a process pool
(workers get file paths and send back metrics, never pixel arrays), labels
everything with a model at the end, and returns one record per file. The
command `clearlake score` (`clearlake.cli.score`) is a thin shell around it; it
computes the metrics its model reads unless asked for more.

The cache (SQLite, WAL mode, written by the parent process only) has three
tables, so that nothing is done twice:

* ``files``: (path, size, mtime_ns) → sha256. When a file's size and
  modification time are unchanged it is not even read. Files modified within
  the last `RACY_SECONDS` are not recorded, because a second change within the
  file system's timestamp granularity would keep size and mtime.
* ``images``: (sha256, decoder version) → outcome, size and dimensions. A
  renamed or copied file (new path, same bytes) is read and hashed, then
  reuses what is known of its bytes.
* ``metric_values``: (sha256, metric name, metric version) → value, or why the
  metric failed on those bytes. Keyed per metric like the pipeline's metrics
  store: a run asking for other metrics than the last computes only those
  missing, and a new version of one metric recomputes that metric alone.

Labels are never cached: a model labels the metrics in one cheap call at the end.

`too_large` refusals are not cached (they depend on the limit, and cost only a
header read). Any other cached analysis whose header size exceeds the current
limit is reported `too_large` without decoding, as `decode` would: decoding
checks the header size before anything else about the pixels.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import math
import multiprocessing
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from clearlake.quality import decode as decoding
from clearlake.quality.analyse import Analysis, analyse, analysis_version, in_column_order
from clearlake.quality.memory import keep_freed_memory
from clearlake.quality.registry import (
    Metric,
    MetricFailure,
    MetricSet,
    available,
    available_for,
    builtin_metrics,
    from_spec,
)
from clearlake.quality.types import Outcome

if TYPE_CHECKING:
    from clearlake.quality.classifier import Model

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff",
        ".bmp", ".dib", ".jp2", ".j2k", ".jpf", ".jpx", ".pbm", ".pgm", ".ppm", ".pnm",
        ".avif", ".heic", ".heif", ".svg", ".jxl", ".psd", ".ico", ".hdr", ".exr",
    }
)  # fmt: skip
"""File extensions `score` picks up (case-insensitive). Files with these names that
turn out not to be images, or not supported, are reported with their outcome."""

CACHE_FILE = "metrics.sqlite3"
"""Name of the SQLite cache file inside the cache directory."""

RACY_SECONDS = 2.0
"""Files modified this recently are re-hashed next time (timestamp granularity)."""

OUTPUT_FORMATS = (".parquet", ".csv", ".jsonl")
"""Output file extensions `write_records` understands."""

_SCHEMA_VERSION = 2  # bump on any schema change: the cache is then rebuilt
_TABLES = ("files", "analyses", "images", "metric_values")  # of every schema version so far
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT NOT NULL,
    decoder TEXT NOT NULL,
    size INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    width INTEGER NOT NULL,   -- 0 when not even the header could be read
    height INTEGER NOT NULL,
    PRIMARY KEY (sha256, decoder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric_values (
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    value REAL,               -- an 8-byte float: values come back bit for bit; NULL if failed
    failure TEXT,             -- why the metric failed on these bytes, else NULL
    PRIMARY KEY (sha256, name, version)
) WITHOUT ROWID;
"""


def default_cache_dir() -> Path:
    """Where the metrics cache lives: `CLEARLAKE_CACHE_DIR`, else the user's cache directory.

    Returns:
        ``$CLEARLAKE_CACHE_DIR``, or ``$XDG_CACHE_HOME/clearlake/metrics``
        (``~/.cache/clearlake/metrics`` when `XDG_CACHE_HOME` is unset).
    """
    from clearlake.settings import cache_dir, settings

    return settings().metrics_cache_dir or cache_dir() / "metrics"


class CacheError(Exception):
    """The metrics cache cannot be opened (unwritable directory, not an SQLite file, …)."""


class MetricsCache:
    """The SQLite metrics cache (see the module docstring for its two tables).

    Open it in the process that writes; worker processes open their own
    connection with ``readonly=True``.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (creating if needed, unless `readonly`) the cache at `path`.

        Args:
            path: the SQLite file.
            readonly: open for reading only (worker processes).

        Raises:
            CacheError: the file or its directory cannot be used.
        """
        self.path = path
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, timeout=30)
                self._setup()
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"cannot use the metrics cache {path}: {exc}") from exc

    def _setup(self) -> None:
        # WAL: readers (workers, other runs) never block the writer, and
        # concurrent `score` runs serialise their short write transactions.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            if self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                for table in _TABLES:
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> MetricsCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def known_files(self, root: str) -> dict[str, tuple[int, int, str]]:
        """Recorded files under a directory.

        Args:
            root: absolute directory path.

        Returns:
            ``{path: (size, mtime_ns, sha256)}`` for every recorded path under `root`.
        """
        prefix = root.rstrip(os.sep) + os.sep
        # Range scan on the primary key: every string that starts with `prefix`.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, sha256 FROM files WHERE path >= ? AND path < ?",
            (prefix, upper),
        )
        return {path: (size, mtime, sha) for path, size, mtime, sha in rows}

    def analyses(
        self, digests: Iterable[str], metric_set: MetricSet, max_pixels: int
    ) -> dict[str, Analysis]:
        """What is known of these bytes under the current decoder and pixel limit.

        Args:
            digests: sha256 hex digests to look up.
            metric_set: the metrics wanted; values of other metrics or versions are
                left out.
            max_pixels: the current pixel limit.

        Returns:
            ``{sha256: Analysis}`` for the digests found. An ok analysis holds those of
            `metric_set`'s metrics that are known (values, and failures) and may lack
            others: see `lacking`.
        """
        versions = metric_set.versions
        found: dict[str, Analysis] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            images = self._db.execute(
                "SELECT sha256, size, outcome, reason, width, height "
                f"FROM images WHERE decoder = ? AND sha256 IN ({marks})",
                (decoding.DECODER_VERSION, *batch),
            )
            known = {row[0]: row for row in images}
            values: dict[str, dict[str, float]] = {sha: {} for sha in known}
            failures: dict[str, dict[str, str]] = {sha: {} for sha in known}
            rows = self._db.execute(
                "SELECT sha256, name, version, value, failure "
                f"FROM metric_values WHERE sha256 IN ({marks})",
                batch,
            )
            for sha, name, version, value, failure in rows:
                if sha in known and versions.get(name) == version:
                    if failure is None:
                        values[sha][name] = value
                    else:
                        failures[sha][name] = MetricFailure(failure)
            for sha, row in known.items():
                found[sha] = _from_row(row, values[sha], failures[sha], max_pixels)
        return found

    def store(
        self,
        files: Sequence[tuple[str, int, int, str]],
        analyses: Sequence[Analysis],
        metric_set: MetricSet,
    ) -> None:
        """Record file identities and analyses in one transaction.

        Args:
            files: ``(path, size, mtime_ns, sha256)`` rows.
            analyses: analyses to cache (`too_large` ones are skipped).
            metric_set: the metrics they were computed with (their versions are stored).
        """
        versions = metric_set.versions
        images = []
        values = []
        for a in analyses:
            if a.outcome is Outcome.TOO_LARGE:
                continue
            images.append((a.sha256, decoding.DECODER_VERSION, a.size, str(a.outcome),
                           a.reason, a.width, a.height))
            values += [(a.sha256, name, versions[name], value, None)
                       for name, value in (a.metrics or {}).items()]
            values += [(a.sha256, name, versions[name], None, str(why))
                       for name, why in a.failures.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", files)
            self._db.executemany(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?)", images)
            self._db.executemany(
                "INSERT OR REPLACE INTO metric_values VALUES (?, ?, ?, ?, ?)", values)


def lacking(analysis: Analysis, metric_set: MetricSet) -> list[Metric]:
    """The metrics of `metric_set` that a decoded image's analysis has neither a value
    nor a failure for (none for an image that did not decode: there is nothing to
    measure)."""
    if not analysis.ok:
        return []
    known = set(analysis.metrics or ()) | set(analysis.failures)
    return [m for m in metric_set if m.name not in known]


def _from_row(
    row: tuple[Any, ...],
    values: dict[str, float],
    failures: dict[str, str],
    max_pixels: int,
) -> Analysis:
    """An Analysis from the cache's rows, as `analyse` would give it under `max_pixels`."""
    sha, size, outcome, reason, width, height = row
    pixels = width * height
    if pixels > max_pixels:
        # decode() checks the header size first: same refusal, nothing decoded.
        reason = decoding.too_large_reason(width, height, max_pixels)
        return Analysis(sha, size, Outcome.TOO_LARGE, reason, width, height)
    if Outcome(outcome) is not Outcome.OK:
        return Analysis(sha, size, Outcome(outcome), reason, width, height)
    return Analysis(sha, size, Outcome.OK, reason, width, height, in_column_order(values),
                    failures)


# --- the walk -----------------------------------------------------------------------


def find_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, by extension, sorted.

    Hidden directories (``.git``, ``.thumbnails``…) are skipped and symbolic links
    to directories are not followed (no cycles, no double counting); symbolic
    links to files are scored like files.

    Args:
        root: the directory to walk.

    Returns:
        Absolute paths, sorted.
    """
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found.extend(
            Path(directory, name)
            for name in files
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


# --- worker side --------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Done:
    index: int
    analysis: Analysis
    computed: bool  # decoded and measured here (not a cache hit)
    record_file: bool  # the bytes read match the stat: safe to remember (path, size, mtime)


_worker_cache_path: str | None = None
_worker_cache: MetricsCache | None = None
_worker_max_pixels: int = decoding.DEFAULT_MAX_PIXELS
_worker_metric_set: MetricSet | None = None


def _init_worker(
    cache_path: str | None, max_pixels: int, metrics: list[dict[str, str]]
) -> None:
    """Pool initializer: the metrics to compute (`MetricSet.spec`, checked against this
    process's code), one OpenCV thread; the cache is opened on first use.

    (A worker may start before the parent has created the cache file.)
    """
    global _worker_cache_path, _worker_max_pixels, _worker_metric_set
    _worker_metric_set = from_spec(metrics, available_for(spec["name"] for spec in metrics))
    use_one_thread()
    quiet_opencv()
    keep_freed_memory()
    _worker_cache_path = cache_path
    _worker_max_pixels = max_pixels


def use_one_thread() -> None:
    """Keep OpenCV and BLAS in this process to one thread each.

    One worker process per core already uses every core; OpenCV's and OpenBLAS's
    own thread pools would oversubscribe them (and their threads spin while waiting).
    """
    cv2.setNumThreads(1)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    threadpool_limits(1)


def quiet_opencv() -> None:
    """Silence OpenCV's own error log in this process.

    A file OpenCV cannot decode is reported as an outcome with a reason; the
    same failure printed by OpenCV on stderr would only garble the progress
    display. (libpng writes its own messages and cannot be silenced this way.)
    """
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _run_chunk(tasks: Sequence[_Task]) -> list[_Done]:
    """Worker entry point: read, hash, look up, else analyse each file of a chunk."""
    global _worker_cache
    if _worker_cache is None and _worker_cache_path is not None:
        _worker_cache = MetricsCache(Path(_worker_cache_path), readonly=True)
    assert _worker_metric_set is not None, "the pool's initializer sets it"
    return [_run_task(task, _worker_cache, _worker_max_pixels, _worker_metric_set)
            for task in tasks]


def _run_task(
    task: _Task, cache: MetricsCache | None, max_pixels: int, metric_set: MetricSet
) -> _Done:
    """Read and hash one file; reuse what the cache knows of its bytes, and decode and
    measure it only for the metrics the cache lacks."""
    try:
        data = Path(task.path).read_bytes()
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        return _Done(task.index, Analysis("", 0, Outcome.CORRUPT, reason), False, False)
    digest = hashlib.sha256(data).hexdigest()
    record_file = len(data) == task.size
    known = (cache.analyses([digest], metric_set, max_pixels).get(digest)
             if cache is not None else None)
    missing = lacking(known, metric_set) if known is not None else None
    if known is not None and not missing:  # (nothing to measure)
        return _Done(task.index, known, False, record_file)
    analysis = analyse(data, max_pixels=max_pixels, sha256=digest, metric_set=metric_set,
                       only=missing)
    if known is not None and analysis.ok:  # the cached values, and the missing ones
        analysis = replace(
            analysis,
            metrics=in_column_order({**(known.metrics or {}), **(analysis.metrics or {})}),
            failures={**known.failures, **analysis.failures},
        )
    return _Done(task.index, analysis, True, record_file)


# --- the run ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreResult:
    """What a `score_directory` run produced.

    Attributes:
        root: the directory scored.
        records: one record per file, sorted by path: the fields of a branch's results
            record that a folder has (`clearlake.table` writes both alike).
        classes: the model's classes (empty without a model).
        model_id: the model's id, or None without a model.
        metrics: the names of the metrics computed (or taken from the cache).
        computed: images decoded and measured in this run.
        cached: analyses reused from the cache.
        hashed: files read and hashed (their path, size or mtime was not known,
            or their bytes had no analysis under this version).
        elapsed: wall-clock seconds.
        outcomes: number of files per outcome.
        labels: number of images per predicted label.
    """

    root: Path
    records: list[dict[str, Any]]
    classes: tuple[str, ...] = ()
    model_id: str | None = None
    metrics: tuple[str, ...] = ()
    computed: int = 0
    cached: int = 0
    hashed: int = 0
    elapsed: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)


MODEL_METRICS = "model"
ALL_METRICS = "all"


def metrics_to_compute(model: Model, choice: str = MODEL_METRICS) -> MetricSet:
    """The metrics a `score` run computes (and writes out), checked against `model`.

    Args:
        model: the model that labels the images.
        choice: ``model`` (the metrics the model reads: the least work that labels),
            ``all`` (every built-in and installed metric), or metric names separated by
            commas (computed with the model's).

    Raises:
        ConfigurationError: an unknown metric name.
        MissingMetricError: the model reads a metric, or a version, that cannot be
            computed here.
    """
    if choice == ALL_METRICS:
        chosen = available()
    else:
        named = {name.strip() for name in choice.split(",") if name.strip()} - {MODEL_METRICS}
        wanted = set(model.features) | named
        chosen = available_for(wanted).select(wanted)
    model.check(chosen)
    return chosen


def default_jobs() -> int:
    """Number of worker processes by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def score_directory(
    root: Path,
    *,
    model: Model | None = None,
    metric_set: MetricSet | None = None,
    jobs: int | None = None,
    max_pixels: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Analyse and label every image under `root`.

    Args:
        root: directory to walk recursively.
        model: labels the images; None leaves `label` and probabilities empty.
        metric_set: the metrics to compute (default: every built-in metric); it must
            hold those `model` reads (`Model.check`).
        jobs: worker processes (default: all available cores); 1 runs in-process.
        max_pixels: pixel limit (default: `CLEARLAKE_MAX_PIXELS`, else 52.7 MP:
            `decode.DEFAULT_MAX_PIXELS`).
        cache_dir: cache directory (default: `default_cache_dir()`).
        use_cache: False neither reads nor writes the cache.
        on_start: called once with the number of files found.
        on_progress: called with the number of files finished since the last call.

    Returns:
        The records and the run's counters.

    Raises:
        CacheError: the cache cannot be opened (use another `cache_dir`, or none).
    """
    started = time.perf_counter()
    root = Path(os.path.abspath(root))
    limit = decoding.default_max_pixels() if max_pixels is None else max_pixels
    metrics = metric_set if metric_set is not None else builtin_metrics()
    workers = default_jobs() if jobs is None else max(1, jobs)
    paths = find_images(root)
    progress = on_progress or (lambda n: None)
    cache_path = (cache_dir or default_cache_dir()) / CACHE_FILE if use_cache else None
    cache = MetricsCache(cache_path) if cache_path is not None else None
    pool: concurrent.futures.ProcessPoolExecutor | None = None
    try:
        analyses, tasks = _plan(paths, root, cache, limit, metrics)
        chunks = list(_chunks(tasks, workers))
        if workers > 1 and len(chunks) > 1:
            if _safe_to_fork():
                # Workers forked from this process inherit its imports (NumPy, OpenCV,
                # SciPy, the metric code: a second or more each otherwise). Now: before
                # on_start, through which the CLI starts its display thread, and with the
                # cache closed, since an SQLite connection must not cross a fork.
                if cache is not None:
                    cache.close()
                    cache = None
                pool = _fork_pool(min(workers, len(chunks)), cache_path, limit, metrics)
                if cache_path is not None:
                    cache = MetricsCache(cache_path)
            else:
                pool = _forkserver_pool(min(workers, len(chunks)), cache_path, limit, metrics)
        # The chunks go to the workers now, so that they start on them while on_start
        # runs (the CLI imports its display there).
        batches = _batches(chunks, cache, limit, metrics, pool)
        if on_start is not None:
            on_start(len(paths))
        cached = sum(1 for a in analyses if a is not None and a.sha256)
        progress(len(paths) - len(tasks))  # unreadable files and cache hits are done

        mtimes = {task.index: task.mtime_ns for task in tasks}
        computed = hashed = 0
        for batch in batches:
            file_rows = []
            fresh = []
            now_ns = time.time_ns()
            for item in batch:
                analyses[item.index] = item.analysis
                if item.computed:
                    computed += 1
                    fresh.append(item.analysis)
                elif item.analysis.sha256:
                    cached += 1
                hashed += bool(item.analysis.sha256)
                mtime = mtimes[item.index]
                if item.record_file and item.analysis.sha256 and not _racy(mtime, now_ns):
                    file_rows.append(
                        (str(paths[item.index]), item.analysis.size, mtime, item.analysis.sha256)
                    )
            if cache is not None:
                cache.store(file_rows, fresh, metrics)
            progress(len(batch))
    finally:
        if pool is not None:
            _shut_down(pool)
        if cache is not None:
            cache.close()

    final = [a for a in analyses if a is not None]
    if len(final) != len(paths):  # every file gets exactly one analysis
        raise RuntimeError(f"{len(paths) - len(final)} files were not analysed")
    records = _records(root, paths, final, model, analysis_version(metrics))
    return ScoreResult(
        root=root,
        records=records,
        classes=tuple(model.classes) if model is not None else (),
        model_id=model.id if model is not None else None,
        metrics=metrics.names,
        computed=computed,
        cached=cached,
        hashed=hashed,
        elapsed=time.perf_counter() - started,
        outcomes=Counter(r["outcome"] for r in records),
        labels=Counter(r["label"] for r in records if r["label"] is not None),
    )


def _plan(
    paths: Sequence[Path], root: Path, cache: MetricsCache | None, limit: int,
    metric_set: MetricSet,
) -> tuple[list[Analysis | None], list[_Task]]:
    """Stat every file; take what the cache already knows in full, and make tasks for
    the rest.

    Returns:
        One slot per path (filled for cache hits and unreadable files), and the
        tasks (read, hash, analyse) for the others.
    """
    analyses: list[Analysis | None] = [None] * len(paths)
    tasks: list[_Task] = []
    known = cache.known_files(str(root)) if cache is not None else {}
    reuse: dict[int, tuple[str, _Task]] = {}
    for index, path in enumerate(paths):
        try:
            stat = path.stat()
        except OSError as exc:  # vanished, or a dangling link
            reason = f"cannot read the file: {exc.strerror or exc}"
            analyses[index] = Analysis("", 0, Outcome.CORRUPT, reason)
            continue
        task = _Task(index, str(path), stat.st_size, stat.st_mtime_ns)
        entry = known.get(task.path)
        if entry is not None and entry[:2] == (task.size, task.mtime_ns):
            reuse[index] = (entry[2], task)  # same path, size and mtime: same bytes
        else:
            tasks.append(task)
    if cache is not None and reuse:
        hits = cache.analyses((d for d, _ in reuse.values()), metric_set, limit)
        for index, (digest, task) in reuse.items():
            hit = hits.get(digest)
            if hit is not None and not lacking(hit, metric_set):
                analyses[index] = hit
            else:  # known bytes, but not (fully) measured with these metrics' versions
                tasks.append(task)
    return analyses, tasks


def _racy(mtime_ns: int, now_ns: int) -> bool:
    return now_ns - mtime_ns < RACY_SECONDS * 1e9


def _chunks(tasks: Sequence[_Task], workers: int) -> list[list[_Task]]:
    """The tasks in chunks for the workers, largest files first, chunks shrinking.

    A file's size stands for its image's work: the chunks left at the end are the
    quickest, so no worker finishes a large image while the others idle. Each chunk
    holds 1/(8 × workers) of the files left (at most 32): few chunks, so little IPC,
    while the last ones hold a single small image each, so that the workers finish
    together (a worker would otherwise idle while another ends a chunk of several).
    """
    ordered = sorted(tasks, key=lambda task: -task.size)
    chunks = []
    start = 0
    while start < len(ordered):
        size = max(1, min(32, math.ceil((len(ordered) - start) / (workers * 8))))
        chunks.append(ordered[start : start + size])
        start += size
    return chunks


def _safe_to_fork() -> bool:
    """True when this process runs no thread but its own, native ones included.

    A lock another thread holds at the fork stays held forever in the child: a
    child forked while OpenCV's thread pool exists hangs in `cv2.setNumThreads`.
    OpenBLAS starts threads when NumPy is imported unless ``OPENBLAS_NUM_THREADS=1``
    (`clearlake score` sets it). No /proc (not Linux): False.
    """
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _fork_pool(
    workers: int, cache_path: Path | None, limit: int, metric_set: MetricSet
) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` processes forked from this one, now (see `_safe_to_fork`)."""
    import threadpoolctl  # noqa: F401  (for `use_one_thread`: imported once, here)

    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(str(cache_path) if cache_path else None, limit, metric_set.spec()),
    )
    # A fork-based executor forks all its workers at the first submit, before it
    # starts its own management thread: have it do so now.
    pool.submit(int)
    return pool


def _forkserver_pool(
    workers: int, cache_path: Path | None, limit: int, metric_set: MetricSet
) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` processes forked from a clean server process, not from this one (which
    runs other threads: see `_safe_to_fork`)."""
    context = multiprocessing.get_context("forkserver")
    # Imported once in the server, not in every worker: the metric code and the
    # main module (which each worker would otherwise re-import, e.g. the CLI).
    context.set_forkserver_preload(["__main__", "clearlake.quality.score"])
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(cache_path) if cache_path else None, limit, metric_set.spec()),
    )
    # Such an executor starts one process per call submitted while none is idle: start
    # them all now, so that they set up side by side.
    for _ in range(workers):
        pool.submit(int)
    return pool


def _batches(
    chunks: Sequence[list[_Task]],
    cache: MetricsCache | None,
    limit: int,
    metric_set: MetricSet,
    pool: concurrent.futures.ProcessPoolExecutor | None,
) -> Iterator[list[_Done]]:
    """The chunks' results, one batch per chunk: from `pool`, which gets every chunk now
    (the caller shuts it down), else computed in this process as they are iterated."""
    if pool is None:
        return ([_run_task(task, cache, limit, metric_set) for task in chunk]
                for chunk in chunks)
    futures = [pool.submit(_run_chunk, chunk) for chunk in chunks]
    return (future.result() for future in concurrent.futures.as_completed(futures))


def _shut_down(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    # On Ctrl-C or an error, drop the chunks not started instead of finishing them
    # all; batches already yielded are in the cache, so a re-run resumes.
    pool.shutdown(wait=True, cancel_futures=True)


def _records(
    root: Path,
    paths: Sequence[Path],
    analyses: Sequence[Analysis],
    model: Model | None,
    version: str,
) -> list[dict[str, Any]]:
    """One output record per file; the model labels every ok image in one call."""
    from clearlake.quality.classifier import predict_each

    by_index = {} if model is None else predict_each(model,
        {i: a.metrics for i, a in enumerate(analyses) if a.ok and a.metrics is not None})
    records = []
    for index, (path, analysis) in enumerate(zip(paths, analyses, strict=True)):
        prediction = by_index.get(index)
        records.append({
            "path": path.relative_to(root).as_posix(),
            "sha256": analysis.sha256 or None,
            "size": analysis.size,
            "width": analysis.width,
            "height": analysis.height,
            "outcome": str(analysis.outcome),
            "reason": analysis.reason,
            "metrics": analysis.metrics or None,
            "label": prediction.label if prediction is not None else None,
            "probabilities": dict(prediction.probabilities) if prediction is not None else None,
            "model_id": model.id if model is not None else None,
            "analysis_version": version,
        })
    return records


# --- output -------------------------------------------------------------------------


def write_records(records: Sequence[dict[str, Any]], out: Path) -> None:
    """Write score records as Parquet, CSV or JSON Lines, chosen by `out`'s extension.

    All three have the columns of a branch's results table (`clearlake.table`): path,
    label, outcome, reason, `p_<class>`, a column per metric, then the other fields.

    Args:
        records: the records (`ScoreResult.records`).
        out: destination; ``.parquet``, ``.csv`` or ``.jsonl``.

    Raises:
        ValueError: unknown extension.
    """
    from clearlake.table import parquet_bytes, records_table

    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{out}: output must end in one of {', '.join(OUTPUT_FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = records_table(records)
    if suffix == ".parquet":
        out.write_bytes(parquet_bytes(table))
        return
    rows = table.to_pylist()
    if suffix == ".csv":
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=table.column_names)
            writer.writeheader()
            writer.writerows(rows)  # None → empty cell; floats as repr (round-trip)
    else:
        with out.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, allow_nan=False))
                handle.write("\n")


def worst(result: ScoreResult, count: int = 10) -> list[dict[str, Any]]:
    """The images most likely to be bad: lowest P(good), else lowest top probability.

    Args:
        result: a score result with labels.
        count: how many to return.

    Returns:
        Up to `count` records, worst first (ok images only).
    """
    labelled = [r for r in result.records if r["label"] is not None]
    if "good" in result.classes:
        return sorted(labelled, key=lambda r: (r["probabilities"]["good"], r["path"]))[:count]
    return sorted(labelled, key=lambda r: (max(r["probabilities"].values()), r["path"]))[:count]
