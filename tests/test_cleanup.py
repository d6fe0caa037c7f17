"""A benchmark or test session stopped by SIGTERM or SIGINT stops exactly what it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearlake.stack.services import port_is_free

ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 240.0
HOLD_ENV = "CLEARLAKE_TEST_HOLD_STACK"


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid`; None once it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (a service and everything it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


class _Output:
    """A child's output lines, read in the background (a blocking read never stalls a test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True).start()

    def wait_for(self, needle: str, process: subprocess.Popen[str]) -> str:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while time.monotonic() < deadline:
            if found := next((line for line in self.lines if needle in line), None):
                return found
            assert process.poll() is None, "exited early:\n" + "".join(self.lines[-40:])
            time.sleep(0.5)
        raise AssertionError(f"no {needle!r} within {UP_TIMEOUT_S} s:\n"
                             + "".join(self.lines[-40:]))


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: SeaweedFS's Unix sockets live under it (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARLAKE_", "PREFECT_", "LAKEFS_"))}
    return {**env, **extra}


def _recorded(home: Path) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """The services `home`'s stack started {name: (pid, start time)}, and its ports."""
    services = {}
    for path in (home / "run").glob("*.json"):
        record = json.loads(path.read_text())
        if isinstance(record.get("pid"), int):
            services[path.stem] = (record["pid"], record["start_time"])
    ports = list(json.loads((home / "stack.json").read_text())["ports"].values())
    return services, ports


def _signal_and_check(process: subprocess.Popen[str], output: _Output, home: Path,
                      signum: int) -> None:
    """Stop `process` with `signum` (and again while it stops); assert its stack is gone."""
    services, ports = _recorded(home)
    assert {"lakefs", "prefect", "bridge", "dask-scheduler", "dask-workers",
            "prefect-worker"} <= set(services)
    try:
        os.kill(process.pid, signum)
        time.sleep(1.0)
        # An impatient second signal must not cut the clean-up short.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        process.wait(STOP_TIMEOUT_S)
        time.sleep(1.0)  # the reader thread's last lines
        log = "".join(output.lines[-30:])
        left = {name: pid for name, (pid, start) in services.items()
                if _start_time(pid) == start or _group_members(pid)}
        assert not left, f"still running after {signal.Signals(signum).name}: {left}\n{log}"
        taken = [port for port in ports if not port_is_free(port)]
        assert not taken, f"ports still taken: {taken}\n{log}"
    finally:
        # Whatever the stopped process left behind (only what it started) goes now.
        for pid, start in services.values():
            if _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_benchmark_stops_its_stack_when_signalled(short_tmp: Path, signum: int) -> None:
    """`python -m bench.trigger`, signalled once its stack is up, stops every service."""
    # The benchmark keeps its state in a temporary folder: under TMPDIR, so in short_tmp.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.trigger", "--commits", "1", "--warmup", "0",
         "--inflow", "0", "--imports", "0"],
        cwd=ROOT, env=_clean_env(TMPDIR=str(short_tmp)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = _Output(process)
    try:
        output.wait_for("stack up in", process)
        [home] = short_tmp.glob("clearlake-bench-trigger-*")
        _signal_and_check(process, output, home, signum)
        assert process.returncode == 128 + signum, "".join(output.lines[-30:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(HOLD_ENV), reason="run by the test below only")
def test_hold_stack(stack: object) -> None:
    """Holds the session's stack until the process is signalled (a helper, not a check)."""
    print(f"HOLDING {stack.home}", flush=True)  # type: ignore[attr-defined]
    time.sleep(UP_TIMEOUT_S)


@pytest.mark.slow
def test_test_session_stops_its_stack_on_sigterm(short_tmp: Path) -> None:
    """A pytest session stopped by SIGTERM tears its `stack` fixture down."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         f"--basetemp={short_tmp / 'b'}", f"{Path(__file__)}::test_hold_stack"],
        cwd=ROOT, env=_clean_env(**{HOLD_ENV: "1"}), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = _Output(process)
    try:
        home = Path(output.wait_for("HOLDING ", process).split("HOLDING ", 1)[1].strip())
        _signal_and_check(process, output, home, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
