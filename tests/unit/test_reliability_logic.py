"""What keeps a run from failing on a fault it can wait out (issue 12's reliability fixes),
without servers: the gate unreachable versus refusing, lakeFS or its object store
unavailable, Prefect answering 503 to the branch lock, the Dask workers' supervisor, the
heartbeat automation, and the health check's count of duplicate results.

The transaction tests drive `Transaction` against `ScriptedLakeFS`, a stand-in for the
few lakeFS calls a transaction makes, whose answers each test scripts (errors exactly
as `store._translate` raises them); the stack tests cover the same paths for real
(`tests/reliability/test_faults.py`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from lakefs_sdk.exceptions import ApiException

from clearlake import errors, transaction
from clearlake.lakefs import _translate, hook_went_unanswered
from clearlake.provenance import ResultsMarker
from clearlake.stack import automations, supervise
from clearlake.stack.services import Stack
from clearlake.transaction import MergePending, Transaction, while_unavailable
from tests.reliability.support import duplicated_sources

# lakeFS v1.84.0's 412 messages (pkg/actions/service.go, webhook.go, graveler/errors.go).
REFUSED = ("pre-merge hook aborted, run id 'r1': 1 error occurred:\n\t* hook run id 'h1' "
           "failed on action 'clearlake-gate' hook 'gate': action failed: webhook request "
           "failed (status code: 412)")
REFUSED_CONNECTION = (
    "pre-merge hook aborted, run id 'r2': 1 error occurred:\n\t* hook run id 'h2' failed on "
    "action 'clearlake-gate' hook 'gate': action failed: Post "
    "\"http://127.0.0.1:41234/lakefs/gate\": dial tcp 127.0.0.1:41234: connect: "
    "connection refused")
TIMED_OUT = ("pre-merge hook aborted, run id 'r3': hook run id 'h3' failed on action "
             "'clearlake-gate' hook 'gate': action failed: Post \"http://127.0.0.1:1/lakefs/"
             "gate\": context deadline exceeded (Client.Timeout exceeded while awaiting "
             "headers)")
SERVER_ERROR = ("pre-merge hook aborted, run id 'r4': hook run id 'h4' failed on action "
                "'clearlake-gate' hook 'gate': action failed: webhook request failed "
                "(status code: 503)")


# -- the gate: unreachable or refusing ---------------------------------------------------------


@pytest.mark.parametrize(("message", "unanswered"), [
    (REFUSED, False),
    (REFUSED_CONNECTION, True),
    (TIMED_OUT, True),
    (SERVER_ERROR, True),
    # two hooks: one refused, one unreachable — a refusal is a refusal
    (f"{REFUSED}\n\t* {REFUSED_CONNECTION}", False),
    ("pre-merge hook aborted, run id 'r5': hook 'gate': missing url: webhook wrong format",
     False),
])
def test_a_hook_that_got_no_answer_is_told_from_one_that_refused(
    message: str, unanswered: bool
) -> None:
    assert hook_went_unanswered(message) is unanswered


@pytest.mark.parametrize(("message", "kind"), [
    (REFUSED, errors.HookRejectedError),
    (REFUSED_CONNECTION, errors.HookUnreachableError),
])
def test_lakefs_412_becomes_a_refusal_or_an_unreachable_hook(
    message: str, kind: type[errors.HookRejectedError]
) -> None:
    error = ApiException(status=412, reason="Precondition Failed")
    error.body = json.dumps({"message": message})
    with pytest.raises(errors.HookRejectedError) as caught, _translate("merge", "photos", "main"):
        raise error
    assert type(caught.value) is kind
    assert caught.value.run_id == message.split("'")[1]


# -- lakeFS unavailable: bounded backoff ---------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_unavailability_is_waited_out_with_doubling_delays() -> None:
    clock, answers = FakeClock(), iter([True, True, True, False])

    def action() -> str:
        if next(answers):
            raise errors.UnavailableError("create branch: pre-create-branch hook aborted")
        return "done"

    assert while_unavailable(action, 120.0, sleep=clock.sleep, clock=clock) == "done"
    assert clock.slept == [1.0, 2.0, 4.0]


def test_unavailability_longer_than_the_budget_is_raised_after_it() -> None:
    clock = FakeClock()

    def action() -> None:
        raise errors.UnavailableError("commit: lakeFS is unreachable")

    with pytest.raises(errors.UnavailableError):
        while_unavailable(action, 120.0, sleep=clock.sleep, clock=clock)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0] + [15.0] * 7
    assert sum(clock.slept) == 120.0  # the budget, then the error


# -- the transaction against scripted lakeFS answers -------------------------------------------


@dataclass
class Commit:
    id: str
    metadata: dict[str, str]


@dataclass
class ScriptedLakeFS:
    """The lakeFS calls a `Transaction` makes. `failures[call]` lists errors raised, one per
    call, before the call behaves; `applied_before_failing` names calls that take effect
    and then fail (their answer lost)."""

    failures: dict[str, list[Exception]] = field(default_factory=dict)
    applied_before_failing: set[str] = field(default_factory=set)
    branches: set[str] = field(default_factory=lambda: {"main"})
    log_of_main: list[Commit] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str, effect: Callable[[], Any]) -> Any:
        self.calls.append(name)
        queued = self.failures.get(name) or []
        if queued:
            error = queued.pop(0)
            if name in self.applied_before_failing:
                effect()
            raise error
        return effect()

    def create_branch(self, repository: str, branch: str, source: str) -> str:
        return self._call("create_branch", lambda: self.branches.add(branch))

    def head(self, repository: str, branch: str) -> str:
        if branch not in self.branches:
            raise errors.NotFoundError("get branch: not found")
        return "head"

    def commit(self, repository: str, branch: str, message: str,
               metadata: dict[str, str] | None = None, *, allow_empty: bool = False) -> str:
        return self._call("commit", lambda: "c1")

    def merge(self, repository: str, source: str, destination: str, message: str = "",
              metadata: dict[str, str] | None = None, **_: Any) -> str:
        def apply() -> str:
            # lakeFS adds its own key to a merge's metadata (graveler.go).
            commit = Commit(f"m{len(self.log_of_main) + 1}",
                            {**(metadata or {}), ".lakefs.merge.strategy": "default"})
            self.log_of_main.insert(0, commit)
            return commit.id
        return self._call("merge", apply)

    def log(self, repository: str, ref: str, *, first_parent: bool = False) -> list[Commit]:
        return list(self.log_of_main)

    def delete_branch(self, repository: str, branch: str) -> None:
        self._call("delete_branch", lambda: self.branches.discard(branch))


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Time passes only when the code sleeps."""
    clock = FakeClock()
    monkeypatch.setattr(transaction.time, "monotonic", clock)
    monkeypatch.setattr(transaction.time, "sleep", clock.sleep)
    return clock


def unreachable_gate() -> errors.HookUnreachableError:
    return errors.HookUnreachableError(f"merge: {REFUSED_CONNECTION}", repository="photos")


def unavailable(what: str) -> errors.UnavailableError:
    return errors.UnavailableError(f"{what}: pre-{what} hook aborted", status=500)


def run_transaction(lakefs: ScriptedLakeFS) -> tuple[Transaction, str]:
    with Transaction(lakefs, "photos", "main") as tx:  # type: ignore[arg-type]
        return tx, tx.commit("clearlake: results", {"clearlake.run": "r1"})


def test_an_unreachable_gate_leaves_the_results_pending(no_waiting: FakeClock) -> None:
    lakefs = ScriptedLakeFS(failures={"merge": [unreachable_gate()] * 100})
    with pytest.raises(MergePending) as pending:
        run_transaction(lakefs)
    assert "pre-merge hook could not be reached" in str(pending.value)
    assert pending.value.temp_branch in lakefs.branches  # kept for finish_pending
    assert "delete_branch" not in lakefs.calls
    assert sum(no_waiting.slept) <= transaction.HOOK_UNREACHABLE_TIMEOUT_S


def test_a_gate_that_refuses_stays_a_refusal(no_waiting: FakeClock) -> None:
    refusal = errors.HookRejectedError(f"merge: {REFUSED}", repository="photos")
    lakefs = ScriptedLakeFS(failures={"merge": [refusal]})
    with pytest.raises(errors.HookRejectedError) as refused:
        run_transaction(lakefs)
    assert type(refused.value) is errors.HookRejectedError
    assert lakefs.branches == {"main"}  # the temporary branch is gone
    assert lakefs.calls.count("merge") == 1  # a refusal is not asked again


def test_a_gate_back_within_seconds_merges(no_waiting: FakeClock) -> None:
    lakefs = ScriptedLakeFS(failures={"merge": [unreachable_gate()] * 2})
    _, merged = run_transaction(lakefs)
    assert merged == "m1" and lakefs.branches == {"main"}


def test_every_step_waits_out_lakefs_unavailable(no_waiting: FakeClock) -> None:
    lakefs = ScriptedLakeFS(failures={
        "create_branch": [unavailable("create-branch")] * 3,
        "commit": [unavailable("commit")] * 2,
        "merge": [unavailable("merge")] * 2,
        "delete_branch": [unavailable("delete-branch")],
    })
    tx, merged = run_transaction(lakefs)
    assert merged == "m1"
    assert [c.id for c in lakefs.log_of_main] == ["m1"]
    assert lakefs.branches == {"main"}
    assert tx.temp_branch not in lakefs.branches


def test_a_merge_whose_answer_was_lost_is_not_applied_twice(no_waiting: FakeClock) -> None:
    lakefs = ScriptedLakeFS(failures={"merge": [unavailable("merge")]},
                            applied_before_failing={"merge"})
    _, merged = run_transaction(lakefs)
    assert merged == "m1"
    assert [c.id for c in lakefs.log_of_main] == ["m1"]  # once
    assert lakefs.calls.count("merge") == 1


def test_a_branch_created_though_its_answer_was_lost_is_used(no_waiting: FakeClock) -> None:
    lakefs = ScriptedLakeFS(failures={"create_branch": [unavailable("create-branch")]},
                            applied_before_failing={"create_branch"})
    _, merged = run_transaction(lakefs)
    assert merged == "m1" and lakefs.calls.count("create_branch") == 1


def test_lakefs_unavailable_beyond_the_budget_leaves_no_temporary_branch(
    no_waiting: FakeClock,
) -> None:
    lakefs = ScriptedLakeFS(failures={"commit": [unavailable("commit")] * 100})
    with pytest.raises(errors.UnavailableError):
        run_transaction(lakefs)
    assert lakefs.branches == {"main"}
    assert sum(no_waiting.slept) >= transaction.UNAVAILABLE_TIMEOUT_S - 15


# -- Prefect answering 503 to the branch lock ----------------------------------------------------


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/api/v2/concurrency_limits/increment")
    return httpx.HTTPStatusError(f"{status}", request=request,
                                 response=httpx.Response(status, request=request))


def _acquisition_error(cause: BaseException | None) -> Exception:
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    try:
        raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots") from cause
    except ConcurrencySlotAcquisitionError as error:
        return error


@pytest.mark.parametrize(("cause", "transient"), [
    (_status_error(503), True),
    (_status_error(500), True),
    (_status_error(429), True),
    (httpx.ConnectError("connection refused"), True),
    (_status_error(404), False),
    (_status_error(422), False),
    (None, False),  # "must be created before acquiring slots": no HTTP trouble
])
def test_prefect_trouble_worth_waiting_out_is_told_from_a_refusal(
    cause: BaseException | None, transient: bool
) -> None:
    from clearlake.flows.classify import prefect_was_unavailable

    assert prefect_was_unavailable(_acquisition_error(cause)) is transient


def test_the_branch_lock_is_asked_again_while_prefect_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clearlake.flows import classify

    slept: list[float] = []
    monkeypatch.setattr(classify.time, "sleep", slept.append)
    answers = [_acquisition_error(_status_error(503))] * 3

    def acquire() -> str:
        if answers:
            raise answers.pop()
        return "held"

    assert classify.patiently_with_prefect(acquire, "acquiring the lock") == "held"
    assert slept == [1.0, 2.0, 4.0]
    refused = _acquisition_error(_status_error(404))
    with pytest.raises(type(refused)):
        classify.patiently_with_prefect(lambda: (_ for _ in ()).throw(refused), "lock")
    assert slept == [1.0, 2.0, 4.0]  # a refusal is not asked again


# -- the Dask workers' supervisor ------------------------------------------------------------


def test_restart_delays_double_on_quick_exits_up_to_a_cap() -> None:
    assert [supervise.restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_the_supervisor_starts_its_command_again_until_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(supervise, "FIRST_DELAY_S", 0.01)
    stopped = threading.Event()
    started: list[int] = []

    def start(command: list[str]) -> subprocess.Popen:
        started.append(1)
        if len(started) == 3:
            stopped.set()
        return subprocess.Popen(command)

    reports: list[str] = []
    code = supervise.supervise([sys.executable, "-c", "raise SystemExit(3)"],
                               stopped=stopped, start=start, report=reports.append)
    assert len(started) == 3 and code == 3
    assert len(reports) == 2 and "exited with 3" in reports[0]


def test_the_stack_supervises_its_dask_workers_and_its_prefect_worker(tmp_path: Path) -> None:
    stack = Stack(home=tmp_path, ports={"dask": 1})
    workers = stack._dask_workers().command
    assert workers[1:3] == ["-m", "clearlake.stack.supervise"]
    assert workers[3:6] == [sys.executable, "-m", "dask"]
    worker = stack._prefect_worker()
    assert worker.command[1:3] == ["-m", "clearlake.stack.supervise"]
    assert worker.command[3:6] == [sys.executable, "-m", "prefect"]
    assert worker.env["PREFECT_CLIENT_MAX_RETRIES"] == "7"


def test_the_prefect_server_keeps_concurrency_leases_across_a_restart(tmp_path: Path) -> None:
    """In memory (Prefect's default) a restart forgets the lease of a run that died
    meanwhile, and its branch's slot stays taken: every later run of the branch waits."""
    from clearlake.config import StackSecrets

    stack = Stack(home=tmp_path)
    env = stack._prefect(StackSecrets.load_or_create(tmp_path)).env
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == (
        "prefect.server.concurrency.lease_storage.filesystem")
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / "prefect")  # leases live there


def test_the_zombie_automations_crash_runs_that_stop_or_never_start_beating() -> None:
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import Posture

    stopped, unstarted = automations.zombie_automation(), automations.unstarted_automation()
    assert stopped.trigger.after == {"prefect.flow-run.heartbeat"}
    assert unstarted.trigger.after == {"prefect.flow-run.Running"}
    # Only runs of clearlake's deployments, which beat by their deployment, are watched
    # from Running on: a flow run that never beats by design is never crashed.
    assert unstarted.trigger.match_related.root == {
        "prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.clearlake"}
    assert stopped.trigger.match_related.root == {}
    for automation in (stopped, unstarted):
        trigger = automation.trigger
        assert trigger.expect == {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                                  "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                                  "prefect.flow-run.Crashed"}
        assert trigger.for_each == {"prefect.resource.id"}
        assert trigger.posture == Posture.Proactive
        assert trigger.within.total_seconds() == 150.0
        [action] = automation.actions
        assert action.state == StateType.CRASHED


def test_every_deployment_beats_as_often_as_the_automations_expect() -> None:
    import yaml

    project = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    assert project["deployments"]
    for deployment in project["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env[automations.HEARTBEAT_SETTING] == str(automations.FLOW_HEARTBEAT_S)
        assert automations.DEPLOYMENT_TAG in deployment["tags"]


# -- the health check: a retry is not a duplicate -----------------------------------------------


def _marker(source: str, retry: list[str] | None = None) -> ResultsMarker:
    return ResultsMarker(repository="photos", branch="main", source_commit=source,
                         previous_source_commit="", run_id="r", model_id="m",
                         model_commit="", analysis_version="1", clearlake_version="0",
                         retry=retry or [])


def test_results_for_a_source_twice_are_duplicates_unless_the_first_left_retries() -> None:
    newest_first = [_marker("b"), _marker("a"), _marker("a", ["x.jpg"]), _marker("c"),
                    _marker("c")]
    assert duplicated_sources(newest_first) == {"c": 2}


# -- images a run failed to measure: retried with doubling waits, never given up --------------


def test_runs_in_a_row_that_failed_an_image_are_counted() -> None:
    from clearlake.pipeline import failed_attempts

    assert failed_attempts(None, ["a.jpg"]) == {"a.jpg": 1}
    previous = dataclasses.replace(_marker("s", ["a.jpg", "b.jpg"]), attempts={"a.jpg": 3})
    # a.jpg failed a 4th time; b.jpg (results from before attempts were kept) a 2nd;
    # c.jpg was not left to retry, so this is its first failure.
    assert failed_attempts(previous, ["a.jpg", "b.jpg", "c.jpg"]) == {
        "a.jpg": 4, "b.jpg": 2, "c.jpg": 1}


def test_reconcile_waits_longer_before_each_retry_up_to_a_day() -> None:
    from clearlake.pipeline import RETRY_BACKOFF_MAX_S, retry_wait_s

    assert [retry_wait_s(n) for n in range(1, 6)] == [0.0, 180.0, 360.0, 720.0, 1440.0]
    assert retry_wait_s(30) == RETRY_BACKOFF_MAX_S == 86_400.0


def test_a_retry_is_due_once_the_wait_of_some_image_has_passed() -> None:
    from clearlake.pipeline import retry_due

    marker = dataclasses.replace(_marker("s", ["a.jpg", "b.jpg"]),
                                 attempts={"a.jpg": 3, "b.jpg": 5})
    assert not retry_due(marker, results_created=1000.0, now=1000.0 + 359.0)
    assert retry_due(marker, results_created=1000.0, now=1000.0 + 360.0)  # a.jpg's wait
    assert retry_due(_marker("s", ["a.jpg"]), results_created=1000.0, now=1000.0)  # 1st
    assert not retry_due(_marker("s"), results_created=0.0, now=1e12)  # nothing to retry


def test_the_attempts_travel_in_the_signed_marker() -> None:
    key = b"k" * 32
    marker = dataclasses.replace(_marker("s", ["a.jpg"]), attempts={"a.jpg": 2})
    assert ResultsMarker.from_metadata(marker.to_metadata(key), key) == marker
    older = {k: v for k, v in marker.to_metadata(key).items() if not k.endswith("attempts")}
    assert ResultsMarker.from_metadata(older, key).attempts == {}


def test_test_stacks_take_no_port_an_outgoing_connection_could_take() -> None:
    """A port from the kernel's ephemeral range, taken by some outgoing connection while
    its service was down, kept the Prefect server from starting again in a fault test."""
    from clearlake.stack import seaweedfs
    from clearlake.stack.services import free_loopback_ports

    ports = free_loopback_ports()
    every = [*seaweedfs.all_ports(ports["s3"]), *(p for n, p in ports.items() if n != "s3")]
    low, _ = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(port < low for port in every)
    assert len(set(every)) == len(every)



def test_free_ports_keep_the_s3_servers_block_for_it_alone() -> None:
    """The S3 port brings eight more (`weed mini`'s internal ports), so it is chosen with
    them, apart from the other services' ports: chosen again among those, its block
    overlapped them (a bridge found its port taken by the stack's own S3 server)."""
    from clearlake.stack import seaweedfs
    from clearlake.stack.services import CHOSEN_PORTS, DEFAULT_PORTS, free_loopback_ports

    ports = free_loopback_ports()
    assert set(ports) == set(DEFAULT_PORTS)
    assert ports["s3"] not in CHOSEN_PORTS
    others = [port for name, port in ports.items() if name != "s3"]
    assert all(port in CHOSEN_PORTS for port in others)
    assert not set(seaweedfs.all_ports(ports["s3"])) & set(others)


def test_a_start_waits_for_a_port_a_dead_process_is_still_releasing() -> None:
    import socket

    from clearlake.stack.services import LOOPBACK, busy_ports

    held = socket.socket()
    held.bind((LOOPBACK, 0))
    held.listen()
    port = held.getsockname()[1]
    assert busy_ports([port], timeout_s=0.0) == [port]  # a port another program holds
    threading.Timer(0.3, held.close).start()  # released a moment later
    assert busy_ports([port], timeout_s=10.0) == []
