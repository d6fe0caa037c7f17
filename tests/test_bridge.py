"""The webhook bridge as lakeFS sees it: the stack's running bridge, a real Prefect server."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from clearlake.bridge import MAX_BODY_BYTES, SECRET_HEADER, event_id
from clearlake.config import StackSecrets
from clearlake.lakefs import LakeFS
from clearlake.stack.services import Stack


@pytest.fixture
def secret(stack: Stack) -> str:
    return StackSecrets.load(stack.home).webhook_secret.get_secret_value()


def webhook(repository: str = "repo", commit: str | None = None, **extra: Any) -> dict[str, Any]:
    """A lakeFS post-commit payload."""
    return {
        "event_type": "post-commit", "event_time": "2026-11-25T12:00:00Z",
        "action_name": "clearlake", "hook_id": "notify_clearlake",
        "repository_id": repository, "branch_id": "main", "source_ref": "main",
        "commit_id": commit or uuid.uuid4().hex * 2, "commit_message": "m",
        "committer": "alice", "commit_metadata": {}, **extra,
    }


def post(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{stack.bridge_url}/lakefs/events", content=body, headers=headers)


def events_with_id(stack: Stack, wanted: str, wait_s: float = 2.0) -> list[dict[str, Any]]:
    """Events the Prefect server stored with this id, waiting up to `wait_s` for one."""
    deadline = time.monotonic() + wait_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = httpx.post(f"{stack.prefect_api_url}/events/filter", json={
            "filter": {"id": {"id": [wanted]}, "occurred": {"since": "2026-01-01T00:00:00Z"}},
            "limit": 10})
        response.raise_for_status()
        found = response.json()["events"]
        if found:
            break
        time.sleep(0.2)
    return found


@pytest.mark.slow
def test_a_good_webhook_becomes_one_prefect_event(
    stack: Stack, secret: str, lakefs: LakeFS, repo: str
) -> None:
    commit = lakefs.head(repo, "main")  # the bridge forwards only commits lakeFS has
    payload = webhook(repo, commit=commit)
    headers = {SECRET_HEADER: secret, "Content-Type": "application/json"}
    first = post(stack, json.dumps(payload).encode(), headers)
    second = post(stack, json.dumps(payload).encode(), headers)  # lakeFS or a proxy repeats
    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"] == event_id(repo, commit)
    stored = events_with_id(stack, first.json()["event_id"], wait_s=30.0)
    assert len(stored) == 1
    event = stored[0]
    assert event["event"] == "clearlake.lakefs.commit"
    assert event["resource"]["prefect.resource.id"] == f"lakefs.repository.{repo}.branch.main"
    assert event["payload"]["commit_id"] == commit
    assert secret not in json.dumps(event)


@pytest.mark.slow
@pytest.mark.parametrize("offered", [None, "wrong", ""])
def test_a_wrong_or_missing_secret_is_refused_and_emits_nothing(
    stack: Stack, secret: str, offered: str | None
) -> None:
    payload = webhook()
    headers = {"Content-Type": "application/json"}
    if offered is not None:
        headers[SECRET_HEADER] = offered
    response = post(stack, json.dumps(payload).encode(), headers)
    assert response.status_code == 401
    assert secret not in response.text
    assert not events_with_id(stack, event_id("repo", payload["commit_id"]))


@pytest.mark.slow
def test_bad_bodies_are_refused(stack: Stack, secret: str) -> None:
    headers = {SECRET_HEADER: secret, "Content-Type": "application/json"}
    huge = json.dumps(webhook(commit_message="x" * (MAX_BODY_BYTES + 1))).encode()
    assert post(stack, huge, headers).status_code == 413
    assert post(stack, b"{not json", headers).status_code == 400
    assert post(stack, b"[1, 2]", headers).status_code == 400
    assert post(stack, json.dumps(webhook(commit_id="")).encode(), headers).status_code == 400
    text = {SECRET_HEADER: secret, "Content-Type": "text/plain"}
    assert post(stack, json.dumps(webhook()).encode(), text).status_code == 415


@pytest.mark.slow
def test_unknown_events_and_clearlakes_own_commits_are_ignored(
    stack: Stack, secret: str
) -> None:
    from clearlake.provenance import ResultsMarker, signing_key

    headers = {SECRET_HEADER: secret, "Content-Type": "application/json"}
    other = post(stack, json.dumps(webhook(event_type="pre-create-tag")).encode(), headers)
    assert other.status_code == 202 and "ignored" in other.json()
    marker = ResultsMarker("repo", "main", "s" * 64, "", "run-1", "nb-x", "packaged", "v", "0")
    own = webhook(commit_metadata=marker.to_metadata(signing_key()))
    response = post(stack, json.dumps(own).encode(), headers)
    assert response.status_code == 202 and "ignored" in response.json()
    assert not events_with_id(stack, event_id("repo", own["commit_id"]))


@pytest.mark.slow
def test_healthz(stack: Stack) -> None:
    assert httpx.get(f"{stack.bridge_url}/healthz").text == "ok"
