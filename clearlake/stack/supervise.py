"""Keep a command running: start it again whenever it exits, until the supervisor is stopped.

The stack's workers need it:

* a Dask worker that loses its scheduler (the scheduler killed or restarted) closes
  itself and its nanny (distributed: `Worker.handle_scheduler` → `close(nanny=True)`),
  so `dask worker` exits and nothing measures until someone starts it again;
* a Prefect worker that cannot reach its server for about a minute (Prefect's
  `critical_service_loop`: a few rounds of consecutive errors with backoff, then
  "Service exceeded error threshold") exits, and no run starts after the server is
  back: they stay Scheduled.

Under this supervisor each starts again at once and reconnects when its server is back.

The command runs in the supervisor's process group (the service's): stopping the
service (SIGTERM, or SIGKILL, to the group) reaches both, and a SIGTERM or SIGINT the
supervisor gets is passed on and ends supervision. A command that keeps exiting soon
after starting is restarted with growing delays (1 s doubling to MAX_DELAY_S), so a
broken one does not spin.

    python -m clearlake.stack.supervise COMMAND [ARGS...]
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STEADY_AFTER_S = 60.0  # a run this long resets the delay: it was not a crash loop


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before restarting after `quick_exits` exits in a row that each came
    within STEADY_AFTER_S of starting: 1, 2, 4, … at most MAX_DELAY_S."""
    return min(FIRST_DELAY_S * 2 ** max(0, quick_exits - 1), MAX_DELAY_S)


def supervise(
    command: Sequence[str], *, stopped: threading.Event | None = None,
    start: Callable[[Sequence[str]], Any] = subprocess.Popen,
    report: Callable[[str], None] = print,
) -> int:
    """Run `command` again each time it exits until `stopped` is set; return its last
    exit code (signals set `stopped` and are forwarded to the running command)."""
    stopped = stopped or threading.Event()
    child: Any = None

    def stop(signum: int, _frame: Any) -> None:
        stopped.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
    quick_exits, code = 0, 0
    while not stopped.is_set():
        began = time.monotonic()
        child = start(command)
        code = child.wait()
        if stopped.is_set():
            break
        ran_s = time.monotonic() - began
        quick_exits = 1 if ran_s >= STEADY_AFTER_S else quick_exits + 1
        delay = restart_delay(quick_exits)
        report(f"supervise: {command[0]} … exited with {code} after {ran_s:.0f} s; "
               f"starting it again in {delay:.0f} s")
        sys.stdout.flush()
        stopped.wait(delay)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m clearlake.stack.supervise COMMAND [ARGS...]")
    sys.exit(supervise(sys.argv[1:]))
