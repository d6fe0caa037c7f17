"""Stop exactly what a benchmark started, also when SIGTERM or SIGINT stops it.

Python ends a process on SIGTERM at once: no `finally` runs, and the stack's
services, each in its own session, outlive the benchmark. `main` turns SIGTERM and
SIGINT into `Stopped` (a `KeyboardInterrupt`) raised in the main thread, so the
benchmarks' `finally` blocks stop their stacks, clusters and subprocesses. Once it
is raised, later signals are ignored: clean-up is bounded (a service that does not
stop in time is killed), and a second Ctrl-C must not cut it short. `deferred`
holds a signal back until a clean-up block that is already running has finished.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_TIMEOUT_S = 20.0


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


_received: int | None = None  # the first stop signal
_raised = False  # Stopped was raised: the process is unwinding
_deferring = 0  # depth of `deferred` blocks


def _handle(signum: int, frame: FrameType | None) -> None:
    global _raised, _received
    if _received is None:
        _received = signum
    if _raised or _deferring:
        # os.write: print could re-enter a write the main thread was interrupted in.
        os.write(2, f"{signal.Signals(signum).name}: stopping, please wait\n".encode())
        return
    _raised = True
    raise Stopped(signum)


def install() -> None:
    """Raise `Stopped` in the main thread on SIGTERM and SIGINT (call from the main thread).

    A process forked from this one (a `multiprocessing.Pool` worker) gets Python's own
    handling back: `Pool.terminate` ends its workers with SIGTERM, and a worker that
    turned it into `Stopped` could catch it holding the pool's queue lock and never exit.
    """
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    os.register_at_fork(after_in_child=_default_signals)


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals back while the block runs; raise `Stopped` after it if one came.

    For clean-up that must not be cut short, and for starting something that must be
    recorded (so that it can be stopped) before a stop may interrupt.
    """
    global _deferring, _raised
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _received is not None and not _raised:
        _raised = True
        raise Stopped(_received)


def main(function: Callable[[], Any]) -> None:
    """Run a benchmark's `main` with stop signals installed; exit 128 + signal if stopped."""
    install()
    try:
        function()
    except Stopped as stopped:
        os.write(2, f"{stopped}: everything this run started is stopped\n".encode())
        sys.exit(128 + stopped.signum)


def stop_process(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a child: SIGTERM (so that it can clean up after itself), SIGKILL after `timeout_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(command: Sequence[str], *, check: bool = False, capture_output: bool = False,
        **options: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run`, but a stopped run stops its child with SIGTERM first, not SIGKILL.

    Raises:
        subprocess.CalledProcessError: `check` and the command failed.
    """
    if capture_output:
        options.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(command, **options) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            stop_process(process)
            raise
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done
