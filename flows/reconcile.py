"""The `reconcile` flow: what webhooks missed, pending write-backs, stale branches, bypassed gates.

lakeFS sends each webhook once and never again; a webhook is lost while the bridge
or Prefect is down; a write-back can be left pending behind uncommitted changes.
On a schedule, for every repository with clearlake's action installed, this flow
settles temporary branches, runs `classify-commit` for each watched branch whose
head no results cover or whose failed images are due for a retry
(`pipeline.needs_run`: the waits between retries double, up to a day), and reports
merges into protected branches that have no recorded gate pass (the gate is a
guard-rail: a user can delete the action file) and commits not made by clearlake that
wrote its records or tables.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import yaml
from clearlake.flows.classify import classify_commit
from prefect import flow, get_run_logger

from clearlake import gate, layout, pipeline
from clearlake import reconcile as catch_up
from clearlake.actions import EVENTS_ACTION_PATH, GATE_ACTION_PATH
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key, verified_marker
from clearlake.transaction import TEMP_BRANCH_PREFIX

RECENT_MERGES = 50


def _installed(lakefs: LakeFS, repository: str, ref: str, path: str) -> dict[str, Any] | None:
    data = lakefs.get_object_or_none(repository, ref, path)
    return None if data is None else yaml.safe_load(data)


def flow_run_is_live(run_id: str) -> bool:
    """True while the Prefect flow run `run_id` is not in a final state (it may be writing).

    A run Prefect no longer knows is not live. Any other trouble asking raises: a
    branch is never deleted on a guess.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return False
    return run.state is None or not run.state.is_final()


def foreign_results_writes(lakefs: LakeFS, repository: str, branch: str, key: bytes) -> list[str]:
    """Recent commits on `branch` that wrote clearlake's records or tables but are not
    clearlake's: nothing there is trusted unless signed, and a person should know.

    Merges are left out: merging a processed branch brings its (signed) results along.
    """
    found = []
    written = lakefs.log(repository, branch, first_parent=True,
                         prefixes=[layout.RECORDS_PREFIX, layout.TABLES_PREFIX])
    for count, commit in enumerate(written):
        if count >= RECENT_MERGES:
            break
        if len(commit.parents) == 1 and not verified_marker(lakefs, repository, commit, key):
            found.append(commit.id)
    return found


def ungated_merges(lakefs: LakeFS, repository: str, branch: str, key: bytes) -> list[str]:
    """Recent merges into `branch` (not clearlake's own) without a recorded gate pass."""
    found = []
    for count, commit in enumerate(lakefs.log(repository, branch, first_parent=True)):
        if count >= RECENT_MERGES:
            break
        if len(commit.parents) < 2 or verified_marker(lakefs, repository, commit, key):
            continue
        verdict = gate.recorded_verdict(lakefs, repository, commit.parents[1])
        if not (verdict and verdict["allowed"]):
            found.append(commit.id)
    return found


@flow(name="reconcile", log_prints=True)
def reconcile(repositories: list[str] | None = None,
              stale_after_s: float = catch_up.STALE_AFTER_S) -> dict[str, Any]:
    """Bring every watched branch's results up to date and report what needs a person.

    Args:
        repositories: only these; default every repository with clearlake's action file.
        stale_after_s: age after which an uncommitted temporary branch is removed, once the
            flow run it is named after has ended (a running run's branch is always kept).
    """
    logger = get_run_logger()
    lakefs = LakeFS()
    key = signing_key()
    report: dict[str, Any] = {}
    for repository in repositories or lakefs.list_repositories():
        branches = [(b, h) for b, h in lakefs.list_branches(repository)
                    if not b.startswith(TEMP_BRANCH_PREFIX)]
        if not any(_installed(lakefs, repository, h, EVENTS_ACTION_PATH) for _, h in branches):
            continue  # not a clearlake repository (the metrics store, say)
        cleanup = catch_up.clean_temporary_branches(lakefs, repository, key,
                                                    stale_after_s=stale_after_s,
                                                    is_live=flow_run_is_live)
        processed = []
        for branch, head in branches:
            if _installed(lakefs, repository, head, EVENTS_ACTION_PATH) is None:
                continue
            if pipeline.needs_run(lakefs, repository, branch, key):
                logger.info("%s/%s: head %s not covered, or images to retry are due; "
                            "processing it", repository, branch, head[:12])
                processed.append({"branch": branch,
                                  **classify_commit(repository, branch)})
        ungated, foreign = {}, {}
        for branch, head in branches:
            if writes := foreign_results_writes(lakefs, repository, branch, key):
                logger.warning("%s/%s: commits not made by clearlake wrote under _clearlake/ "
                               "(not trusted): %s", repository, branch,
                               ", ".join(c[:12] for c in writes))
                foreign[branch] = writes
            gate_action = _installed(lakefs, repository, head, GATE_ACTION_PATH) or {}
            protected = ((gate_action.get("on") or {}).get("pre-merge") or {}).get("branches", [])
            if branch in protected and (merges := ungated_merges(lakefs, repository, branch, key)):
                logger.warning("%s/%s: merges without a recorded gate pass: %s", repository,
                               branch, ", ".join(m[:12] for m in merges))
                ungated[branch] = merges
        report[repository] = {"merged_pending": cleanup.merged, "deleted": cleanup.deleted,
                              "kept": cleanup.kept, "processed": processed,
                              "ungated_merges": ungated, "foreign_results_writes": foreign}
    return report
