"""The secrets sweep: after the suite (this module runs last in the directory), no secret
value of the stack appears anywhere a person or another program can read it.

Secrets: every `SecretStr` of the stack's `secrets.json` (lakeFS secret key and
encryption key, webhook secret, signing key, S3 secret key, PostgreSQL password).
Where: every file under the stack's state directory except `secrets.json` and the
servers' data stores (so every log, pid record, config and template); Prefect's flow-run
parameters, flow-run logs, events, artifacts, deployments and work pools through its API;
lakeFS commit messages and metadata of every commit of every branch of every
repository, and its action files (`_lakefs_actions/`); the argument lists
(`/proc/PID/cmdline`) of every process of the stack, flow runs included; and the
bridge's review pages, where the bridge has them. The sweep first makes a commit of its
own and waits for its run, so that even alone it sweeps a stack that has worked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from clearlake.actions import EVENTS_ACTION_PATH
from clearlake.config import StackSecrets
from clearlake.lakefs import LakeFS
from clearlake.stack.services import SERVICE_NAMES, Stack
from tests.pipeline_support import commit_images, photo, unique_seed
from tests.reliability.support import covered_by_its_own_run, runs_settled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# The servers' own data stores: where the secrets are meant to be kept, or user data.
DATA_STORES = ("s3", "postgres", "dask", "lakefs/metadata", "lakefs/data", "lakefs/cache",
               "prefect/prefect.db", "prefect/prefect.db-wal", "prefect/prefect.db-shm")
PAGE = 200


def secret_values(home: Path) -> dict[str, bytes]:
    secrets = StackSecrets.load(home)
    return {name: value.get_secret_value().encode() for name, value in vars(secrets).items()
            if isinstance(value, SecretStr)}


class Sweep:
    """Texts searched, and where each secret was found (by secret name, never value)."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets
        self.found: list[str] = []
        self.searched: dict[str, int] = {}

    def search(self, kind: str, where: str, text: bytes | str) -> None:
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        self.searched[kind] = self.searched.get(kind, 0) + 1
        self.found += [f"{name} in {kind}: {where}" for name, value in self.secrets.items()
                       if value in data]


def state_files(home: Path) -> Iterator[Path]:
    skip = {home / "secrets.json", *(home / d for d in DATA_STORES)}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not any(path == s or s in path.parents for s in skip):
            yield path


def prefect_pages(client: Any, read: str, **kwargs: Any) -> Iterator[Any]:
    offset = 0
    while True:
        page = getattr(client, read)(limit=PAGE, offset=offset, **kwargs)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def prefect_events(api: str) -> Iterator[dict[str, Any]]:
    with httpx.Client(timeout=60) as http:
        response = http.post(f"{api}/events/filter", json={
            "filter": {"occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50})
        response.raise_for_status()
        page = response.json()
        while True:
            yield from page["events"]
            if not page.get("next_page"):
                return
            response = http.get(page["next_page"])
            response.raise_for_status()
            page = response.json()


def review_routes() -> list[str]:
    """The bridge's routes under /review, if this version of the bridge has any."""
    from clearlake.bridge import create_app

    return [route.path for route in create_app().routes
            if getattr(route, "path", "").startswith("/review")]


def test_no_secret_appears_anywhere(stack: Stack, lakefs: LakeFS, watched_repo: str) -> None:
    repo = watched_repo
    commit = commit_images(lakefs, repo, {"sweep/0.jpg": photo(unique_seed())})
    covered_by_its_own_run(lakefs, repo, commit)
    runs_settled(repo)
    sweep = Sweep(secret_values(stack.home))
    assert len(sweep.secrets) == 6

    for path in state_files(stack.home):
        sweep.search("file", str(path.relative_to(stack.home)), path.read_bytes())

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for run in prefect_pages(client, "read_flow_runs"):
            sweep.search("flow-run parameters", run.name, json.dumps(run.parameters))
            sweep.search("flow-run state", run.name, run.state.message or "" if run.state else "")
        for log in prefect_pages(client, "read_logs"):
            sweep.search("flow-run log", str(log.flow_run_id), log.message)
        for artifact in prefect_pages(client, "read_artifacts"):
            sweep.search("artifact", artifact.key or str(artifact.id),
                         json.dumps(artifact.data, default=str) + (artifact.description or ""))
        for deployment in client.read_deployments():
            sweep.search("deployment", deployment.name,
                         deployment.model_dump_json())
        for pool in client.read_work_pools():
            sweep.search("work pool", pool.name, pool.model_dump_json())
    for event in prefect_events(stack.prefect_api_url):
        sweep.search("event", event["event"], json.dumps(event))

    for repository in lakefs.list_repositories():
        for branch, head in lakefs.list_branches(repository):
            for commit in lakefs.log(repository, head):
                sweep.search("lakeFS commit", f"{repository}@{commit.id[:12]}",
                             commit.message + json.dumps(commit.metadata or {}))
            for action in lakefs.list_objects(repository, head, "_lakefs_actions/"):
                sweep.search("action file", f"{repository}/{branch}/{action.path}",
                             lakefs.get_object(repository, head, action.path))

    processes = [pid for name in SERVICE_NAMES for pid in stack.processes(name)]
    assert len(processes) >= len(SERVICE_NAMES) - 1  # all but PostgreSQL (not in this profile)
    for pid in processes:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        sweep.search("process arguments", str(pid), cmdline)

    routes = review_routes()
    with httpx.Client(base_url=stack.bridge_url, timeout=120) as http:
        for route in routes:
            url = (route.replace("{repository}", repo).replace("{repo}", repo)
                   .replace("{branch}", "main").replace("{ref}", "main"))
            if "{" in url:
                continue  # a parameter this sweep cannot fill in
            page = http.get(url)
            sweep.search("review page", url, page.content)

    print(f"\nsearched: {sweep.searched}; review pages: "
          f"{routes or 'none (the bridge has no /review route in this version)'}")
    assert sweep.searched["file"] >= len(SERVICE_NAMES) - 1  # at least every service's log
    assert sweep.searched["lakeFS commit"] and sweep.searched["action file"]
    assert sweep.searched["event"] and sweep.searched["flow-run parameters"]
    assert sweep.found == []
    # The action file names the secret (lakeFS reads it from its environment), never holds it.
    assert "{{ ENV.LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET }}" in lakefs.get_object(
        repo, "main", EVENTS_ACTION_PATH).decode()
