"""bench.cleanup: the stop-signal handling that benchmarks and the test session install."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from bench import cleanup


def _wait(ready: multiprocessing.synchronize.Event) -> None:
    ready.set()
    time.sleep(60)


def test_a_process_forked_after_install_ends_on_sigterm() -> None:
    """`Pool.terminate` ends its workers with SIGTERM: a forked worker must die of it, not
    raise `Stopped` (which it could catch holding the pool's queue lock, and hang)."""
    cleanup.install()  # the session installed it already; installing again is harmless
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_wait, args=(ready,))
    child.start()
    try:
        assert ready.wait(30)
        os.kill(child.pid, signal.SIGTERM)
        child.join(30)
        assert child.exitcode == -signal.SIGTERM
    finally:
        if child.is_alive():
            child.kill()
            child.join()
