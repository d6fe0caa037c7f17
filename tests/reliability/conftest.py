"""The reliability suite's stack waits longer for its services to answer their health
checks: on a shared 2-core machine under load (average 14–21), the Prefect server was
seen to take more than the stack's 120 s to start, which failed the session before any
test ran. Restarts in the fault scenarios wait as long, and so does a new repository's
first run (seen over the shared fixture's 180 s at load 12–17)."""

import pytest

from clearlake import pipeline
from clearlake.actions import install_actions, render_actions
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack import services
from clearlake.stack.services import Stack
from tests.pipeline_support import wait_until
from tests.reliability.support import RUN_TIMEOUT_S

services.HEALTH_TIMEOUT_S = max(services.HEALTH_TIMEOUT_S, 600.0)


@pytest.fixture
def watched_repo(lakefs: LakeFS, repo: str, stack: Stack) -> str:
    """A repository with clearlake's lakeFS actions installed (as `init-repo` does), once
    its first run has covered main."""
    install_actions(lakefs, repo, "main", render_actions(stack.bridge_url))
    wait_until(lambda: pipeline.is_covered(lakefs, repo, "main", signing_key()), RUN_TIMEOUT_S)
    return repo
