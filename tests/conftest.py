"""Fixtures that start the real stack: lakeFS and a Prefect server on free loopback ports.

The session's stack lives in a temporary state directory and is stopped after the
session. Tests get temporary repositories that delete themselves.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

# A Prefect call that finds no API URL (a thread outside the stack fixture's settings
# context, say) must fail, not start a hidden temporary server and pass against it.
# Set before Prefect is imported: its root settings are read from the environment then.
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"

from bench import cleanup
from clearlake import pipeline
from clearlake.actions import install_actions, render_actions
from clearlake.config import lakefs_settings
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack.install import install_lakefs, lakectl_environment
from clearlake.stack.services import Stack, free_loopback_ports
from tests.pipeline_support import wait_until
from tests.review_support import reviewed  # noqa: F401  (a fixture: the review tests' repository)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--server-free",
        action="store_true",
        help="the server-free tier (`make test-fast`): a test that asks for the stack fails",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test that needs the stack is marked `slow`, so `-m 'not slow'` starts no server."""
    unmarked = [
        item.nodeid
        for item in session.items
        if "stack" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the stack (through stack, lakefs, repo, dask_address, …) "
            "but are not marked slow:\n  " + "\n  ".join(unmarked)
        )


@pytest.fixture(autouse=True)
def _no_stack_in_the_server_free_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --server-free, a test that starts a stack itself (`Stack.up`) fails.

    (A `clearlake stack up` run as a subprocess is not seen here: mark such tests slow.)
    """
    if request.config.getoption("server_free"):
        def refuse(*args: Any, **kwargs: Any) -> None:
            pytest.fail(f"{request.node.nodeid} starts a stack in the server-free tier")

        monkeypatch.setattr(Stack, "up", refuse)


def pytest_sessionstart(session: pytest.Session) -> None:
    """SIGTERM stops the session as Ctrl-C does, so that fixtures stop what they started.

    Python's default SIGTERM action ends the process at once: no finalizer runs, and the
    stack's services (each in its own session) would outlive the tests. pytest handles
    the `KeyboardInterrupt` this raises by tearing every fixture down; a second signal
    while that runs is ignored instead of cutting it short.
    """
    cleanup.install()


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running stack (lakeFS + Prefect) for the whole test session."""
    if request.config.getoption("server_free"):
        pytest.fail("a test asks for the stack in the server-free tier: mark it slow")
    install_lakefs(report=lambda line: None)
    home = tmp_path_factory.mktemp("clearlake-home")
    stack = Stack(home=home, ports=free_loopback_ports())
    saved = {k: os.environ.get(k) for k in ("CLEARLAKE_HOME", "PREFECT_API_URL")}
    try:
        stack.up(report=lambda line: None)
        os.environ["CLEARLAKE_HOME"] = str(home)
        os.environ["PREFECT_API_URL"] = stack.prefect_api_url
        # Prefect reads its settings when imported, so set them in-process as well as
        # in the environment (which flow-run subprocesses inherit).
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
            yield stack
    finally:
        with cleanup.deferred():
            try:
                # Deliver the events Prefect still holds before its server goes away.
                from prefect.events.worker import EventsWorker

                EventsWorker.drain_all()
            finally:
                stack.down(report=lambda line: None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def lakefs(stack: Stack) -> LakeFS:
    """A lakeFS client for the session's stack."""
    return LakeFS(lakefs_settings(stack.home))


@pytest.fixture
def repo(lakefs: LakeFS) -> Iterator[str]:
    """A new, empty repository (branch main) that is deleted after the test."""
    name = f"test-{secrets.token_hex(4)}"
    lakefs.create_repository(name)
    try:
        yield name
    finally:
        lakefs.delete_repository(name)


@pytest.fixture
def lakectl_env(stack: Stack, lakefs: LakeFS) -> dict[str, str]:
    """Environment for running the built lakectl against the session's stack."""
    settings = lakefs.settings
    env = lakectl_environment(
        settings.endpoint, settings.access_key_id, settings.secret_access_key.get_secret_value()
    )
    env["HOME"] = str(stack.home)  # no ~/.lakectl.yaml of the developer's
    return env


@pytest.fixture(scope="session")
def dask_address(stack: Stack) -> str:
    """The stack's Dask cluster: a scheduler and one worker process per core, on loopback."""
    return stack.dask_address


@pytest.fixture
def classify(dask_address: str) -> Any:
    from clearlake.flows.classify import classify_commit

    def run(repo: str, branch: str = "main", **options: Any) -> dict[str, Any]:
        return classify_commit(repo, branch, dask_address=dask_address, batch_size=8, **options)

    return run



@pytest.fixture
def watched_repo(lakefs: LakeFS, repo: str, stack: Stack) -> str:
    """A repository with clearlake's lakeFS actions installed (as `init-repo` does)."""
    install_actions(lakefs, repo, "main", render_actions(stack.bridge_url))
    wait_until(lambda: pipeline.is_covered(lakefs, repo, "main", signing_key()))
    return repo
