"""Workers that need only credentials: the proof that Dask workers can live on other hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from clearlake.lakefs import LakeFS
from clearlake.stack.services import LOOPBACK, Stack, free_loopback_ports
from tests.pipeline_support import commit_images, photo, unique_seed

pytestmark = pytest.mark.slow


@pytest.fixture
def remote_cluster(
    stack: Stack, lakefs: LakeFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A Dask scheduler and two workers started as separate processes, from a working
    directory of their own, with a state directory that is empty and an environment that
    holds only where lakeFS and Prefect are and lakeFS's keys."""
    elsewhere = tmp_path_factory.mktemp("another-host")
    nowhere = elsewhere / "no-state"
    nowhere.mkdir()
    settings = lakefs.settings
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(elsewhere),
        "CLEARLAKE_HOME": str(nowhere),
        "LAKEFS_ENDPOINT": settings.endpoint,
        "LAKEFS_ACCESS_KEY_ID": settings.access_key_id,
        "LAKEFS_SECRET_ACCESS_KEY": settings.secret_access_key.get_secret_value(),
        "PREFECT_API_URL": stack.prefect_api_url,
    }
    port = free_loopback_ports()["dask"]
    address = f"tcp://{LOOPBACK}:{port}"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", LOOPBACK, "--port", str(port),
         "--no-dashboard"], cwd=elsewhere, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
         "--host", LOOPBACK, "--no-dashboard", "--local-directory", str(elsewhere / "dask")],
        cwd=elsewhere, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, set_as_default=False, timeout=5) as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address, elsewhere
        assert list(nowhere.iterdir()) == []  # nothing was created where state would be
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def test_workers_configured_only_by_their_environment_read_presigned(
    lakefs: LakeFS, repo: str, remote_cluster: tuple[str, Path]
) -> None:
    from clearlake.flows.classify import classify_commit

    address, elsewhere = remote_cluster
    seed = unique_seed()
    images = {f"shoot/{i:02d}.jpg": photo(seed + i) for i in range(12)}
    commit_images(lakefs, repo, images)
    summary = classify_commit(repo, "main", dask_address=address, batch_size=4)
    assert summary["status"] == "merged" and summary["read_path"] == "presigned"
    assert summary["counts"]["computed"] == 12 and summary["counts"]["failed"] == 0
    with Client(address, set_as_default=False) as client:
        # The batches ran on these workers, in their own working directory.
        ran = client.run(lambda dask_worker: dask_worker.state.transition_counter)
        assert all(count > 0 for count in ran.values())
        assert set(client.run(os.getcwd).values()) == {str(elsewhere)}
