"""The webhook bridge's request checks, through its real ASGI app, without servers.

The app is `create_app()` configured from the environment, served by Starlette's
TestClient in-process. lakeFS and Prefect point at a closed loopback port: a
request that gets past every check finds lakeFS unreachable (503), so nothing
here can emit an event.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from clearlake.bridge import (
    EVENT_NAME,
    SECRET_HEADER,
    BadRequest,
    check_payload,
    create_app,
    event_id,
    prefect_event,
    require_fields,
)
from clearlake.errors import ConfigurationError

SECRET = "webhook-secret-for-tests-0123456789"
COMMIT = "4f" * 32
GOOD = {
    "event_type": "post-commit",
    "event_time": "2026-11-28T12:00:00Z",
    "action_name": "clearlake",
    "hook_id": "classify",
    "repository_id": "photos",
    "branch_id": "main",
    "source_ref": COMMIT,
    "commit_id": COMMIT,
    "commit_message": "add images",
    "committer": "alice",
    "commit_metadata": {"k": "v"},
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    nowhere = f"http://127.0.0.1:{_closed_port()}"
    with pytest.MonkeyPatch.context() as env:
        # No stack state to fall back on: everything from the environment.
        env.setenv("CLEARLAKE_HOME", str(tmp_path_factory.mktemp("home")))
        env.setenv("CLEARLAKE_WEBHOOK_SECRET", SECRET)
        env.setenv("CLEARLAKE_SIGNING_KEY", "signing-key-for-tests")
        env.setenv("PREFECT_API_URL", f"{nowhere}/api")
        env.setenv("LAKEFS_ENDPOINT", nowhere)
        env.setenv("LAKEFS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        env.setenv("LAKEFS_SECRET_ACCESS_KEY", "lakefs-secret-for-tests")
        with TestClient(create_app()) as test_client:
            yield test_client


def _post(client: TestClient, route: str, body: Any, secret: str | None = SECRET,
          content_type: str = "application/json") -> Any:
    headers = {"Content-Type": content_type}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(route, content=content, headers=headers)


# -- the checks, one by one ------------------------------------------------------------------


def test_a_payload_as_lakefs_sends_it_passes() -> None:
    check_payload(dict(GOOD))
    require_fields(dict(GOOD), "repository_id", "branch_id", "commit_id")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repository_id", "ab"),  # too short
        ("repository_id", "Photos"),  # upper case
        ("repository_id", "-photos"),
        ("repository_id", "photos\n"),  # fullmatch: no trailing newline
        ("repository_id", "a" * 64),  # too long
        ("branch_id", "-main"),
        ("branch_id", "ma in"),
        ("branch_id", "main/x"),
        ("branch_id", "{{ event }}"),
        ("commit_id", "xyz"),
        ("commit_id", "a" * 65),
        ("source_ref", "../main"),
        ("repository_id", 42),
        ("event_time", "yesterday"),
        ("event_time", 1700000000),
        ("committer", ["alice"]),
        ("commit_message", {"a": 1}),
        ("commit_metadata", ["k", "v"]),
        ("commit_metadata", {"k": 1}),
    ],
)
def test_what_lakefs_would_never_send_is_refused(field: str, value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        check_payload({**GOOD, field: value})
    assert caught.value.status == 400
    assert field in str(caught.value)
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(caught.value)  # values are not echoed back


@pytest.mark.parametrize(
    ("field", "value"),
    [("repository_id", "a-b"), ("repository_id", "a" * 63), ("branch_id", "_x-1"),
     ("commit_id", "A1"), ("source_ref", "feature-2"), ("event_time", ""),
     ("commit_metadata", {}), ("committer", None)],
)
def test_names_within_lakefs_rules_pass(field: str, value: Any) -> None:
    check_payload({**GOOD, field: value})


def test_required_fields_must_be_non_empty_strings() -> None:
    with pytest.raises(BadRequest, match="repository_id, commit_id") as caught:
        require_fields({"repository_id": "", "commit_id": 5, "branch_id": "main"},
                       "repository_id", "branch_id", "commit_id")
    assert caught.value.status == 400


def test_the_event_for_a_commit_is_stable_and_names_the_branch() -> None:
    event = prefect_event(GOOD)
    assert event["id"] == event_id("photos", COMMIT) == prefect_event(dict(GOOD))["id"]
    assert event["id"] != event_id("photos", "5e" * 32)
    assert event["id"] != event_id("photos2", COMMIT)
    assert event["event"] == EVENT_NAME
    assert event["occurred"] == GOOD["event_time"]
    assert event["resource"]["prefect.resource.id"] == "lakefs.repository.photos.branch.main"
    assert event["payload"] == {
        "repository": "photos", "branch": "main", "commit_id": COMMIT,
        "event_type": "post-commit", "committer": "alice", "source_ref": COMMIT,
    }  # nothing else of the payload (message, metadata) reaches Prefect


# -- through the app -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/lakefs/events", "/lakefs/gate"])
@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
def test_a_wrong_or_missing_secret_is_401(client: TestClient, route: str,
                                          secret: str | None) -> None:
    response = _post(client, route, GOOD, secret=secret)
    assert response.status_code == 401
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (GOOD, "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"[" * 100_000, "application/json", 400),
        ({"event_type": "post-commit"}, "application/json", 400),  # names missing
        ({**GOOD, "branch_id": "{{ x }}"}, "application/json", 400),
        ({**GOOD, "event_time": "soon"}, "application/json", 400),
    ],
)
def test_bad_bodies_are_refused(client: TestClient, body: Any, content_type: str,
                                status: int) -> None:
    assert _post(client, "/lakefs/events", body, content_type=content_type).status_code == status


def test_a_declared_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/lakefs/events", content=b"{}", headers={
        SECRET_HEADER: SECRET, "Content-Type": "application/json",
        "Content-Length": str(16 * 2**20 + 1)})
    assert response.status_code == 413


def test_events_lakefs_does_not_trigger_runs_for_are_ignored(client: TestClient) -> None:
    for event_type in ("pre-commit", "post-create-branch", "pre-merge"):
        response = _post(client, "/lakefs/events", {**GOOD, "event_type": event_type})
        assert (response.status_code, response.json()) == (
            202, {"ignored": "event type not forwarded"})


def test_a_valid_webhook_lakefs_cannot_confirm_is_503_and_emits_nothing(
    client: TestClient,
) -> None:
    # Past every check, the bridge asks lakeFS whether the commit exists: unreachable here.
    response = _post(client, "/lakefs/events", GOOD)
    assert response.status_code == 503
    assert "lakeFS" in response.text


def test_the_gate_ignores_what_is_not_a_pre_merge_hook(client: TestClient) -> None:
    response = _post(client, "/lakefs/gate", GOOD)  # a post-commit
    assert (response.status_code, response.json()) == (202, {"ignored": "not a pre-merge hook"})


def test_the_gate_refuses_bad_merge_payloads(client: TestClient) -> None:
    merge = {**GOOD, "event_type": "pre-merge"}
    del merge["source_ref"]
    assert _post(client, "/lakefs/gate", merge).status_code == 400
    merge["source_ref"] = "../escape"
    assert _post(client, "/lakefs/gate", merge).status_code == 400


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_without_a_webhook_secret_the_bridge_does_not_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLEARLAKE_HOME", str(tmp_path))
    monkeypatch.delenv("CLEARLAKE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="CLEARLAKE_WEBHOOK_SECRET"):
        create_app()
