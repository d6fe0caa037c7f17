"""The flow-run forkserver: a launched module runs as `python -m` would, in a forked child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearlake.stack import forkserver

PROBE = """\
import os, sys, time
print(os.getpid(), os.getppid(), os.getcwd(), os.environ.get("PROBE"), *sys.argv[1:], flush=True)
print("on stderr", file=sys.stderr, flush=True)
time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    (folder / "preloaded.py").write_text("VALUE = 1\n")
    return folder


@pytest.fixture
def server(tmp_path: Path, code: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "forkserver.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "clearlake.stack.forkserver", "serve", "--socket", str(sock),
         "--preload", "preloaded", "--watch", str(code)],
        env={**os.environ, "PYTHONPATH": str(code)}, stderr=subprocess.PIPE,
    )
    _wait_for_socket(sock)
    yield process, sock
    process.kill()
    process.wait()


def _wait_for_socket(sock: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sock.exists():
            return
        time.sleep(0.05)
    raise AssertionError("the forkserver did not start listening")


def _launch(sock: Path, code: Path, cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    command = forkserver.launch_command(sys.executable, sock, "probe")
    return subprocess.Popen(
        [*command, *args], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(code), **env},
    )


def _probe_line(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    return process.stdout.readline().split()


def test_a_launched_module_runs_forked_with_the_launchers_environment_and_exit_code(
    server: tuple[subprocess.Popen[bytes], Path], code: Path, tmp_path: Path
) -> None:
    process, sock = server
    launched = _launch(sock, code, tmp_path, "one", "two", PROBE="hello", PROBE_EXIT="3")
    out, err = launched.communicate(timeout=20)
    pid, ppid, cwd, probe, *args = out.split()
    assert int(ppid) == process.pid  # forked by the server, not a new interpreter
    assert int(pid) != launched.pid
    assert (cwd, probe, args) == (str(tmp_path), "hello", ["one", "two"])
    assert "on stderr" in err
    assert launched.returncode == 3


def test_sigterm_to_the_launcher_reaches_the_run_and_its_status_comes_back(
    server: tuple[subprocess.Popen[bytes], Path], code: Path, tmp_path: Path
) -> None:
    _, sock = server
    launched = _launch(sock, code, tmp_path, PROBE_SLEEP="60")
    child = int(_probe_line(launched)[0])
    launched.send_signal(signal.SIGTERM)
    assert launched.wait(timeout=20) == -signal.SIGTERM
    assert not _running(child)


def test_a_launcher_killed_outright_takes_its_run_with_it(
    server: tuple[subprocess.Popen[bytes], Path], code: Path, tmp_path: Path
) -> None:
    _, sock = server
    launched = _launch(sock, code, tmp_path, PROBE_SLEEP="60")
    child = int(_probe_line(launched)[0])
    launched.kill()
    launched.wait(timeout=20)
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def test_without_a_server_the_launcher_starts_a_new_interpreter(
    code: Path, tmp_path: Path
) -> None:
    launched = _launch(tmp_path / "absent.sock", code, tmp_path, "x", PROBE="fresh")
    out, err = launched.communicate(timeout=60)
    pid, _, _, probe, arg = out.split()
    assert (int(pid), probe, arg) == (launched.pid, "fresh", "x")  # exec'd in place
    assert "starting a new interpreter" in err


def test_changed_code_is_never_run_stale_and_the_server_restarts_when_idle(
    server: tuple[subprocess.Popen[bytes], Path], code: Path, tmp_path: Path
) -> None:
    process, sock = server
    preloaded = code / "preloaded.py"
    os.utime(preloaded, (time.time() + 5, time.time() + 5))
    stale = _launch(sock, code, tmp_path)
    out, err = stale.communicate(timeout=60)
    assert out and int(out.split()[0]) == stale.pid, err
    assert "changed since it was preloaded" in err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the restarted server (same pid) forks again
        fresh = _launch(sock, code, tmp_path)
        out, _ = fresh.communicate(timeout=60)
        if int(out.split()[1]) == process.pid:
            return
        time.sleep(0.2)
    raise AssertionError("the server never restarted")


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_server_with_threads_running_refuses_to_fork(code: Path, tmp_path: Path) -> None:
    (code / "threaded.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    sock = tmp_path / "threaded.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "clearlake.stack.forkserver", "serve", "--socket", str(sock),
         "--preload", "threaded"], env={**os.environ, "PYTHONPATH": str(code)},
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_socket(sock)
        launched = _launch(sock, code, tmp_path)
        out, err = launched.communicate(timeout=60)
        assert out and int(out.split()[0]) == launched.pid, err  # by a new interpreter
        assert "forking is unsafe" in err
    finally:
        process.kill()
        process.wait()
