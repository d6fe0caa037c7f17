"""What clearlake trusts on a branch: only the markers and records it made itself.

Anyone who can commit to a branch can copy a results marker's metadata onto their
commit, and can write anything under `_clearlake/`. Neither may hide an image from
a run or speak for clearlake at the quality gate, in lineage or in the table.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from clearlake import layout, pipeline
from clearlake.errors import NotFoundError
from clearlake.gate import evaluate_merge, incoming_labels
from clearlake.lakefs import LakeFS, ObjectInfo
from clearlake.layout import POLICY_PATH
from clearlake.lineage import lineage
from clearlake.provenance import (
    RESULTS_ROOT,
    ResultsMarker,
    latest_results,
    sign_record,
    signing_key,
    verified_marker,
    verified_record,
)
from clearlake.quality.analyse import analyse
from clearlake.quality.classifier import Model
from clearlake.table import table_records, updated_table
from tests.pipeline_support import commit_images, photo, records_on, unique_seed


def _copied_marker(lakefs: LakeFS, repo: str, results_commit: str) -> dict[str, str]:
    """A results commit's `clearlake.*` metadata, verbatim (still validly signed)."""
    metadata = lakefs.get_commit(repo, results_commit).metadata
    copied = {k: v for k, v in metadata.items() if k.startswith("clearlake.")}
    assert ResultsMarker.from_metadata(copied, signing_key()) is not None
    return copied


# -- markers ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_copied_marker_does_not_hide_a_commit_that_adds_an_image(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    key = signing_key()
    seed = unique_seed()
    commit_images(lakefs, repo, {"a.jpg": photo(seed)})
    first = classify(repo)
    lakefs.upload_object(repo, "main", "b.jpg", photo(seed + 1))
    sneaky = lakefs.commit(repo, "main", "b.jpg, under clearlake's marker",
                           _copied_marker(lakefs, repo, first["results_commit"]))

    source = pipeline.source_of(lakefs, repo, "main", key)
    latest, _ = latest_results(lakefs, repo, "main", key)
    covered = pipeline.is_covered(lakefs, repo, "main", key)  # what reconcile asks
    second = classify(repo)
    assert second["status"] == "merged" and second["source_commit"] == sneaky
    assert second["counts"]["computed"] == 1
    assert set(records_on(lakefs, repo)) == {"a.jpg", "b.jpg"}
    assert (source, latest, covered) == (sneaky, first["results_commit"], False)
    assert pipeline.is_covered(lakefs, repo, "main", key)


@pytest.mark.slow
def test_a_marker_counts_on_commits_that_change_only_clearlakes_folder(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    key = signing_key()
    commit_images(lakefs, repo, {"a.jpg": photo(unique_seed())})
    results = lakefs.get_commit(repo, classify(repo)["results_commit"])
    assert verified_marker(lakefs, repo, results, key) is not None

    # Copied onto a commit that writes only under _clearlake/: accepted, and it hides no
    # input (it changes none); what it writes there is not trusted (records are signed).
    lakefs.upload_object(repo, "main", f"{RESULTS_ROOT}notes.txt", b"mine")
    only_results = lakefs.commit(repo, "main", "a note",
                                 _copied_marker(lakefs, repo, results.id))
    assert verified_marker(lakefs, repo, lakefs.get_commit(repo, only_results), key)
    assert pipeline.is_covered(lakefs, repo, "main", key)


@pytest.mark.slow
def test_a_commit_under_a_copied_marker_is_classified_and_foreign_writes_are_reported(
    lakefs: LakeFS, watched_repo: str
) -> None:
    from clearlake.flows.reconcile import reconcile

    from tests.pipeline_support import settled, wait_until

    repo = watched_repo
    seed = unique_seed()
    commit_images(lakefs, repo, {"a.jpg": photo(seed)})
    wait_until(lambda: settled(lakefs, repo) and "a.jpg" in records_on(lakefs, repo))
    results, _ = latest_results(lakefs, repo, "main", signing_key())
    lakefs.upload_object(repo, "main", "b.jpg", photo(seed + 1))
    lakefs.commit(repo, "main", "b.jpg, under clearlake's marker",
                  _copied_marker(lakefs, repo, results))
    # The bridge checks the commit itself, not only the webhook's signed metadata.
    wait_until(lambda: settled(lakefs, repo) and "b.jpg" in records_on(lakefs, repo))

    # A user's own record under _clearlake/ is not trusted, and reconcile says so.
    lakefs.upload_object(repo, "main", layout.record_path("a.jpg"), b'{"label": "good"}')
    forged = lakefs.commit(repo, "main", "my own record")
    wait_until(lambda: settled(lakefs, repo))  # its own triggered run
    report = reconcile([repo])[repo]
    assert report["foreign_results_writes"] == {"main": [forged]}


# -- records ---------------------------------------------------------------------------------


FORGERIES = ("edited", "unsigned", "signed with another key", "replayed")


def _forged(how: str, genuine: dict[str, Any], image: ObjectInfo) -> dict[str, Any]:
    """A record for `image` that claims `genuine`'s metrics and label."""
    moved = {**genuine, "path": image.path, "checksum": image.checksum, "size": image.size}
    if how == "edited":
        return moved  # the genuine signature, over other content now
    if how == "unsigned":
        return {k: v for k, v in moved.items() if k != "signature"}
    if how == "signed with another key":
        return sign_record(moved, b"not the stack's key")
    return genuine  # "replayed": clearlake's own record of another image, verbatim


@pytest.mark.slow
def test_a_forged_record_does_not_get_a_blurry_image_past_the_gate(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    lakefs.upload_object(repo, "main", POLICY_PATH, b"max_not_good_percent: 0\n")
    commit_images(lakefs, repo, {"sharp.jpg": photo(seed, size=400)}, message="a strict policy")
    classify(repo)
    genuine = records_on(lakefs, repo)["sharp.jpg"]
    assert genuine["label"] == "good" and verified_record(genuine, signing_key())

    blurred = "incoming/blurred.jpg"
    image = photo(seed + 1, size=400, blur=6.0)
    seen = {}
    for how in FORGERIES:
        branch = f"forged-{how.replace(' ', '-')}"
        lakefs.create_branch(repo, branch, "main")
        info = lakefs.upload_object(repo, branch, blurred, image)
        lakefs.upload_object(repo, branch, layout.record_path(blurred),
                             json.dumps(_forged(how, genuine, info)).encode())
        source = lakefs.commit(repo, branch, "a blurred image, with a record calling it good")

        verdict = evaluate_merge(repo, source, "main")
        try:
            lineage_label = lineage(lakefs, repo, blurred, branch).record["label"]
        except NotFoundError as error:
            assert "not written by clearlake" in str(error)
            lineage_label = None
        seen[how] = (verdict.allowed, verdict.labels[blurred], lineage_label)
    assert seen == {how: (False, "blurry", None) for how in FORGERIES}


@pytest.mark.slow
def test_the_gate_trusts_clearlakes_own_records_without_measuring_again(
    lakefs: LakeFS, repo: str, classify: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"old.jpg": photo(seed, size=400)})
    classify(repo)
    lakefs.create_branch(repo, "feature", "main")
    commit_images(lakefs, repo, {"new.jpg": photo(seed + 1, size=400)}, branch="feature")
    classify(repo, "feature")

    def must_not_measure(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a signed record was measured again")

    monkeypatch.setattr(pipeline, "measure_batch", must_not_measure)
    labels = incoming_labels(lakefs, repo, lakefs.head(repo, "feature"),
                             lakefs.head(repo, "main"))
    assert labels == {"new.jpg": "good"}


@pytest.mark.slow
def test_lineage_leaves_out_a_forged_version_of_a_record(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"cat.jpg": photo(seed, size=400, blur=6.0)})
    classify(repo)
    genuine = records_on(lakefs, repo)["cat.jpg"]
    assert genuine["label"] == "blurry"
    forged = {**genuine, "label": "good", "probabilities": {"good": 1.0}}  # stale signature
    lakefs.upload_object(repo, "main", layout.record_path("cat.jpg"),
                         json.dumps(forged).encode())
    lakefs.commit(repo, "main", "call the cat good")
    with pytest.raises(NotFoundError, match="not written by clearlake"):
        lineage(lakefs, repo, "cat.jpg")

    commit_images(lakefs, repo, {"cat.jpg": photo(seed + 1, size=400)}, message="a new cat")
    last = classify(repo)
    found = lineage(lakefs, repo, "cat.jpg")
    assert found.record["source_commit"] == last["source_commit"]
    assert [h.label for h in found.history] == [found.record["label"], "blurry"]


def test_table_rows_and_relabelling_take_only_signed_records() -> None:
    key = b"the stack's key"
    metrics = analyse(photo(unique_seed())).metrics
    base = {"label": "blurry", "outcome": "ok", "reason": "", "probabilities": {"blurry": 0.9},
            "metrics": metrics, "sha256": "s", "size": 10, "width": 4,
            "height": 3, "model_id": "m", "source_commit": "c", "run_id": "r",
            "origin": "computed", "computed_at": {}, "checksum": "x"}
    genuine = sign_record({**base, "path": "a.jpg"}, key)
    edited = {**sign_record({**base, "path": "b.jpg"}, key), "label": "good"}
    unsigned = {**base, "path": "c.jpg"}
    table = updated_table(None, [genuine, edited, unsigned], [])

    assert table_records(table, key=key) == [genuine]
    assert len(table_records(table)) == 3  # unchecked, as stored
    relabelled = pipeline.relabel([genuine, edited, unsigned], Model.load(None), "r2", key=key)
    assert [r["path"] for r in relabelled] == ["a.jpg"]  # forged metrics are never re-signed
    assert verified_record(relabelled[0], key, path="a.jpg", checksum="x")
