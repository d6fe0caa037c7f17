"""Reconcile against live runs, and runs whose branches vanish under them (issue 12, hole 6).

A run's temporary branch starts at the branch's last results merge, whose signed
marker it inherits: reconcile must not take it for a pending write-back, nor delete it
while its run lives, whatever its age. A run that loses its temporary branch anyway,
or its source branch, ends with a typed outcome instead of a failed run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import clearlake.flows.classify as classify_flow
import pytest

from clearlake.lakefs import LakeFS
from clearlake.provenance import latest_results, signing_key
from clearlake.transaction import TEMP_BRANCH_PREFIX, Transaction
from tests.pipeline_support import commit_images, photo, records_on, unique_seed


def temp_branches(lakefs: LakeFS, repo: str) -> list[str]:
    return [name for name, _ in lakefs.list_branches(repo, prefix=TEMP_BRANCH_PREFIX)]


@pytest.mark.slow
def test_reconcile_keeps_a_live_runs_branch_and_settles_pending_and_abandoned_ones(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    from clearlake.flows.reconcile import flow_run_is_live
    from prefect import flow
    from prefect.runtime import flow_run

    from clearlake.reconcile import clean_temporary_branches
    from clearlake.transaction import temp_branch_name, temp_branch_owner

    key = signing_key()
    seed = unique_seed()
    commit_images(lakefs, repo, {"a/0.jpg": photo(seed)})
    assert classify(repo)["status"] == "merged"  # main's head: a results merge, signed

    @flow(name="test-finished-run")
    def finished_run() -> str:
        return str(flow_run.id)

    # A run that died before committing left its branch (its head: main's results merge).
    abandoned = temp_branch_name(finished_run())
    lakefs.create_branch(repo, abandoned, "main")
    lakefs.upload_object(repo, abandoned, "_clearlake/half-written.json", b"{}")
    ownerless_old = f"{TEMP_BRANCH_PREFIX}{int(time.time()) - 3600}-0badc0de"
    lakefs.create_branch(repo, ownerless_old, "main")

    @flow(name="test-live-run")
    def live_run() -> dict[str, Any]:
        with Transaction(lakefs, repo, "main") as tx:
            tx.upload("_clearlake/live.json", b"{}")
            assert temp_branch_owner(tx.temp_branch) == str(flow_run.id)
            # Meanwhile an earlier run's results were left pending behind a user's upload.
            user_commit = commit_images(lakefs, repo, {"a/1.jpg": photo(seed + 1)})
            lakefs.upload_object(repo, "main", "a/wip.jpg", photo(seed + 2))
            pending = classify(repo, merge_timeout_s=1.0)
            assert pending["status"] == "pending"
            lakefs.commit(repo, "main", "the user finishes")
            # Made to look old: with no grace period at all, age alone would delete it.
            cleanup = clean_temporary_branches(lakefs, repo, key, stale_after_s=0,
                                               is_live=flow_run_is_live)
            left = temp_branches(lakefs, repo)
            merged = tx.commit("the live run finishes")  # its branch and staging intact
        return {"cleanup": vars(cleanup), "left": left, "pending": pending["pending_branch"],
                "live": tx.temp_branch, "merged": merged, "user_commit": user_commit}

    seen = live_run()
    assert seen["cleanup"] == {"kept": [seen["live"]], "merged": [seen["pending"]],
                               "deleted": sorted([abandoned, ownerless_old])}
    assert seen["left"] == [seen["live"]]
    assert lakefs.get_object(repo, "main", "_clearlake/live.json") == b"{}"
    assert lakefs.head(repo, "main") == seen["merged"]
    latest = latest_results(lakefs, repo, "main", key)  # the pending write-back, merged
    assert latest is not None and latest[1].source_commit == seen["user_commit"]
    assert {"a/0.jpg", "a/1.jpg"} <= set(records_on(lakefs, repo))

    # The case as reported: a young branch from a results merge, outside any flow run,
    # is kept by a reconcile at its default age threshold.
    assert classify(repo)["status"] == "merged"
    with Transaction(lakefs, repo, "main") as bare:
        assert temp_branch_owner(bare.temp_branch) is None
        bare.upload("_clearlake/bare.json", b"{}")
        cleanup = clean_temporary_branches(lakefs, repo, key, is_live=flow_run_is_live)
        assert cleanup.kept == [bare.temp_branch] and not cleanup.deleted
        bare.commit("a transaction outside any run finishes")
    assert temp_branches(lakefs, repo) == []


def _deleting_after_first_batch(
    monkeypatch: pytest.MonkeyPatch, delete: Any
) -> None:
    """Make the run's measuring call `delete()` once its first batch is measured."""
    measure = classify_flow.measure_on_dask

    def measure_then_delete(*args: Any, **kwargs: Any) -> Iterator[list[Any]]:
        for index, batch in enumerate(measure(*args, **kwargs)):
            if index == 0:
                delete()
            yield batch

    monkeypatch.setattr(classify_flow, "measure_on_dask", measure_then_delete)


@pytest.mark.slow
def test_a_run_whose_temporary_branch_is_deleted_ends_interrupted_and_the_next_run_covers(
    lakefs: LakeFS, repo: str, classify: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = unique_seed()
    images = {f"t/{i}.jpg": photo(seed + i) for i in range(3)}
    commit_images(lakefs, repo, images)

    def delete_temporary_branches() -> None:
        for name in temp_branches(lakefs, repo):
            lakefs.delete_branch(repo, name)

    _deleting_after_first_batch(monkeypatch, delete_temporary_branches)
    state = classify(repo, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["status"] == "interrupted"
    assert summary["temp_branch"].startswith(TEMP_BRANCH_PREFIX)
    assert "deleted" in summary["reason"]
    assert not records_on(lakefs, repo)  # nothing applied
    assert temp_branches(lakefs, repo) == []

    monkeypatch.undo()
    follow_up = classify(repo)
    assert follow_up["status"] == "merged"
    assert follow_up["counts"]["reused"] == 3  # the lost run's measurements were kept
    assert set(records_on(lakefs, repo)) == set(images)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "during"])
def test_a_run_whose_branch_is_deleted_ends_branch_deleted_and_completed(
    lakefs: LakeFS, repo: str, classify: Any, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"base.jpg": photo(seed)})
    lakefs.create_branch(repo, "feature", "main")
    commit = commit_images(lakefs, repo, {f"f/{i}.jpg": photo(seed + 1 + i) for i in range(3)},
                           branch="feature")
    if when == "before":
        lakefs.delete_branch(repo, "feature")
    else:
        _deleting_after_first_batch(monkeypatch,
                                    lambda: lakefs.delete_branch(repo, "feature"))

    state = classify(repo, "feature", commit=commit, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["status"] == "branch_deleted"
    assert summary["source_commit"] == commit
    assert [name for name, _ in lakefs.list_branches(repo)] == ["main"]  # nothing left behind
