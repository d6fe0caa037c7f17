"""Killed workers and killed flow processes leave the branch correct after the next run."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from distributed import Client

from clearlake import pipeline
from clearlake.lakefs import LakeFS
from clearlake.provenance import ResultsMarker, latest_results, signing_key
from clearlake.reconcile import clean_temporary_branches
from clearlake.transaction import TEMP_BRANCH_PREFIX
from tests.pipeline_support import commit_images, photo, records_on, unique_seed

pytestmark = pytest.mark.slow


def wait_for(condition: Any, timeout_s: float = 120.0, every_s: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(every_s)
    raise TimeoutError("condition not met in time")


def test_a_dask_worker_killed_mid_batch(
    lakefs: LakeFS, repo: str, classify: Any, dask_address: str
) -> None:
    seed = unique_seed()
    images = {f"big/{i:02d}.jpg": photo(seed + i, size=900) for i in range(24)}
    commit_images(lakefs, repo, images)
    with Client(dask_address) as client:
        outcome: dict[str, Any] = {}
        # The thread runs in this test's context: the stack's Prefect settings travel in it.
        run = threading.Thread(target=contextvars.copy_context().run,
                               args=(lambda: outcome.update(classify(repo)),))
        run.start()
        busy = wait_for(lambda: [w for w, keys in client.processing().items() if keys]
                        or not run.is_alive())
        assert busy is not True, f"the run ended before a batch was seen running: {outcome}"
        pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        run.join()
    # Dask reschedules the lost batch; if it could not, its images are recorded as
    # failed and named for retry, and the next run measures them.
    assert outcome["status"] == "merged"
    if outcome["counts"]["failed"]:
        classify(repo)
    records = records_on(lakefs, repo)
    assert set(records) == set(images)
    assert {r["outcome"] for r in records.values()} == {"ok"}


def test_the_flow_process_killed_mid_merge(
    lakefs: LakeFS, repo: str, classify: Any, dask_address: str
) -> None:
    key = signing_key()
    seed = unique_seed()
    images = {f"k/{i}.jpg": photo(seed + i) for i in range(6)}
    commit_images(lakefs, repo, images)
    # A user mid-upload keeps the merge retrying: a window in which to kill the run.
    lakefs.upload_object(repo, "main", "k/wip.jpg", photo(seed + 99))
    run = subprocess.Popen(
        [sys.executable, "-m", "clearlake.cli", "classify", repo, "main",
         "--dask-address", dask_address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def committed_temp_branch() -> str | None:
        for name, head in lakefs.list_branches(repo, prefix=TEMP_BRANCH_PREFIX):
            if ResultsMarker.from_metadata(lakefs.get_commit(repo, head).metadata, key):
                return name
        return None

    pending = wait_for(committed_temp_branch, every_s=0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not records_on(lakefs, repo)  # nothing partial reached the branch
    lakefs.commit(repo, "main", "the user finishes")

    summary = classify(repo)
    assert summary["status"] == "merged"
    assert summary["counts"]["computed"] == 1  # only wip.jpg; the rest came from the store
    cleanup = clean_temporary_branches(lakefs, repo, key)
    assert cleanup.deleted == [pending]  # superseded by the run that finished the work
    assert [name for name, _ in lakefs.list_branches(repo)] == ["main"]
    assert set(records_on(lakefs, repo)) == {*images, "k/wip.jpg"}
    latest = latest_results(lakefs, repo, "main", key)
    assert latest is not None and latest[1].source_commit == summary["source_commit"]
    assert len(pipeline.read_table(lakefs, repo, "main", "main")) == 7
