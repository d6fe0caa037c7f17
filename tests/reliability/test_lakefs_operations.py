"""lakeFS operations beyond commit and merge end up classified on a watched branch.

A revert and a cherry-pick each make a new commit on the branch, but lakeFS fires no
post-commit for them: they fire post-revert and post-cherry-pick (lakeFS v1.84.0,
pkg/graveler/graveler.go `Revert`/`CherryPick`, payload as for a commit: branch and new
commit id). clearlake's action listens to both and the bridge forwards them, so each is
covered by a run triggered for exactly its commit, within seconds, not by the 3-minute
`reconcile`. An import is a commit (post-commit). A tag moves no branch: it starts
nothing and leaves the branch covered.

The time from each operation returning to the branch being covered is printed
(measured under the shared machine's load; not asserted).
"""

from __future__ import annotations

import secrets
import time

import lakefs_sdk
import pytest
import yaml

from clearlake.actions import EVENTS_ACTION_PATH, render_actions
from clearlake.bridge import FORWARDED_EVENT_TYPES
from clearlake.importing import S3Source, import_prefix
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack.services import Stack
from tests.pipeline_support import commit_images, photo, unique_seed, wait_until
from tests.reliability.support import (
    RUN_TIMEOUT_S,
    assert_healthy,
    check_health,
    covered_by_its_own_run,
    runs_of,
    runs_settled,
)
from tests.test_hardening import OfflineBridge, payload, send
from tests.test_importing import BUCKET, put_photos, s3_client

pytestmark = pytest.mark.timeout(1800)
BRANCH_MOVING = ("post-commit", "post-merge", "post-revert", "post-cherry-pick")


# -- no servers ------------------------------------------------------------------------------


def test_the_action_listens_to_every_event_that_moves_a_branch() -> None:
    events = yaml.safe_load(render_actions("http://127.0.0.1:1")[EVENTS_ACTION_PATH])
    assert list(events["on"]) == list(BRANCH_MOVING)
    assert tuple(FORWARDED_EVENT_TYPES) == BRANCH_MOVING
    watched = yaml.safe_load(render_actions("http://b", watched=["main", "dev-*"])
                             [EVENTS_ACTION_PATH])
    assert all(on == {"branches": ["main", "dev-*"]} for on in watched["on"].values())


@pytest.mark.parametrize("event_type", ["post-revert", "post-cherry-pick"])
def test_the_bridge_forwards_reverts_and_cherry_picks(event_type: str) -> None:
    commit = "cd" * 32
    bridge = OfflineBridge({("repo", commit)})
    response = send(bridge, payload(commit=commit, event_type=event_type))
    assert response.status_code == 202, response.text
    [event] = bridge.posted
    assert event["payload"] == {"repository": "repo", "branch": "main", "commit_id": commit,
                                "event_type": event_type, "committer": "alice",
                                "source_ref": commit}


@pytest.mark.parametrize("event_type", ["post-create-tag", "post-delete-branch", "pre-revert"])
def test_events_that_move_no_branch_are_ignored(event_type: str) -> None:
    bridge = OfflineBridge({("repo", "cd" * 32)})
    response = send(bridge, payload(commit="cd" * 32, event_type=event_type))
    assert response.status_code == 202 and "ignored" in response.json()
    assert bridge.posted == []


# -- against the stack -------------------------------------------------------------------------


@pytest.mark.slow
def test_revert_and_cherry_pick_are_covered_by_their_own_triggered_runs(
    lakefs: LakeFS, watched_repo: str
) -> None:
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    commit_images(lakefs, repo, {"ops/keep.jpg": photo(seed)})
    unwanted = commit_images(lakefs, repo, {"ops/unwanted.jpg": photo(seed + 1)})
    wait_until(lambda: check_health(lakefs, repo, ["main"], key).images == 2
               and not check_health(lakefs, repo, ["main"], key).problems(), RUN_TIMEOUT_S)

    lakefs.branches.revert_branch(repo, "main", lakefs_sdk.RevertCreation(ref=unwanted,
                                                                          parent_number=0))
    revert = lakefs.head(repo, "main")
    revert_s = covered_by_its_own_run(lakefs, repo, revert)
    runs_settled(repo)  # an older commit's hook may still be on its way under load
    health = check_health(lakefs, repo, ["main"], key, expected={"main": {"ops/keep.jpg"}})
    assert_healthy(health)
    assert health.images == 1  # the reverted image and its record are gone

    lakefs.create_branch(repo, "feature", "main")
    picked = commit_images(lakefs, repo, {"ops/picked.jpg": photo(seed + 2)}, branch="feature")
    cherry = lakefs.branches.cherry_pick(repo, "main",
                                         lakefs_sdk.CherryPickCreation(ref=picked)).id
    cherry_s = covered_by_its_own_run(lakefs, repo, cherry)
    runs_settled(repo)
    wait_until(lambda: not check_health(lakefs, repo, ["main", "feature"], key).problems(),
               RUN_TIMEOUT_S)
    health = check_health(lakefs, repo, ["main", "feature"], key,
                          expected={"main": {"ops/keep.jpg", "ops/picked.jpg"},
                                    "feature": {"ops/keep.jpg", "ops/picked.jpg"}})
    assert_healthy(health)
    print(f"\nrevert covered {revert_s:.1f} s after it returned; cherry-pick {cherry_s:.1f} s "
          "(shared machine: not asserted)")


@pytest.mark.slow
def test_an_import_is_covered_and_a_tag_starts_nothing(
    stack: Stack, lakefs: LakeFS, watched_repo: str
) -> None:
    repo, key = watched_repo, signing_key()
    prefix = f"incoming/{secrets.token_hex(4)}/"
    photos = put_photos(stack, prefix, 3)
    try:
        # lakeFS's import API as `lakectl import` calls it: no event of clearlake's own.
        imported = import_prefix(lakefs, S3Source(BUCKET, prefix), repo, "main", "imported/")
        # lakeFS's import commit fires post-commit: its own run covers it.
        import_s = covered_by_its_own_run(lakefs, repo, imported.commit_id)
        expected = {"main": {f"imported/{name}" for name in photos}}
        wait_until(lambda: not check_health(lakefs, repo, ["main"], key, expected).problems(),
                   RUN_TIMEOUT_S)
    finally:  # zero-copy: the objects stay where they are until the repository is gone
        client = s3_client(stack)
        for name in photos:
            client.delete_object(Bucket=BUCKET, Key=f"{prefix}{name}")

    runs_before = len(runs_of(repo))
    head = lakefs.head(repo, "main")
    lakefs_sdk.TagsApi(lakefs.client).create_tag(
        repo, lakefs_sdk.TagCreation(id="v1", ref=head))
    time.sleep(3)  # a tag that started a run would show one by now
    assert len(runs_of(repo)) == runs_before
    assert lakefs.get_commit(repo, "v1").id == head
    assert_healthy(check_health(lakefs, repo, ["main"], key, expected))
    print(f"\nimport covered {import_s:.1f} s after it returned (shared machine: not asserted)")
