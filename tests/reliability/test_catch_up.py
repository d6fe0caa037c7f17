"""Catching up after trouble: images a run failed to measure are measured again.

A run that cannot read an image (the S3 server down, a worker lost for good) records it
as `failed` and lists it in its results marker's `retry`. The head is then covered, but
not done: `pipeline.is_covered` says so, and `reconcile` (or the branch's next run)
measures those images again without waiting for a new commit.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from clearlake import layout, pipeline
from clearlake.lakefs import LakeFS
from clearlake.provenance import latest_results, signing_key, verified_record
from clearlake.transaction import Transaction
from tests.pipeline_support import commit_images, photo, unique_seed, wait_until
from tests.reliability.support import RUN_TIMEOUT_S, run_reconcile, runs_settled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_reconcile_retries_the_images_a_run_failed_to_measure(
    lakefs: LakeFS, watched_repo: str, dask_address: str
) -> None:
    repo, key = watched_repo, signing_key()
    seed = unique_seed()
    commit_images(lakefs, repo, {"retry/a.jpg": photo(seed), "retry/b.jpg": photo(seed + 1)})
    wait_until(lambda: pipeline.is_covered(lakefs, repo, "main", key), RUN_TIMEOUT_S)
    runs_settled(repo)
    _, covering = latest_results(lakefs, repo, "main", key)

    # Results as a run that could not read retry/b.jpg leaves them: the same source
    # commit, the image listed for a retry (signed, merged as clearlake merges results).
    failed = dataclasses.replace(covering, run_id=str(uuid.uuid4()), retry=["retry/b.jpg"],
                                 previous_source_commit=covering.source_commit)
    with Transaction(lakefs, repo, "main") as tx:
        tx.commit("clearlake: 1 failed, to retry", failed.to_metadata(key))
    assert not pipeline.is_covered(lakefs, repo, "main", key)

    report = run_reconcile(repo, dask_address)
    [processed] = report["processed"]
    assert processed["status"] == "merged", processed
    assert processed["counts"]["computed"] + processed["counts"]["reused"] == 1
    _, retried = latest_results(lakefs, repo, "main", key)
    assert retried.source_commit == covering.source_commit
    assert retried.retry == []
    assert pipeline.is_covered(lakefs, repo, "main", key)
    head = lakefs.head(repo, "main")
    checksum = lakefs.stat_object(repo, head, "retry/b.jpg").checksum
    record = verified_record(lakefs.get_object(repo, head, layout.record_path("retry/b.jpg")),
                             key, path="retry/b.jpg", checksum=checksum)
    assert record is not None and record["run_id"] == retried.run_id
    assert record["outcome"] == "ok"
