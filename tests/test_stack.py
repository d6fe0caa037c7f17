"""The local stack and the CLI, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clearlake.errors import StackError
from clearlake.stack import install, seaweedfs
from clearlake.stack.services import (
    SERVICE_NAMES,
    Stack,
    free_loopback_ports,
    port_is_free,
    port_variable,
)
from tests.pipeline_support import run_cli


@pytest.mark.slow  # starts servers without the stack fixture
def test_up_twice_status_and_down_leave_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = free_loopback_ports()
    env = {port_variable(name): str(port) for name, port in ports.items()}
    try:
        _up_twice_then_down(home, ports, env)
    finally:  # never leave a failed test's stack running
        run_cli("stack", "down", home=home, check=False)


def _up_twice_then_down(home: Path, ports: dict[str, int], env: dict[str, str]) -> None:
    first = run_cli("stack", "up", home=home, env=env)
    assert f"http://127.0.0.1:{ports['lakefs']}" in first.stdout

    assert "blockstore: s3" in first.stdout  # the default profile
    names = [s.name for phase in Stack(home).services() for s in phase]
    assert set(names) == set(SERVICE_NAMES) - {"postgres"}

    def pids() -> dict[str, int]:
        return {name: json.loads((home / "run" / f"{name}.json").read_text())["pid"]
                for name in names}

    started = pids()
    second = run_cli("stack", "up", home=home)  # remembers the ports it was given
    assert second.stdout.count("already running") == len(names)
    assert pids() == started
    status = run_cli("stack", "status", home=home).stdout
    assert status.count("healthy") == len(names)

    # Secrets are the owner's only.
    assert stat.S_IMODE((home / "secrets.json").stat().st_mode) == 0o600

    run_cli("stack", "down", home=home)
    for pid in started.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert all(port_is_free(p) for p in ports.values())
    assert all(port_is_free(p) for p in seaweedfs.internal_ports(ports["s3"]).values())
    stopped = run_cli("stack", "status", home=home, check=False)
    assert stopped.returncode == 1 and stopped.stdout.count("stopped") == len(names)
    assert (home / "lakefs" / "metadata").exists() and (home / "s3" / "data").exists()


@pytest.mark.slow
def test_lakefs_serves_its_real_web_ui(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.lakefs_url}/") as response:
        page = response.read().decode()
    assert '<div id="root">' in page and "/assets/index-" in page  # the built UI
    assert "UI has not been built" not in page


@pytest.mark.slow
def test_prefect_serves_its_ui(stack: Stack) -> None:
    with urllib.request.urlopen(stack.prefect_api_url.removesuffix("/api") + "/") as response:
        assert "<title>Prefect Server</title>" in response.read().decode()


@pytest.mark.slow
def test_lakectl_from_the_same_build_works(
    stack: Stack, repo: str, lakectl_env: dict[str, str], tmp_path: Path
) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8 not really a jpeg")

    def lakectl(*args: str) -> str:
        return subprocess.run(
            ["lakectl", *args], env=lakectl_env, capture_output=True, text=True, check=True
        ).stdout

    lakectl("fs", "upload", "-s", str(image), f"lakefs://{repo}/main/images/a.jpg")
    lakectl("commit", f"lakefs://{repo}/main", "-m", "add a.jpg")
    assert "add a.jpg" in lakectl("log", f"lakefs://{repo}/main")


@pytest.mark.slow
def test_init_repo_twice_is_harmless(stack: Stack, lakefs: object) -> None:
    name = "init-repo-test"
    assert "created" in run_cli("init-repo", name, home=stack.home).stdout
    assert "already exists" in run_cli("init-repo", name, home=stack.home).stdout


def test_install_names_the_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither go nor npm on it
    with pytest.raises(StackError, match="`go` is not installed"):
        install.install_lakefs(report=lambda line: None)


@pytest.mark.slow  # starts servers without the stack fixture
def test_up_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = free_loopback_ports()
        stack = Stack(home=tmp_path, ports={**ports, "lakefs": taken})
        with pytest.raises(StackError, match=f"port {taken} for lakefs is in use"):
            stack.up(report=lambda line: None)
    # The S3 server had started before lakeFS's port was found taken: it is stopped again.
    assert stack._running_pid("s3") is None
    deadline = time.monotonic() + 10
    while (busy := [p for p in seaweedfs.all_ports(ports["s3"]) if not port_is_free(p)]):
        sockets = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
        assert time.monotonic() < deadline, (busy, [line for line in sockets.splitlines()
                                                    if any(f":{p} " in line for p in busy)])
        time.sleep(0.2)


@pytest.mark.slow  # starts an S3 server without the stack fixture
def test_the_s3_server_is_ready_only_once_its_bucket_takes_writes(tmp_path: Path) -> None:
    # `weed mini` answers /healthz before its bucket exists: the stack's check must not.
    import botocore.session

    port = seaweedfs.free_s3_port(port_is_free)
    endpoint = seaweedfs.endpoint(port)
    key_id, secret = "clearlake-test-key", "clearlake-test-secret-0123456789"
    assert not seaweedfs.bucket_ready(endpoint, key_id, secret)  # nothing listens yet
    (tmp_path / "data").mkdir()
    weed = subprocess.Popen(
        seaweedfs.command(install.weed_binary(), tmp_path / "data", tmp_path, port),
        env={**os.environ, **seaweedfs.environment(key_id, secret)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not seaweedfs.bucket_ready(endpoint, key_id, secret):
            assert weed.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
            aws_secret_access_key=secret)
        client.put_object(Bucket=seaweedfs.BUCKET, Key="first-write", Body=b"x")  # at once
        assert not seaweedfs.bucket_ready(endpoint, key_id, "a-wrong-secret-0123456789")
    finally:
        weed.terminate()
        weed.wait(timeout=30)


@pytest.mark.slow
def test_dask_workers_keep_numpy_temporaries_on_the_heap(stack: Stack) -> None:
    from distributed import Client

    from clearlake.config import DASK_WORKER_MALLOC_ENV

    with Client(stack.dask_address, timeout=30) as client:
        client.wait_for_workers(len(os.sched_getaffinity(0)), timeout=60)
        environments = client.run(lambda: dict(os.environ))
        workers, scheduler = _housekeeping(client)
    for environment in environments.values():
        assert {k: environment.get(k) for k in DASK_WORKER_MALLOC_ENV} == DASK_WORKER_MALLOC_ENV
    # And with Dask's housekeeping kept quiet (`DASK_QUIET_CONFIG`), scheduler included.
    assert (workers, scheduler) == ([QUIET_WORKER] * len(environments), QUIET)


# What `DASK_QUIET_CONFIG` sets, as a running scheduler or worker uses it.
QUIET = {"tick ms": 1000, "system monitor ms": 2000, "profiling": False}
QUIET_WORKER = {**QUIET, "memory monitor s": 0.5}


def _housekeeping(client: Any) -> tuple[list[dict[str, object]], dict[str, object]]:
    """What each worker and the scheduler of `client`'s cluster run of Dask's housekeeping."""

    # Nested, so that Dask ships them by value (workers cannot import this test module).
    def on_scheduler(dask_scheduler: Any) -> dict[str, object]:
        callbacks = dask_scheduler.periodic_callbacks
        return {"tick ms": callbacks["tick"].callback_time,
                "system monitor ms": callbacks["monitor"].callback_time,
                "profiling": "profile" in callbacks}

    def on_worker(dask_worker: Any) -> dict[str, object]:
        return {**on_scheduler(dask_worker),
                "memory monitor s": dask_worker.memory_manager.memory_monitor_interval}

    return list(client.run(on_worker).values()), client.run_on_scheduler(on_scheduler)


@pytest.mark.slow  # starts a Dask cluster
def test_a_runs_own_local_cluster_is_set_up_as_the_stacks() -> None:
    from clearlake.flows.classify import local_cluster
    from distributed import Client

    from clearlake.config import DASK_WORKER_MALLOC_ENV

    with local_cluster(n_workers=1, threads_per_worker=1, processes=True,
                       dashboard_address=None) as cluster, Client(cluster) as client:
        workers, scheduler = _housekeeping(client)
        environment = next(iter(client.run(lambda: dict(os.environ)).values()))
    assert (workers, scheduler) == ([QUIET_WORKER], QUIET)
    assert {k: environment.get(k) for k in DASK_WORKER_MALLOC_ENV} == DASK_WORKER_MALLOC_ENV


@pytest.mark.slow
def test_dask_workers_are_ready_before_their_first_batch(stack: Stack) -> None:
    from distributed import Client

    with Client(stack.dask_address, timeout=30) as client:
        client.wait_for_workers(len(os.sched_getaffinity(0)), timeout=60)
        # A lambda travels by value; a function of this module would need `tests` importable.
        ready = client.run(lambda: ("prefect_aws" in sys.modules,
                                    sys.modules["cv2"].getNumThreads()))
    assert set(ready.values()) == {(True, 1)}  # Prefect's collections loaded, one OpenCV thread


@pytest.mark.slow
def test_the_work_pool_starts_runs_through_the_forkserver(stack: Stack) -> None:
    from prefect.client.orchestration import get_client

    from clearlake.stack.services import WORK_POOL

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(WORK_POOL)
    command = pool.base_job_template["variables"]["properties"]["command"]["default"]
    assert "forkserver.py launch" in command and str(stack.forkserver_socket) in command


@pytest.mark.slow
def test_the_lakefs_web_ui_opens_on_the_data_not_an_email_form(stack: Stack) -> None:
    # lakeFS's UI shows its "User Configuration" form while comm_prefs_missing is true.
    with urllib.request.urlopen(f"{stack.lakefs_url}/api/v1/setup_lakefs") as response:
        state = json.loads(response.read())
    assert state["state"] == "initialized" and state["comm_prefs_missing"] is False
