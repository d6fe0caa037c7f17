"""Start flow runs from a server that has already imported Prefect and the flows.

The stack's process worker starts every flow run as a new `python -m prefect.engine`,
which spends seconds importing Prefect, Dask and OpenCV before the run reports
Running: most of the time from a commit to its run. So the stack's work pool runs
this file's `launch` instead (stdlib only, started with `python -S`): it hands its
environment, working directory, arguments and stdio to the server, which forks a
child — imports already done — that runs the module as `python -m` would. To the
worker the launcher *is* the flow-run process: the run's output goes to the
launcher's stdout and stderr, its exit status is the launcher's, and the SIGTERM or
SIGINT that cancels a run is forwarded; if the launcher is killed outright, the
server kills the child.

When the server is not running, or the code it imported (files under `--watch`) has
changed on disk since, the launcher execs a plain `python -m MODULE` instead: slower,
never stale. A stale server restarts itself (exec, same pid) once no child of it
runs, so the next run forks fresh code again.

    python -m clearlake.stack.forkserver serve --socket S --watch DIR --preload MOD...
    python -S .../forkserver.py launch S MODULE [ARGS...]

The protocol, over a Unix socket: the launcher sends a 4-byte big-endian length and
a JSON request ({"module", "args", "cwd", "env"}) with its fds 0, 1 and 2 attached
(SCM_RIGHTS); the server answers JSON lines: {"pid": N} then {"exit": code}, or
{"fallback": reason}. An exit code below zero is the signal that ended the child.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 4 << 20  # an environment, a path and a few arguments
_LENGTH = struct.Struct(">I")


# -- launcher (stdlib only: it runs with `python -S`) ----------------------------------------


def launch(socket_path: str, module: str, args: list[str]) -> int:
    """Run `module` as `python -m module args` in a child of the server; return its exit code.

    Falls back to exec'ing a fresh interpreter (never returns) when the server cannot.
    """
    child: int | None = None
    pending: list[int] = []  # signals that came before the child did

    def forward(signum: int, _frame: Any) -> None:
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    request = json.dumps({"module": module, "args": args, "cwd": os.getcwd(),
                          "env": dict(os.environ)}).encode()
    message = _LENGTH.pack(len(request)) + request
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(socket_path)
        sent = socket.send_fds(conn, [message], [0, 1, 2])
        if sent < len(message):
            conn.sendall(message[sent:])
    except OSError as error:
        _exec_fresh(module, args, f"no flow-run forkserver at {socket_path} ({error})",
                    pending)
    replies = conn.makefile("r")
    first = _read_reply(replies)
    if "pid" not in first:
        conn.close()
        why = first.get("fallback", "the forkserver did not start the run")
        _exec_fresh(module, args, why, pending)
    child = first["pid"]
    for signum in pending:
        forward(signum, None)
    done = _read_reply(replies)
    if "exit" in done:
        return done["exit"]
    # The server went away before the child ended: wait it out, its status is lost.
    while _alive(child):
        time.sleep(0.2)
    print("clearlake forkserver: lost the flow run's exit status", file=sys.stderr)
    return 1


def _read_reply(replies: Any) -> dict[str, Any]:
    line = replies.readline()  # retried by Python after a forwarded signal (PEP 475)
    return json.loads(line) if line else {}


def _exec_fresh(module: str, args: list[str], why: str, pending: list[int]) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    if pending:  # cancelled before it started: end as the run would have
        exit_with(-pending[0])
    print(f"clearlake forkserver: {why}; starting a new interpreter", file=sys.stderr)
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def exit_with(code: int) -> None:
    """Exit as the child did: with its code, or by the signal that ended it."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# -- server ---------------------------------------------------------------------------------


@dataclass
class ChildRun:
    """What a forked child runs once it has left the server's loop."""

    module: str
    args: list[str]
    cwd: str
    env: dict[str, str]

    def run(self) -> int:
        """Become `python -m module args` in `cwd` with `env`; return the exit code."""
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.env)
        sys.argv = [self.module, *self.args]
        sys.path[0] = self.cwd  # as `python -m` puts the working directory first
        settings = sys.modules.get("prefect.context")
        if settings is not None:
            # Prefect read its settings from the server's environment at import.
            settings.refresh_global_settings_context()
        try:
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            return _exit_code(exit_.code)
        return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class ForkServer:
    """Preload modules once, then fork a child per launch request.

    Single-threaded (forking a process with threads is unsafe): one selector waits
    on new connections, launchers going away, and SIGCHLD (through a wakeup fd).

    Args:
        socket_path: the Unix socket to listen on (replaced if left over).
        preload: modules to import before serving.
        watch: a folder; a change to any imported module file under it makes the
            server stale.
    """

    def __init__(self, socket_path: Path, preload: list[str], watch: Path | None) -> None:
        self.socket_path = socket_path
        self.preload = preload
        self.watch = watch.resolve() if watch else None
        self.children: dict[int, socket.socket] = {}  # pid → its launcher's connection
        self.stale_reason: str | None = None
        self.unsafe_reason: str | None = None
        self._sources: dict[str, float] = {}

    def serve(self) -> ChildRun:
        """Serve until a forked child returns from here with what it must run."""
        for module in self.preload:
            importlib.import_module(module)
        self._sources = self._source_times()
        threads = len(os.listdir("/proc/self/task"))
        if threads > 1:
            # A child forked while another thread holds a lock can hang on it forever.
            self.unsafe_reason = (f"{threads} threads run after preloading, so forking is "
                                  "unsafe; check the forkserver's environment")
            _log(f"refusing to fork: {self.unsafe_reason}")
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)  # only the stack's user may start runs
        listener.listen(64)
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, so the fd is written
        signal.set_wakeup_fd(wake_write.fileno())
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        _log(f"serving on {self.socket_path}, preloaded {', '.join(self.preload) or 'nothing'}")
        while True:
            for key, _ in selector.select():
                if key.data == "accept":
                    child = self._accept(listener, selector)
                    if child is not None:
                        # In the forked child: drop everything of the server's.
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        for fileobj in (listener, wake_read, wake_write, *self.children.values()):
                            fileobj.close()
                        selector.close()
                        return child
                elif key.data == "signal":
                    while True:
                        try:
                            if not wake_read.recv(512):
                                break
                        except BlockingIOError:
                            break
                    self._reap(selector)
                else:  # a launcher's connection: it only ever closes
                    self._launcher_gone(key.fileobj, key.data, selector)
            if self.stale_reason and not self.children:
                _log(f"restarting: {self.stale_reason}")
                listener.close()
                os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector) -> ChildRun | None:
        conn, _ = listener.accept()
        conn.settimeout(REQUEST_TIMEOUT_S)
        fds: list[int] = []
        try:
            request, fds = _receive_request(conn)
        except (OSError, ValueError) as error:
            _log(f"bad launch request: {error}")
            _close_all(conn, fds)
            return None
        if request is None:  # a health check: connected and went away
            _close_all(conn, fds)
            return None
        self.stale_reason = self.stale_reason or self._changed_source()
        if self.unsafe_reason or self.stale_reason:
            why = self.unsafe_reason or f"{self.stale_reason}; the forkserver restarts when idle"
            _send(conn, {"fallback": why})
            _close_all(conn, fds)
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            conn.close()
            return ChildRun(request["module"], list(request["args"]), request["cwd"],
                            dict(request["env"]))
        _close_all(None, fds)
        self.children[pid] = conn
        _send(conn, {"pid": pid})
        selector.register(conn, selectors.EVENT_READ, pid)
        return None

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                selector.unregister(conn)
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    def _launcher_gone(
        self, conn: Any, pid: int, selector: selectors.BaseSelector
    ) -> None:
        if self.children.get(pid) is not conn:
            return  # reaped in this same round: its exit was sent, the launcher left
        try:
            if conn.recv(1):
                return  # launchers send nothing after the request; ignore
        except OSError:
            pass
        # The worker killed the launcher outright (SIGKILL cannot be forwarded). The
        # child is not reaped yet, so `pid` is still it; `_reap` collects it later.
        selector.unregister(conn)
        conn.close()
        del self.children[pid]
        os.kill(pid, signal.SIGKILL)

    def _source_times(self) -> dict[str, float]:
        if self.watch is None:
            return {}
        times = {}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and Path(path).resolve().is_relative_to(self.watch):
                times[path] = os.stat(path).st_mtime
        return times

    def _changed_source(self) -> str | None:
        for path, mtime in self._sources.items():
            try:
                if os.stat(path).st_mtime != mtime:
                    return f"{path} changed since it was preloaded"
            except FileNotFoundError:
                return f"{path} was removed since it was preloaded"
        return None


def _receive_request(conn: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Read one launch request and the three fds sent with it (None: the peer just left)."""
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    if not data:
        return None, fds
    while len(data) < _LENGTH.size:
        data += _recv_some(conn)
    (length,) = _LENGTH.unpack_from(data)
    if length > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {length} bytes")
    while len(data) < _LENGTH.size + length:
        data += _recv_some(conn)
    if len(fds) != 3:
        raise ValueError(f"expected stdin, stdout and stderr, got {len(fds)} fds")
    return json.loads(data[_LENGTH.size :]), fds


def _recv_some(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ValueError("request cut short")
    return chunk


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    # A launcher that is gone is noticed by the loop, through its connection's EOF.
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def _close_all(conn: socket.socket | None, fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    if conn is not None:
        conn.close()


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} clearlake forkserver: {message}",
          file=sys.stderr, flush=True)


def launch_command(python: str, socket_path: Path, module: str = "prefect.engine") -> list[str]:
    """The command that runs `module` through the forkserver at `socket_path`."""
    return [python, "-S", str(Path(__file__).resolve()), "launch", str(socket_path), module]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="forkserver", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="preload modules and fork runs on request")
    serve.add_argument("--socket", type=Path, required=True)
    serve.add_argument("--preload", action="append", default=[])
    serve.add_argument("--watch", type=Path, default=None)
    run = commands.add_parser("launch", help="run MODULE in a child of the server")
    run.add_argument("socket")
    run.add_argument("module")
    run.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    if options.command == "launch":
        exit_with(launch(options.socket, options.module, options.args))
    child = ForkServer(options.socket, options.preload, options.watch).serve()
    sys.exit(child.run())  # only a forked child gets here; it exits as `python -m` would


if __name__ == "__main__":
    main()
