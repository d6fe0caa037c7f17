"""`score_directory`'s two ways to get worker processes give the same records.

Workers are forked from the scoring process itself when it runs no other thread
(they inherit its imports); otherwise they come from a forkserver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from clearlake.quality import score as scoring

ONE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # as `clearlake score` runs


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Twelve photo crops (every third one blurred) and a file that is not an image."""
    photo = load_sample_image("china.jpg")
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for index in range(12):
        crop = Image.fromarray(photo[index * 20 : index * 20 + 200, index * 30 : index * 30 + 260])
        if index % 3 == 0:
            crop = crop.resize((65, 50)).resize((260, 200))
        crop.save(root / ("sub" if index % 2 else "") / f"img{index:02d}.jpg", quality=90)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    # Older than score's racy window, so a cache records them (files modified in the
    # last seconds are hashed again on the next run, whatever the machine's speed).
    past = time.time() - 60
    for path in root.rglob("*.jpg"):
        os.utime(path, (past, past))
    return root


def _records_in_a_fresh_process(root: Path) -> list[dict[str, object]]:
    probe = (
        "import json, sys; from pathlib import Path; from clearlake.quality import score as s\n"
        "assert s._safe_to_fork()  # no other thread: workers fork from this process\n"
        "r = s.score_directory(Path(sys.argv[1]), jobs=2, use_cache=False)\n"
        "print(json.dumps(r.records))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True,
                          text=True, check=True, env=ONE_THREAD)
    return json.loads(done.stdout)


def test_forked_and_forkserver_workers_give_the_same_records(images: Path) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # a thread runs: forking would be unsafe
    other.start()
    try:
        assert not scoring._safe_to_fork()
        from_forkserver = scoring.score_directory(images, jobs=2, use_cache=False)
    finally:
        stop.set()
        other.join()
    forked = _records_in_a_fresh_process(images)
    assert len(forked) == 13
    assert [r["outcome"] for r in forked].count("ok") == 12
    assert forked == json.loads(json.dumps(from_forkserver.records))


def test_a_cache_is_shared_by_both_kinds_of_worker(images: Path, tmp_path: Path) -> None:
    # Forked workers start before the cache exists: they open it on their first chunk.
    cache = tmp_path / "cache"
    first = json.loads(subprocess.run(
        [sys.executable, "-c", _CACHED, str(images), str(cache)],
        capture_output=True, text=True, check=True, env=ONE_THREAD).stdout)
    assert (first["computed"], first["cached"]) == (13, 0)
    (images / "img00.jpg").rename(images / "renamed.jpg")  # new path, same bytes
    again = scoring.score_directory(images, jobs=2, cache_dir=cache)
    assert (again.computed, again.cached, again.hashed) == (0, 13, 1)


_CACHED = (
    "import json, sys; from pathlib import Path; from clearlake.quality import score as s\n"
    "r = s.score_directory(Path(sys.argv[1]), jobs=2, cache_dir=Path(sys.argv[2]))\n"
    "print(json.dumps({'computed': r.computed, 'cached': r.cached}))"
)


def test_native_threads_make_forking_unsafe() -> None:
    # OpenCV's thread pool, once started, would hang a forked child: forkserver instead.
    probe = (
        "import cv2, numpy as np; from clearlake.quality import score as s\n"
        "before = s._safe_to_fork()\n"
        "cv2.setNumThreads(2); cv2.GaussianBlur(np.zeros((2000, 2000), np.uint8), (9, 9), 0)\n"
        "print(before, s._safe_to_fork())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, env=ONE_THREAD)
    assert done.stdout.split() == ["True", "False"]


_REUSE = (
    "import resource, sys; import numpy as np; from clearlake.quality import memory\n"
    "if sys.argv[1] == 'keep': memory.keep_freed_memory()\n"
    "np.ones(5 << 20)  # 40 MiB: over glibc's largest automatic mmap threshold (32 MiB)\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "for _ in range(5): np.ones(5 << 20)\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"
)


@pytest.mark.parametrize(("mode", "reused"), [("keep", True), ("default", False)])
def test_keep_freed_memory_reuses_freed_arrays(mode: str, reused: bool) -> None:
    # Five 40 MiB arrays are 51,200 pages of 4 KiB: glibc's default maps and unmaps each
    # one, so every page faults in again; once kept, the freed block is reused. (Without
    # NumPy's transparent huge pages, which would make each fault 512 pages.)
    env = {**ONE_THREAD, "NUMPY_MADVISE_HUGEPAGE": "0"}
    done = subprocess.run([sys.executable, "-c", _REUSE, mode], capture_output=True,
                          text=True, check=True, env=env)
    faults = int(done.stdout)
    assert faults < 1_000 if reused else faults > 40_000, faults


def test_metric_values_do_not_depend_on_keeping_freed_memory(images: Path) -> None:
    probe = (
        "import json, sys; from pathlib import Path; from clearlake.quality import memory\n"
        "from clearlake.quality.analyse import analyse\n"
        "if sys.argv[2] == 'keep': memory.keep_freed_memory()\n"
        "paths = sorted(Path(sys.argv[1]).rglob('img*.jpg'))\n"
        "print(json.dumps([analyse(p.read_bytes()).metrics for _ in range(2) for p in paths]))"
    )
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe, str(images), mode],
                                      capture_output=True, text=True, check=True,
                                      env=ONE_THREAD).stdout) for mode in ("keep", "default")]
    assert len(runs[0]) == 24
    assert runs[0] == runs[1]  # JSON floats round-trip exactly
