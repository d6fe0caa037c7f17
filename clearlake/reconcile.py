"""Catching up: temporary branches left behind, and heads no results cover yet.

lakeFS sends each webhook once, a run can be killed, and a write-back can be left
pending behind someone's uncommitted changes. `clean_temporary_branches` settles
what runs left behind; the `reconcile` flow (flows/reconcile.py) then starts a run
for each watched head that no results cover yet (`pipeline.is_covered`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clearlake.errors import (
    DirtyBranchError,
    HookUnreachableError,
    NotFoundError,
    UnavailableError,
)
from clearlake.lakefs import LakeFS
from clearlake.provenance import ResultsMarker, latest_results, verified_marker
from clearlake.transaction import (
    TEMP_BRANCH_PREFIX,
    finish_pending,
    temp_branch_created_at,
    temp_branch_owner,
)

STALE_AFTER_S = 15 * 60


@dataclass
class Cleanup:
    """What `clean_temporary_branches` did, by branch name."""

    merged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def clean_temporary_branches(
    lakefs: LakeFS, repository: str, key: bytes, *, stale_after_s: float = STALE_AFTER_S,
    merge_timeout_s: float = 10.0, is_live: Callable[[str], bool] | None = None,
) -> Cleanup:
    """Merge pending results that are still needed; delete the rest once stale.

    * A temporary branch named after a flow run that `is_live` says still runs is
      kept, whatever its age or head: the run is writing to it.
    * A temporary branch whose head is a signed results commit made on that branch
      (by the run it is named after; for a branch without a run id, a commit its
      destination does not have yet) is a pending write-back: merged if its branch's
      results do not cover its source commit yet, deleted if they do (a later run
      superseded it). A branch's head is not that when it is merely the results merge
      the branch was created from: every run's branch starts at one.
    * Any other temporary branch older than `stale_after_s` belongs to a run that
      died before committing (or to a transaction outside any flow run, for which age
      is all there is to go by): deleted. Younger ones are kept.

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        key: the signing key that validates results markers.
        stale_after_s: age after which a branch that is not a pending write-back goes.
        merge_timeout_s: how long to retry merging a pending write-back into a dirty branch.
        is_live: whether the Prefect flow run with this id is still running (not in a
            final state); None when there is no way to ask, so only age counts.
    """
    done = Cleanup()
    now = time.time()
    for name, head in lakefs.list_branches(repository, prefix=TEMP_BRANCH_PREFIX):
        owner = temp_branch_owner(name)
        if owner is not None and is_live is not None and is_live(owner):
            done.kept.append(name)
            continue
        marker = verified_marker(lakefs, repository, lakefs.get_commit(repository, head), key)
        if (marker is not None and marker.repository == repository
                and _written_on_branch(lakefs, repository, head, marker, owner)):
            try:
                _settle_pending(lakefs, repository, key, name, marker, merge_timeout_s, done)
                continue
            except NotFoundError:
                pass  # its destination branch is gone: nothing to write back to, so age decides
        if now - (temp_branch_created_at(name) or 0.0) > stale_after_s:
            lakefs.delete_branch(repository, name)
            done.deleted.append(name)
        else:
            done.kept.append(name)
    return done


def _written_on_branch(
    lakefs: LakeFS, repository: str, head: str, marker: ResultsMarker, owner: str | None
) -> bool:
    """True when `head` is a results commit its temporary branch made, not the one it
    was created from (the branch's last results merge carries a marker too)."""
    if owner is not None:
        return marker.run_id == owner  # the run commits its own results, with its own id
    try:
        return not lakefs.is_ancestor(repository, head, marker.branch)
    except NotFoundError:
        return False  # the destination is gone


def _settle_pending(
    lakefs: LakeFS, repository: str, key: bytes, name: str, marker: ResultsMarker,
    merge_timeout_s: float, done: Cleanup,
) -> None:
    """Merge a pending write-back its branch still needs, delete it if superseded.

    Raises:
        NotFoundError: the destination branch (or the temporary one) is gone.
    """
    latest = latest_results(lakefs, repository, marker.branch, key)
    covered = latest is not None and lakefs.is_ancestor(
        repository, marker.source_commit, latest[1].source_commit)
    if covered:
        lakefs.delete_branch(repository, name)
        done.deleted.append(name)
        return
    try:
        finish_pending(lakefs, repository, name, marker.branch, merge_timeout_s)
        done.merged.append(name)
    except (DirtyBranchError, HookUnreachableError, UnavailableError):
        done.kept.append(name)  # still dirty, the gate or lakeFS still away: next time
