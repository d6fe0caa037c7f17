"""The lakeFS action files clearlake installs into a repository.

`_lakefs_actions/clearlake.yaml` posts the events that move a watched branch to a new
commit (post-commit, post-merge, post-revert, post-cherry-pick) to the bridge;
`_lakefs_actions/clearlake-gate.yaml` asks the bridge's quality gate before a merge
into a protected branch. (An action has one list of hooks for all its events, and the
two go to different endpoints, hence two files.) The shared secret is not in the
files: lakeFS reads it from its own environment
(`{{ ENV.LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET }}`), which the stack sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from clearlake.bridge import FORWARDED_EVENT_TYPES as BRANCH_MOVING_EVENTS
from clearlake.bridge import SECRET_HEADER
from clearlake.lakefs import LakeFS
from clearlake.layout import ACTIONS_ROOT
from clearlake.stack.services import ACTIONS_WEBHOOK_SECRET_ENV
from clearlake.transaction import commit_changed_files

EVENTS_ACTION_PATH = f"{ACTIONS_ROOT}clearlake.yaml"
GATE_ACTION_PATH = f"{ACTIONS_ROOT}clearlake-gate.yaml"
GATE_TIMEOUT = "5m"  # the gate may have to measure images nobody measured yet


def _hook(hook_id: str, url: str, timeout: str) -> dict[str, object]:
    return {
        "id": hook_id,
        "type": "webhook",
        "properties": {
            "url": url,
            "timeout": timeout,
            "headers": {SECRET_HEADER: f"{{{{ ENV.{ACTIONS_WEBHOOK_SECRET_ENV} }}}}"},
        },
    }


def render_actions(
    bridge_url: str, watched: Sequence[str] = (), protected: Sequence[str] = ("main",)
) -> dict[str, str]:
    """The action files, by path.

    Args:
        bridge_url: base URL of the bridge as lakeFS reaches it.
        watched: branch patterns whose commits are classified; empty means all branches.
        protected: branches whose merges pass the quality gate.
    """
    branches = {"branches": list(watched)} if watched else None
    events = {
        "name": "clearlake",
        "description": "Tell clearlake about new commits so it classifies their images.",
        # Every event that moves a branch to a new commit (lakeFS v1.84.0,
        # pkg/graveler/hooks_handler.go): a revert or cherry-pick fires no post-commit.
        "on": {event: branches for event in BRANCH_MOVING_EVENTS},
        "hooks": [_hook("notify_clearlake", f"{bridge_url}/lakefs/events", "30s")],
    }
    gate = {
        "name": "clearlake-gate",
        "description": "clearlake's image-quality gate for merges into protected branches.",
        "on": {"pre-merge": {"branches": list(protected)}},
        "hooks": [_hook("quality_gate", f"{bridge_url}/lakefs/gate", GATE_TIMEOUT)],
    }
    header = "# Installed by `clearlake init-repo`; run it again to update.\n"
    return {
        EVENTS_ACTION_PATH: header + yaml.safe_dump(events, sort_keys=False),
        GATE_ACTION_PATH: header + yaml.safe_dump(gate, sort_keys=False),
    }


def install_actions(
    lakefs: LakeFS, repository: str, branch: str, files: dict[str, str]
) -> str | None:
    """Commit the action files to `branch` where they differ; return the commit, if any."""
    return commit_changed_files(
        lakefs, repository, branch, {path: text.encode() for path, text in files.items()},
        "clearlake: install lakeFS actions (classification, quality gate)",
    )
