"""End to end, as a user works: lakectl commits → lakeFS webhook → bridge → Prefect
event → triggered deployment on the stack's worker and Dask cluster → results commit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from clearlake import layout
from clearlake.lakefs import LakeFS
from clearlake.provenance import ResultsMarker, latest_results, signing_key
from clearlake.stack.services import Stack
from tests.pipeline_support import classify_runs, photo, settled, unique_seed, wait_until

pytestmark = pytest.mark.slow


def lakectl_commit(env: dict[str, str], repo: str, files: dict[str, bytes], tmp: Path,
                   message: str, branch: str = "main") -> str:
    for path, data in files.items():
        local = tmp / path.replace("/", "_")
        local.write_bytes(data)
        subprocess.run(["lakectl", "fs", "upload", "-s", str(local),
                        f"lakefs://{repo}/{branch}/{path}"], env=env, check=True,
                       capture_output=True)
    out = subprocess.run(["lakectl", "commit", f"lakefs://{repo}/{branch}", "-m", message],
                         env=env, check=True, capture_output=True, text=True).stdout
    return out.split("ID: ", 1)[1].split()[0]


def test_a_lakectl_commit_is_classified_by_itself(
    lakefs: LakeFS, watched_repo: str, lakectl_env: dict[str, str], tmp_path: Path
) -> None:
    repo = watched_repo
    seed = unique_seed()
    commit = lakectl_commit(lakectl_env, repo, {f"img/{i}.jpg": photo(seed + i)
                                                for i in range(3)}, tmp_path, "three images")
    wait_until(lambda: settled(lakefs, repo))
    commit_id, marker = latest_results(lakefs, repo, "main", signing_key())
    assert marker.source_commit == commit
    results = lakefs.get_commit(repo, commit_id)
    # Exactly one results commit, right after the user's: the run's commit is squashed in,
    # so the history reads one commit per run.
    assert results.parents == [commit]
    assert marker.counts["computed"] == 3
    runs = [r for r in classify_runs(repo) if r.parameters.get("commit") == commit]
    assert len(runs) == 1 and str(runs[0].id) == marker.run_id


def test_the_same_webhook_delivered_twice_gives_one_run(
    lakefs: LakeFS, watched_repo: str, lakectl_env: dict[str, str], tmp_path: Path, stack: Stack
) -> None:
    import httpx

    from clearlake.bridge import SECRET_HEADER
    from clearlake.config import StackSecrets

    repo = watched_repo
    commit = lakectl_commit(lakectl_env, repo, {"twice.jpg": photo(unique_seed())}, tmp_path,
                            "one image")
    wait_until(lambda: settled(lakefs, repo))
    secret = StackSecrets.load(stack.home).webhook_secret.get_secret_value()
    replay = {"event_type": "post-commit", "repository_id": repo, "branch_id": "main",
              "commit_id": commit, "source_ref": "main", "committer": "admin"}
    response = httpx.post(f"{stack.bridge_url}/lakefs/events", json=replay,
                          headers={SECRET_HEADER: secret})
    assert response.status_code == 202
    time.sleep(5)  # time enough for a second run to be scheduled, were there one
    assert len([r for r in classify_runs(repo) if r.parameters.get("commit") == commit]) == 1


def test_commits_in_a_row_are_all_covered_and_results_trigger_nothing(
    lakefs: LakeFS, watched_repo: str, lakectl_env: dict[str, str], tmp_path: Path
) -> None:
    repo = watched_repo
    seed = unique_seed()
    before = len(classify_runs(repo))
    commits = [lakectl_commit(lakectl_env, repo, {f"row/{i}.jpg": photo(seed + i)}, tmp_path,
                              f"commit {i}") for i in range(4)]
    wait_until(lambda: settled(lakefs, repo))
    key = signing_key()
    _, marker = latest_results(lakefs, repo, "main", key)
    assert all(lakefs.is_ancestor(repo, c, marker.source_commit) for c in commits)
    # Each commit's run comes, even once an earlier run has covered it (under load, a
    # trigger can come seconds after the commits are covered), and all of them end.
    wait_until(lambda: len(classify_runs(repo)) - before >= len(commits))
    wait_until(lambda: all(r.state.is_final() for r in classify_runs(repo)))
    time.sleep(3)  # a results commit that triggered a run would show one by now
    assert len(classify_runs(repo)) - before == len(commits)  # one per user commit, none more
    records = {o.path for o in lakefs.list_objects(repo, "main", layout.RECORDS_PREFIX)}
    assert {layout.record_path(f"row/{i}.jpg") for i in range(4)} <= records
    results_merges = [c for c in lakefs.log(repo, "main", first_parent=True)
                      if ResultsMarker.from_metadata(c.metadata, key)]
    assert len(results_merges) <= len(commits) + 1  # + the one for the action files


def test_a_commit_made_while_the_bridge_was_down_is_caught_by_reconcile(
    lakefs: LakeFS, watched_repo: str, lakectl_env: dict[str, str], tmp_path: Path, stack: Stack
) -> None:
    from clearlake.flows.reconcile import reconcile

    repo = watched_repo
    bridge_pid = stack._running_pid("bridge")
    stack._stop(bridge_pid)
    try:
        commit = lakectl_commit(lakectl_env, repo, {"lost.jpg": photo(unique_seed())},
                                tmp_path, "while the bridge was down")
        time.sleep(3)
        assert not settled(lakefs, repo)  # the webhook failed; nothing will come of it
    finally:
        stack.up(report=lambda line: None, deploy=False)
    report = reconcile([repo])
    assert [p["source_commit"] for p in report[repo]["processed"]] == [commit]
    assert settled(lakefs, repo)


def test_the_gate_refuses_a_bad_merge_with_its_reason_and_allows_a_good_one(
    lakefs: LakeFS, watched_repo: str, tmp_path: Path
) -> None:
    from clearlake.errors import HookRejectedError
    from clearlake.layout import POLICY_PATH
    from clearlake.transaction import Transaction

    repo = watched_repo
    seed = unique_seed()
    with Transaction(lakefs, repo, "main") as tx:
        tx.upload(POLICY_PATH, b"max_not_good_percent: 0\n")
        tx.commit("a strict policy")
    wait_until(lambda: settled(lakefs, repo))

    lakefs.create_branch(repo, "bad", "main")
    lakefs.upload_object(repo, "bad", "incoming/blurred.jpg", photo(seed, size=400, blur=6.0))
    lakefs.commit(repo, "bad", "a blurred image")
    with pytest.raises(HookRejectedError) as refused:
        lakefs.merge(repo, "bad", "main")
    logs = "".join(log for _, log in lakefs.hook_outputs(repo, refused.value.run_id))
    assert "REFUSED" in logs and "incoming/blurred.jpg" in logs

    lakefs.create_branch(repo, "empty", "main")
    lakefs.upload_object(repo, "empty", "docs/readme.txt", b"no images here")
    lakefs.commit(repo, "empty", "no images")
    assert lakefs.merge(repo, "empty", "main")  # nothing incoming breaks the policy
