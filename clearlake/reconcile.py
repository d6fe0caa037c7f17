"""Catching up: temporary branches left behind, and heads no results cover yet.

lakeFS sends each webhook once, a run can be killed, and a write-back can be left
pending behind someone's uncommitted changes. `clean_temporary_branches` settles
what runs left behind; `uncovered_branches` finds the heads that still need a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clearlake.errors import DirtyBranchError
from clearlake.provenance import ResultsMarker, latest_results
from clearlake.store import LakeFS
from clearlake.transaction import TEMP_BRANCH_PREFIX, finish_pending, temp_branch_created_at

STALE_AFTER_S = 15 * 60


@dataclass
class Cleanup:
    """What `clean_temporary_branches` did, by branch name."""

    merged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def clean_temporary_branches(
    lakefs: LakeFS, repository: str, key: bytes, *, stale_after_s: float = STALE_AFTER_S,
    merge_timeout_s: float = 10.0,
) -> Cleanup:
    """Merge pending results that are still needed; delete the rest once stale.

    * A temporary branch whose head is a signed results commit is a pending
      write-back: merged if its branch's results do not cover its source commit
      yet, deleted if they do (a later run superseded it).
    * Any other temporary branch older than `stale_after_s` belongs to a run that
      died before committing: deleted. Younger ones may belong to a live run: kept.
    """
    done = Cleanup()
    now = time.time()
    for name, head in lakefs.list_branches(repository, prefix=TEMP_BRANCH_PREFIX):
        marker = ResultsMarker.from_metadata(lakefs.get_commit(repository, head).metadata, key)
        created = temp_branch_created_at(name) or 0.0
        if marker is None or marker.repository != repository:
            if now - created > stale_after_s:
                lakefs.delete_branch(repository, name)
                done.deleted.append(name)
            else:
                done.kept.append(name)
            continue
        latest = latest_results(lakefs, repository, marker.branch, key)
        covered = latest is not None and lakefs.is_ancestor(
            repository, marker.source_commit, latest[1].source_commit)
        if covered:
            lakefs.delete_branch(repository, name)
            done.deleted.append(name)
            continue
        try:
            finish_pending(lakefs, repository, name, marker.branch, merge_timeout_s)
            done.merged.append(name)
        except DirtyBranchError:
            done.kept.append(name)  # still dirty: next time
    return done
