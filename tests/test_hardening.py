"""Holes 3, 4, 5 and 7 of issue 12, each closed and kept closed.

Most tests here need no server: secrets and record keys are pure logic, and the bridge
is driven as an ASGI app in-process, with Prefect (where events go) and lakeFS (which
confirms a commit exists) replaced at the edge. The last tests run the same paths
against the real stack: lakeFS's own webhooks through the stack's bridge into Prefect.
"""

from __future__ import annotations

import asyncio
import json
import ntpath
import posixpath
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from clearlake import layout
from clearlake.bridge import MAX_BODY_BYTES, SECRET_HEADER, Bridge, create_app, event_id
from clearlake.config import StackSecrets, lakefs_settings
from clearlake.errors import ConfigurationError
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack.services import Stack

SECRET = "test-webhook-secret"
HEADERS = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}
COMMIT = "ab" * 32


# -- hole 3: only `clearlake stack up` creates secrets -------------------------------------


@pytest.fixture
def no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory without secrets, and no secret in the environment."""
    for name in ("CLEARLAKE_SIGNING_KEY", "CLEARLAKE_WEBHOOK_SECRET", "LAKEFS_ACCESS_KEY_ID",
                 "LAKEFS_SECRET_ACCESS_KEY", "LAKEFS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARLAKE_HOME", str(home))
    return home


def assert_says_where_it_looked(error: pytest.ExceptionInfo[ConfigurationError], home: Path
                                ) -> None:
    message = str(error.value)
    assert str(home.resolve() / "secrets.json") in message
    assert "CLEARLAKE_HOME" in message and "clearlake stack up" in message


def test_the_signing_key_getter_creates_no_secrets(no_secrets: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        signing_key()
    assert_says_where_it_looked(error, no_secrets)
    assert "CLEARLAKE_SIGNING_KEY" in str(error.value)
    assert not no_secrets.exists()


def test_without_clearlake_home_nothing_appears_in_the_working_directory(
    no_secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLEARLAKE_HOME")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as error:
        signing_key()
    assert_says_where_it_looked(error, tmp_path / ".clearlake")
    assert not (tmp_path / ".clearlake").exists()


def test_the_bridge_creates_no_secrets(no_secrets: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        create_app()
    assert_says_where_it_looked(error, no_secrets)
    assert "CLEARLAKE_WEBHOOK_SECRET" in str(error.value)
    assert not no_secrets.exists()


def test_missing_lakefs_credentials_are_a_configuration_error(no_secrets: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        lakefs_settings()
    assert_says_where_it_looked(error, no_secrets)
    assert "LAKEFS_ACCESS_KEY_ID" in str(error.value)
    assert not no_secrets.exists()


def test_load_reads_what_stack_up_made_and_never_writes(tmp_path: Path) -> None:
    made = StackSecrets.load_or_create(tmp_path)  # what `clearlake stack up` does
    assert StackSecrets.load(tmp_path) == made
    path = tmp_path / "secrets.json"
    old = json.loads(path.read_text())
    del old["s3_access_key_id"], old["postgres_password"]  # a file from an older clearlake
    path.write_text(json.dumps(old))
    before = path.read_bytes()
    with pytest.raises(ConfigurationError) as error:
        StackSecrets.load(tmp_path)
    assert "s3_access_key_id" in str(error.value) and "postgres_password" in str(error.value)
    assert "clearlake stack up" in str(error.value)
    path.write_text(before.decode()[:-3])  # cut short: not JSON
    with pytest.raises(ConfigurationError) as error:
        StackSecrets.load(tmp_path)
    assert made.signing_key.get_secret_value() not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.json"]


# -- the bridge, in-process: Prefect and lakeFS replaced at the edge ------------------------


class OfflineBridge(Bridge):
    """The bridge with the commits lakeFS 'has' given (None: ask `self.lakefs`), and the
    events it sends to Prefect recorded."""

    def __init__(self, known: set[tuple[str, str]] | None) -> None:
        super().__init__(SECRET, b"signing-key", "http://prefect.invalid/api")
        self.known = known
        self.posted: list[dict[str, Any]] = []
        self.asked: list[tuple[str, str]] = []

        def prefect(request: httpx.Request) -> httpx.Response:
            self.posted.extend(json.loads(request.content))
            return httpx.Response(200)

        self.http = httpx.AsyncClient(transport=httpx.MockTransport(prefect))

    def commit_exists(self, repository: str, commit_id: str) -> bool:
        self.asked.append((repository, commit_id))
        if self.known is None:
            return super().commit_exists(repository, commit_id)
        return (repository, commit_id) in self.known


def call(bridge: Bridge, body: bytes | AsyncIterator[bytes], path: str = "/lakefs/events",
         headers: dict[str, str] | None = None) -> httpx.Response:
    """POST `body` to the bridge's app in-process; app exceptions propagate (a 500)."""
    app = Starlette(routes=[Route("/lakefs/events", bridge.events, methods=["POST"]),
                            Route("/lakefs/gate", bridge.gate, methods=["POST"])])

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            return await client.post(path, content=body, headers=headers or HEADERS)

    return asyncio.run(send())


def payload(repository: str = "repo", branch: str = "main", commit: str = COMMIT,
            **extra: Any) -> dict[str, Any]:
    """A lakeFS post-commit payload, as pkg/actions/event.go marshals it."""
    return {
        "event_type": "post-commit", "event_time": "2026-11-25T12:00:00Z",
        "action_name": "clearlake", "hook_id": "notify_clearlake",
        "repository_id": repository, "branch_id": branch, "source_ref": commit,
        "commit_id": commit, "commit_message": "m", "committer": "alice",
        "commit_metadata": {}, **extra,
    }


def send(bridge: Bridge, document: Any) -> httpx.Response:
    return call(bridge, json.dumps(document).encode())


# -- hole 4: only names lakeFS makes, only commits lakeFS has --------------------------------

TEMPLATES = ["{{ event }}", "{% raw %}x{% endraw %}", "{{event.payload}}", "{# c #}"]
BAD_NAMES = [
    *[("repository_id", t) for t in TEMPLATES],
    *[("branch_id", t) for t in TEMPLATES],
    *[("commit_id", t) for t in TEMPLATES],
    *[("source_ref", t) for t in TEMPLATES],
    ("repository_id", "Repo"), ("repository_id", "re"), ("repository_id", "a" * 64),
    ("repository_id", "-repo"), ("repository_id", "repo_1"), ("repository_id", "repo\n"),
    ("repository_id", "répo"), ("repository_id", "repo/../x"), ("repository_id", 7),
    ("branch_id", "-main"), ("branch_id", "main\n"), ("branch_id", "ma in"),
    ("branch_id", "mäin"), ("branch_id", "feature/x"), ("branch_id", "main}}"),
    ("branch_id", ["main"]),
    ("commit_id", "g" * 64), ("commit_id", "a" * 65), ("commit_id", COMMIT + "\n"),
]


@pytest.mark.parametrize(("field", "value"), BAD_NAMES)
def test_names_lakefs_would_not_make_are_refused_and_nothing_runs(field: str, value: Any) -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    response = send(bridge, payload(**{field: value}))
    assert response.status_code == 400
    assert bridge.posted == [] and bridge.asked == []
    if isinstance(value, str) and "{" in value:
        assert value not in response.text  # not echoed back either


def test_the_gate_refuses_template_names_before_looking_anything_up() -> None:
    bridge = OfflineBridge(set())
    gate = payload(event_type="pre-merge", branch_id="{{ event }}")
    response = call(bridge, json.dumps(gate).encode(), path="/lakefs/gate")
    assert response.status_code == 400


@pytest.mark.parametrize(("repository", "branch", "commit"), [
    ("a-1", "main", COMMIT), ("a" * 63, "_x", "0"), ("0-0", "Feature_1-x", "A" * 64),
])
def test_names_within_lakefs_rules_become_an_event(repository: str, branch: str, commit: str
                                                   ) -> None:
    bridge = OfflineBridge({(repository, commit)})
    response = send(bridge, payload(repository, branch, commit))
    assert response.status_code == 202
    assert response.json()["event_id"] == event_id(repository, commit)
    [event] = bridge.posted
    assert event["payload"]["repository"] == repository and event["payload"]["branch"] == branch


@pytest.mark.parametrize(("repository", "commit"), [("gone", COMMIT), ("repo", "cd" * 32)])
def test_a_commit_lakefs_does_not_have_is_ignored_and_nothing_runs(repository: str,
                                                                   commit: str) -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    response = send(bridge, payload(repository, commit=commit))
    assert response.status_code == 202 and "ignored" in response.json()
    assert bridge.asked == [(repository, commit)] and bridge.posted == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_when_lakefs_cannot_confirm_the_commit_the_hook_fails_and_nothing_runs() -> None:
    bridge = OfflineBridge(None)  # the real check, against a lakeFS that is not there
    bridge.lakefs = LakeFS.connect(f"http://127.0.0.1:{free_port()}", "AKIAEXAMPLE", "secret")
    response = send(bridge, payload())
    assert response.status_code == 503 and bridge.posted == []


# -- hole 7: big but legitimate bodies pass, garbage is a 400, never a 500 -------------------


def test_a_500_kb_commit_message_triggers() -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    response = send(bridge, payload(commit_message="ü" * 250_000))  # 500 KB of UTF-8
    assert response.status_code == 202
    assert len(bridge.posted) == 1


def test_72_kb_of_commit_metadata_triggers() -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    metadata = {f"key-{i:04d}": "v" * 62 for i in range(1000)}
    assert len(json.dumps(metadata)) > 72_000
    response = send(bridge, payload(commit_metadata=metadata))
    assert response.status_code == 202
    assert len(bridge.posted) == 1


@pytest.mark.parametrize("body", [
    b"[" * 60_000,
    b'{"a":' * 60_000,
    json.dumps(payload()).encode()[:-1] + b', "x": ' + b"[" * 60_000 + b"]" * 60_000 + b"}",
], ids=["brackets", "objects", "deep-field"])
def test_deeply_nested_bodies_are_a_400(body: bytes) -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    assert call(bridge, body).status_code == 400
    assert bridge.posted == []


def nested(depth: int) -> list[Any]:
    """A list `depth` levels deep: well-formed JSON, within Python's recursion limit."""
    value: list[Any] = ["a"]
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("extra", [
    {"event_type": ["post-commit"]}, {"event_type": {"a": 1}}, {"event_type": None},
    {"commit_metadata": ["clearlake.kind"]}, {"commit_metadata": {"a": {"b": "c"}}},
    {"commit_metadata": {"a": 1}}, {"commit_metadata": "x"},
    {"commit_metadata": {"x": nested(500)}}, {"committer": nested(500)},
    {"event_time": "yesterday"}, {"event_time": 5}, {"committer": {"name": "a"}},
    {"commit_message": ["m"]},
])
def test_fields_of_the_wrong_shape_are_a_400(extra: dict[str, Any]) -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    assert send(bridge, payload(**extra)).status_code == 400
    assert bridge.posted == []


def test_bodies_beyond_the_bound_are_refused_with_or_without_a_length() -> None:
    bridge = OfflineBridge({("repo", COMMIT)})
    declared = {**HEADERS, "Content-Length": str(MAX_BODY_BYTES + 1)}
    assert call(bridge, b"{}", headers=declared).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read in a stream
        for _ in range(MAX_BODY_BYTES // 2**20 + 1):
            yield b" " * 2**20

    assert call(bridge, chunks()).status_code == 413
    assert bridge.posted == []


# -- hole 5: record keys stay under _clearlake/records/ on any file system ------------------

HOSTILE_PATHS = [
    "../../outside.jpg", "../", "..", ".", "a/../../b.jpg", "a/./b.jpg", "/etc/passwd.jpg",
    "//server/share/x.jpg", "a//b.jpg", "x/", "/", "", "back\\slash.jpg", "..\\..\\x.jpg",
    "C:/x.jpg", "c:\\x.jpg", "C:x.jpg", "1:x.jpg", "a/C:/b.jpg", "new\nline.jpg", "cr\r.jpg",
    "nul\x00.jpg", "tab\t.jpg", "del\x7f.jpg", "nel\x85.jpg", "ls\u2028.jpg", "50%.jpg",
    "%2E%2E/x.jpg", "%2F.jpg", "%25.jpg", "... /x.jpg", " /x.jpg", ". ./x.jpg", "...",
    "emoji 😀/日本語 ü.jpg", "sp ace/#hash?.jpg", "x" * 900 + ".jpg", "_clearlake/records/x.jpg",
    "_clearlake/../_lakefs_actions/a.yaml",
]
ORDINARY_PATHS = [
    "images/00.jpg", "a/b/c.png", "café/ü.jpg", "😀 smile.jpg", "Screenshot 12:30:00.png",
    "with space.jpg", "a..b.jpg", ".hidden.jpg", "...jpg", "x.", "#1?.jpg", "_clearlake/x.jpg",
]
ROOT = "_clearlake/records/"


def assert_contained(key: str) -> None:
    """`key` written to a disk by any tool lands under _clearlake/records/."""
    assert key.startswith(ROOT) and key.endswith(".json")
    segments = key.split("/")
    assert all(s and s.strip(". ") for s in segments), key  # no empty, '.', '..' segments
    assert not any(c in key for c in "\\\x00\n\r") and all(ord(c) >= 0x20 for c in key)
    assert not any(s[1:2] == ":" for s in segments), key  # no Windows drive
    assert posixpath.normpath(posixpath.join("/dest", key)).startswith("/dest/" + ROOT)
    windows = "C:\\dest\\_clearlake\\records\\"
    assert ntpath.normpath(ntpath.join("C:\\dest", *segments)).startswith(windows), key
    assert ntpath.normpath(ntpath.join("C:\\dest", key)).startswith(windows), key


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_get_keys_that_stay_inside_and_decode_back(path: str) -> None:
    key = layout.record_path(path)
    assert_contained(key)
    assert layout.image_path_of(key) == path


def test_random_paths_round_trip_and_stay_inside() -> None:
    alphabet = ["a", "E", "2", "/", "/", ".", ".", " ", "%", "\\", ":", "\n", "\x00", "é", "😀"]
    rng = random.Random(12)
    keys = set()
    for _ in range(5000):
        path = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        key = layout.record_path(path)
        assert_contained(key)
        assert layout.image_path_of(key) == path
        keys.add((path, key))
    assert len({k for _, k in keys}) == len({p for p, _ in keys})  # one key per path


@pytest.mark.parametrize("path", ORDINARY_PATHS)
def test_ordinary_paths_keep_the_key_they_had(path: str) -> None:
    # Records stored before keys were encoded stay where `record_path` looks for them.
    assert layout.record_path(path) == f"{ROOT}{path}.json"
    assert layout.image_path_of(f"{ROOT}{path}.json") == path


@pytest.mark.parametrize("key", [
    "other/x.json", f"{ROOT}x.txt", f"{ROOT}50%.jpg.json", f"{ROOT}%2e%2e.json",
    f"{ROOT}../x.json", f"{ROOT}a//b.json", f"{ROOT}%FF.json", f"{ROOT}a%2Fb/%2E/.json",
])
def test_keys_record_path_does_not_make_are_not_decoded(key: str) -> None:
    with pytest.raises(ValueError):
        layout.image_path_of(key)


# -- against the real stack ------------------------------------------------------------------


@pytest.fixture
def secret(stack: Stack) -> str:
    return StackSecrets.load(stack.home).webhook_secret.get_secret_value()


def prefect_events(stack: Stack, wanted: str, wait_s: float) -> list[dict[str, Any]]:
    """Events the Prefect server stored with id `wanted`, waiting up to `wait_s` for one."""
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.post(f"{stack.prefect_api_url}/events/filter", json={
            "filter": {"id": {"id": [wanted]}, "occurred": {"since": "2026-01-01T00:00:00Z"}},
            "limit": 10})
        response.raise_for_status()
        if (found := response.json()["events"]) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.mark.slow
def test_the_stacks_bridge_ignores_unknown_repositories_and_refuses_templates(
    stack: Stack, secret: str
) -> None:
    headers = {SECRET_HEADER: secret, "Content-Type": "application/json"}
    url = f"{stack.bridge_url}/lakefs/events"
    missing = payload(f"no-such-repo-{uuid.uuid4().hex[:8]}", commit=uuid.uuid4().hex * 2)
    response = httpx.post(url, content=json.dumps(missing), headers=headers)
    assert response.status_code == 202 and "ignored" in response.json()
    templated = payload("{{ event }}", "{% raw %}", commit=uuid.uuid4().hex * 2)
    assert httpx.post(url, content=json.dumps(templated), headers=headers).status_code == 400
    for document in (missing, templated):
        wanted = event_id(document["repository_id"], document["commit_id"])
        assert prefect_events(stack, wanted, wait_s=2.0) == []


@pytest.fixture
def hooked_repo(stack: Stack, lakefs: LakeFS, repo: str) -> Iterator[str]:
    """`repo` with clearlake's lakeFS actions installed on main."""
    from clearlake.actions import install_actions, render_actions

    install_actions(lakefs, repo, "main", render_actions(stack.bridge_url))
    yield repo


@pytest.mark.slow
def test_lakefs_webhooks_of_huge_commit_messages_and_metadata_still_trigger(
    stack: Stack, lakefs: LakeFS, hooked_repo: str
) -> None:
    commits = []
    lakefs.upload_object(hooked_repo, "main", "notes/a.txt", b"a")
    commits.append(lakefs.commit(hooked_repo, "main", "m" * 500_000))
    lakefs.upload_object(hooked_repo, "main", "notes/b.txt", b"b")
    metadata = {f"key-{i:04d}": "v" * 62 for i in range(1000)}  # 72 KB
    commits.append(lakefs.commit(hooked_repo, "main", "with metadata", metadata))
    for commit in commits:
        assert prefect_events(stack, event_id(hooked_repo, commit), wait_s=30.0), commit


@pytest.mark.slow
def test_lineage_answers_for_a_hostile_path(lakefs: LakeFS, repo: str) -> None:
    from clearlake.lineage import lineage
    from clearlake.provenance import sign_record, signing_key

    path = "../../outside\n.jpg"
    record = sign_record({"path": path, "checksum": "c", "label": "good", "source_commit": "s",
                          "run_id": "r", "origin": "computed", "model_id": "m",
                          "computed_at": 0}, signing_key())
    lakefs.upload_object(repo, "main", layout.record_path(path), json.dumps(record).encode())
    commit = lakefs.commit(repo, "main", "a record")
    found = lineage(lakefs, repo, path)
    assert found.record == record and [h.commit for h in found.history] == [commit]
    listed = [layout.image_path_of(o.path)
              for o in lakefs.list_objects(repo, "main", layout.RECORDS_PREFIX)]
    assert listed == [path]
