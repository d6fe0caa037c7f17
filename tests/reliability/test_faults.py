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

import threading
import uuid
from typing import Any

import pytest

from clearlake import pipeline
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack.services import Stack
from clearlake.transaction import TEMP_BRANCH_PREFIX, temp_branch_owner
from tests.pipeline_support import commit_images, photo, unique_seed, wait_until
from tests.reliability.support import (
    FAULTS,
    RUN_TIMEOUT_S,
    S3_DOWN_S,
    DaskSchedulerCrash,
    Fault,
    S3Outage,
    assert_healthy,
    check_health,
    commit_burst,
    flow_run_pids,
    run_reconcile,
    runs_settled,
    service_down,
    wait_briefly,
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


# -- a run while a service is down: typed outcomes, nothing lost ---------------------------------


def test_a_run_while_the_bridge_is_down_leaves_its_results_pending(
    stack: Stack, lakefs: LakeFS, watched_repo: str, dask_address: str, classify: Any
) -> None:
    """The results merge into main passes main's pre-merge gate, which the bridge answers:
    with the bridge down lakeFS refuses the merge (412, "connection refused"). That is
    not the gate refusing: the results stay committed on their temporary branch, and
    reconcile merges them once the bridge is back."""
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    with service_down(stack, "bridge"):
        # No webhook reaches clearlake now: the run is started here, as reconcile would.
        commit_images(lakefs, repo, {"gate-down/a.jpg": photo(seed)})
        outcome = classify(repo)
        assert outcome["status"] == "pending", outcome
        assert outcome["pending_branch"] in dict(lakefs.list_branches(repo))
        assert not pipeline.is_covered(lakefs, repo, "main", key)
    report = run_reconcile(repo, dask_address)
    assert report["merged_pending"] == [outcome["pending_branch"]]
    assert report["processed"] == []  # the pending results covered the head
    runs_settled(repo)
    health = check_health(lakefs, repo, ["main"], key, expected={"main": {"gate-down/a.jpg"}})
    assert_healthy(health)


def test_a_run_while_the_s3_server_is_down_waits_it_out(
    stack: Stack, lakefs: LakeFS, watched_repo: str, dask_address: str, classify: Any
) -> None:
    """With the S3 server stopped, lakeFS cannot load action files or write ranges
    ("pre-create-branch hook aborted", 5xx): the run's transaction steps wait it out
    (up to `transaction.UNAVAILABLE_TIMEOUT_S`) instead of failing the run; whatever
    it could not read is retried by reconcile."""
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    commit_images(lakefs, repo, {"s3-down/a.jpg": photo(seed), "s3-down/b.jpg": photo(seed + 1)})
    runs_settled(repo)  # the commit's own run, so the one below has its work to do
    commit_images(lakefs, repo, {"s3-down/c.jpg": photo(seed + 2)})
    outage = S3Outage(stack)
    outage.inject()
    restorer = threading.Thread(target=outage.restore)  # back after S3_DOWN_S
    restorer.start()
    try:
        outcome = classify(repo)
    finally:
        restorer.join()
    print(f"\nrun during a {S3_DOWN_S:.0f}-s S3 outage: {outcome['status']}, "
          f"{outcome.get('counts')}, transaction {outcome.get('transaction_seconds')}")
    assert outcome["status"] in ("merged", "up_to_date", "unavailable"), outcome
    runs_settled(repo)
    run_reconcile(repo, dask_address)
    runs_settled(repo)
    health = check_health(lakefs, repo, ["main"], key,
                          expected={"main": {f"s3-down/{n}.jpg" for n in "abc"}})
    assert_healthy(health)
    assert set(health.outcomes) == {"ok"}


def test_runs_killed_with_the_prefect_worker_end_crashed_and_leave_no_branch(
    stack: Stack, lakefs: LakeFS, watched_repo: str, dask_address: str
) -> None:
    """SIGKILL to the Prefect worker's process group takes its runs with it, and nobody
    reports them: they stop beating, the stack's automation marks them Crashed
    (`clearlake.stack.automations`), and reconcile deletes their temporary branches and
    covers their commits."""
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    images = {f"worker-kill/{n:02d}.jpg": photo(seed + n) for n in range(40)}
    commit_images(lakefs, repo, images)

    def writing_run() -> str | None:
        """The id of a run that has opened its transaction, once one has."""
        for name, _ in lakefs.list_branches(repo, TEMP_BRANCH_PREFIX):
            if (owner := temp_branch_owner(name)) is not None and flow_run_pids(stack):
                return owner
        return None

    victim = wait_briefly(writing_run, RUN_TIMEOUT_S)
    assert victim, "no run started writing"
    stack.stop_service("prefect-worker", kill=True)
    stack.start_service("prefect-worker")

    def victim_state() -> Any:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(victim)).state

    wait_until(lambda: victim_state().is_final(), RUN_TIMEOUT_S)
    state = victim_state()
    assert state.is_crashed(), state
    print(f"\nrun killed with the worker: {state.name} ({state.message})")
    runs_settled(repo)
    report = run_reconcile(repo, dask_address)
    runs_settled(repo)
    assert not [b for b, _ in lakefs.list_branches(repo, TEMP_BRANCH_PREFIX)
                if temp_branch_owner(b) == victim]
    health = check_health(lakefs, repo, ["main"], key, expected={"main": set(images)})
    print(f"reconcile deleted {report['deleted']}, processed {len(report['processed'])}")
    assert_healthy(health, crashed_allowed=len(health.crashed_runs))


def test_a_deployment_run_that_never_beat_ends_crashed(stack: Stack) -> None:
    """A run of a clearlake deployment that entered Running, and whose process died before
    its first heartbeat reached the server, is marked Crashed by the stack's second
    automation. Here no process ever runs it: scheduled a day ahead (no worker takes it),
    it is moved to Running by hand."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Running, Scheduled

    from clearlake.stack.automations import UNSTARTED_AUTOMATION, ZOMBIE_AFTER_S

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("classify-commit/classify-commit")
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"repository": "never-started", "branch": "main"},
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1)))
        client.set_flow_run_state(run.id, Running(), force=True)

        def state() -> Any:
            return client.read_flow_run(run.id).state

        wait_until(lambda: state().is_final(), ZOMBIE_AFTER_S + RUN_TIMEOUT_S)
        final = state()
    assert final.is_crashed(), final
    assert "no heartbeat" in final.message
    print(f"\n{UNSTARTED_AUTOMATION}: {final.name} ({final.message})")
