"""Load: a burst of one-image commits on one branch; commits on three branches at once,
then concurrent merges. After each, the health check finds nothing lost.

What CI can afford: 30 commits in a burst (the size at which issue 12 saw a run fail
on a deleted temporary branch), and three writers. The issue's longer loads — 100
commits in 60 s, ten minutes sustained — run in `python -m bench.soak`. The lag from
commit to covering results is printed (shared machine: not asserted).
"""

from __future__ import annotations

import pytest

from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from tests.pipeline_support import settled, unique_seed, wait_until
from tests.reliability.support import (
    RUN_TIMEOUT_S,
    Burst,
    assert_healthy,
    check_health,
    commit_burst,
    covering_lags,
    in_parallel,
    percentile,
    runs_settled,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

BURST_COMMITS = 30


def describe_lags(lags: list[float]) -> str:
    return (f"commit → covering results: p50 {percentile(lags, 0.5):.1f} s, "
            f"p95 {percentile(lags, 0.95):.1f} s over {len(lags)} commits (shared machine)")


def test_a_burst_of_one_image_commits_on_one_branch(lakefs: LakeFS, watched_repo: str) -> None:
    repo, key = watched_repo, signing_key()
    burst = commit_burst(lakefs, repo, "main", [1] * BURST_COMMITS, unique_seed())
    wait_until(lambda: settled(lakefs, repo), RUN_TIMEOUT_S)
    runs_settled(repo)
    health = check_health(lakefs, repo, ["main"], key, expected=burst.images)
    assert_healthy(health)
    assert health.images == BURST_COMMITS
    lags = list(covering_lags(lakefs, repo, "main", key, burst.committed_at).values())
    assert len(lags) == BURST_COMMITS  # every commit was covered by some results merge
    print(f"\nburst: {BURST_COMMITS} commits, {health.runs} runs; {describe_lags(lags)}")


def test_three_branches_at_once_then_concurrent_merges(lakefs: LakeFS, watched_repo: str) -> None:
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    for branch in ("left", "right"):
        lakefs.create_branch(repo, branch, "main")
    plans = {"main": [1, 5, 20, 2], "left": [3, 1, 8], "right": [1, 12, 1]}
    bursts: list[Burst] = in_parallel(*[
        (lambda b=branch, s=sizes, n=index: commit_burst(lakefs, repo, b, s, seed + n * 10_000))
        for index, (branch, sizes) in enumerate(plans.items())])
    burst = Burst()
    for part in bursts:
        burst.merge_from(part)
    # Both side branches merge into main at once, each while its own runs may still write.
    in_parallel(lambda: lakefs.merge(repo, "left", "main", "merge left"),
                lambda: lakefs.merge(repo, "right", "main", "merge right"))
    branches = list(plans)
    wait_until(lambda: all(settled(lakefs, repo, b) for b in branches), RUN_TIMEOUT_S)
    runs_settled(repo)
    expected = {**burst.images, "main": set().union(*burst.images.values())}
    health = check_health(lakefs, repo, branches, key, expected=expected)
    assert_healthy(health)
    assert health.images == sum(len(paths) for paths in expected.values())
    lags = list(covering_lags(lakefs, repo, "main", key, {
        c: t for c, t in burst.committed_at.items() if c in burst.commits["main"]}).values())
    print(f"\nthree branches: {burst.total_commits} commits, {burst.total_images} images, "
          f"2 merges, {health.runs} runs; main {describe_lags(lags)}")
