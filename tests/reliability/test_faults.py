"""Faults mid-burst: a service of the stack crashes (SIGKILL to its process group) or is
stopped while commits arrive and runs are under way, and comes back.

Each scenario commits a short burst to a watched branch, injects one fault after the
second commit, restores the service before the last commits, and then runs what the
scheduled `reconcile` would. After that, the health check (`support.check_health`)
must find nothing lost: every image with its signed record, no duplicate results, no
temporary branch left, no failed run. Where the fault itself kills runs (the flow
process, or the worker that launched them), those runs are CRASHED (the ones killed with
the worker by the stack's heartbeat automation), which the check counts and allows;
nothing else is.
"""

from __future__ import annotations

from typing import Any

import pytest

from clearlake.provenance import signing_key
from clearlake.stack.services import Stack
from clearlake.store import LakeFS
from tests.pipeline_support import unique_seed
from tests.reliability.support import (
    FAULTS,
    DaskSchedulerCrash,
    Fault,
    assert_healthy,
    check_health,
    commit_burst,
    run_reconcile,
    runs_settled,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SIZES = (1, 2, 1, 3, 1, 1)  # images per commit
FAULT_AT, RESTORE_AT = 2, 4  # the fault before the 3rd commit, the service back before the 5th


def burst_with_fault(stack: Stack, lakefs: LakeFS, repo: str, fault: Fault) -> Any:
    def before(index: int) -> None:
        if index == FAULT_AT:
            fault.inject()
        elif index == RESTORE_AT:
            fault.restore()

    return commit_burst(lakefs, repo, "main", SIZES, unique_seed(), folder="fault",
                        tolerate_errors=True, before_each=before)


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_mid_burst_loses_nothing(
    name: str, stack: Stack, lakefs: LakeFS, watched_repo: str, dask_address: str
) -> None:
    repo, key = watched_repo, signing_key()
    fault = FAULTS[name](stack)
    burst = burst_with_fault(stack, lakefs, repo, fault)
    # Runs killed with the Prefect worker stop beating: the stack's automation marks them
    # Crashed (clearlake.stack.automations), nobody here does.
    runs_settled(repo)
    report = run_reconcile(repo, dask_address)
    runs_settled(repo)
    health = check_health(lakefs, repo, ["main"], key, expected=burst.images)
    print(f"\n{name}: {fault.note or 'injected'}; {burst.total_commits} commits "
          f"({burst.refused} refused during the fault), {health.images} images, "
          f"{health.runs} runs, crashed {len(health.crashed_runs)}, reconcile processed "
          f"{len(report['processed'])}, "
          f"deleted {len(report['deleted'])} temporary branches; outcomes "
          f"{dict(health.outcomes)}")
    assert_healthy(health, crashed_allowed=len(health.crashed_runs) if fault.crashes_runs else 0)
    assert health.images == burst.total_images
    assert set(health.outcomes) == {"ok"}  # no image left 'failed' for want of its bytes


def test_the_dask_workers_survive_a_scheduler_restart(stack: Stack) -> None:
    fault = DaskSchedulerCrash(stack)
    fault.inject()
    fault.restore()  # restarts the worker service if it had exited, for the tests after
    assert fault.workers_rejoined
