"""The quality diff between two refs: the pure core with exact values, and the real stack."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from clearlake import layout, pipeline
from clearlake.cli.repo import action_run_url, hook_answer
from clearlake.config import StackSecrets
from clearlake.errors import NotFoundError
from clearlake.gate import Policy, Verdict, judge, labels_of, what_it_brings
from clearlake.lakefs import LakeFS
from clearlake.layout import POLICY_PATH
from clearlake.provenance import signing_key
from clearlake.quality.classifier import Model
from clearlake.quality_diff import (
    Side,
    arrivals,
    brings_lines,
    compare,
    quality_diff,
    quartiles,
    summary_lines,
)
from clearlake.stack.services import Stack
from tests.pipeline_support import (
    commit_images,
    photo,
    run_cli,
    settled,
    unique_seed,
    wait_until,
)


def rec(path: str, label: str | None, sha: str, *, p_good: float | None = None,
        outcome: str = "ok", checksum: str = "", blur: float | None = None) -> dict[str, Any]:
    """A record as `pipeline.record` writes it, with only what the diff reads."""
    return {
        "path": path, "label": label, "outcome": outcome, "sha256": sha,
        "checksum": checksum or f"md5-{sha}",
        "probabilities": None if label is None else {"good": p_good, "other": 1 - (p_good or 0)},
        "metrics": None if blur is None else {"blur": blur},
    }


BEFORE = {
    "a.jpg": rec("a.jpg", "good", "s1", p_good=0.9, blur=10.0),
    "b.jpg": rec("b.jpg", "good", "s2", p_good=0.8, blur=20.0),   # changed → blurry
    "c.jpg": rec("c.jpg", "good", "s3", p_good=0.7, blur=30.0),   # relabelled → blurry
    "d.jpg": rec("d.jpg", "blurry", "s4", p_good=0.1, blur=40.0),  # removed
    "e.jpg": rec("e.jpg", "moire", "s5", p_good=0.2, blur=50.0),  # same bytes, new checksum
}
AFTER = {
    "a.jpg": rec("a.jpg", "good", "s1", p_good=0.9, blur=10.0),
    "b.jpg": rec("b.jpg", "blurry", "s2b", p_good=0.3, blur=2.0),
    "c.jpg": rec("c.jpg", "blurry", "s3", p_good=0.4, blur=30.0),
    "e.jpg": rec("e.jpg", "moire", "s5", p_good=0.2, blur=50.0, checksum="etag-multipart"),
    "f.jpg": rec("f.jpg", "blurry", "s6", p_good=0.05, blur=1.0),
    "g.jpg": rec("g.jpg", None, "s7", outcome="corrupt"),
}


def test_compare_sorts_images_into_added_removed_changed_and_relabelled() -> None:
    diff = compare(BEFORE, AFTER, repository="r", from_ref="main", to_ref="feature",
                   from_commit="c" * 64, to_commit="d" * 64, computed=2)
    data = diff.to_dict()
    assert data["counts"] == {
        "from": {"images": 5, "labels": {"blurry": 1, "good": 3, "moire": 1},
                 "outcomes": {"ok": 5}},
        "to": {"images": 6, "labels": {"blurry": 3, "good": 1, "moire": 1},
               "outcomes": {"corrupt": 1, "ok": 5}},
    }
    assert data["added"] == [
        {"path": "f.jpg", "before": None,
         "after": {"label": "blurry", "outcome": "ok", "p_good": 0.05, "sha256": "s6"}},
        {"path": "g.jpg", "before": None,
         "after": {"label": None, "outcome": "corrupt", "p_good": None, "sha256": "s7"}},
    ]
    assert data["removed"] == [
        {"path": "d.jpg", "after": None,
         "before": {"label": "blurry", "outcome": "ok", "p_good": 0.1, "sha256": "s4"}}]
    assert data["changed"] == [
        {"path": "b.jpg",
         "before": {"label": "good", "outcome": "ok", "p_good": 0.8, "sha256": "s2"},
         "after": {"label": "blurry", "outcome": "ok", "p_good": 0.3, "sha256": "s2b"}}]
    assert data["relabelled"] == [
        {"path": "c.jpg",
         "before": {"label": "good", "outcome": "ok", "p_good": 0.7, "sha256": "s3"},
         "after": {"label": "blurry", "outcome": "ok", "p_good": 0.4, "sha256": "s3"}}]
    assert data["transitions"] == {"good→blurry": 2}
    assert data["incoming"] == {"blurry": 2, "corrupt": 1}
    assert data["computed"] == 2
    assert data["metric_shift"] == {"blur": {
        "from": {"q1": 20.0, "median": 30.0, "q3": 40.0, "count": 5},
        "to": {"q1": 2.0, "median": 10.0, "q3": 30.0, "count": 5},
    }}
    assert (data["from_commit"], data["to_commit"]) == ("c" * 64, "d" * 64)


def test_bytes_compare_by_checksum_when_a_side_has_no_sha256() -> None:
    failed = rec("x.jpg", None, "", outcome="failed", checksum="k1")
    measured = rec("x.jpg", "good", "s9", p_good=0.9, checksum="k1")
    changed = rec("x.jpg", "good", "s9", p_good=0.9, checksum="k2")
    assert [c.path for c in compare({"x.jpg": failed}, {"x.jpg": measured}, repository="r",
                                     from_ref="a", to_ref="b").relabelled] == ["x.jpg"]
    diff = compare({"x.jpg": failed}, {"x.jpg": changed}, repository="r", from_ref="a",
                   to_ref="b")
    assert [c.path for c in diff.changed] == ["x.jpg"]
    assert diff.transitions == {"failed→good": 1}


def test_quartiles_of_nothing_are_none() -> None:
    assert quartiles([]) == {"q1": None, "median": None, "q3": None, "count": 0}
    assert quartiles([1.0, 2.0, 3.0, 4.0]) == {"q1": 1.75, "median": 2.5, "q3": 3.25, "count": 4}


def test_brings_lines_name_at_most_limit_paths() -> None:
    paths = [f"img{i:02}.jpg" for i in range(12)]
    assert brings_lines({"blurry": paths, "moire": []}, "main", limit=3) == [
        "this merge brings 12 blurry images into main: img00.jpg, img01.jpg, img02.jpg, "
        "… (+9 more)"]
    assert brings_lines({"corrupt": ["z.jpg"]}, "main") == [
        "this merge brings 1 corrupt image into main: z.jpg"]


def test_summary_lines_read_as_a_person_wants() -> None:
    diff = compare(BEFORE, AFTER, repository="r", from_ref="main", to_ref="feature",
                   from_commit="c" * 64, to_commit="d" * 64, computed=2)
    assert arrivals(diff) == {"blurry": ["b.jpg", "f.jpg"], "corrupt": ["g.jpg"]}
    assert summary_lines(diff, limit=1) == [
        f"r: main ({'c' * 12}) → feature ({'d' * 12})",
        "images: 5→6 (2 added, 1 removed, 1 changed, 1 relabelled with the same bytes; "
        "2 measured now, lacking a record)",
        "labels: blurry 1→3, good 3→1, moire 1→1",
        "outcomes: ok 5→5, corrupt 0→1",
        "new or changed on feature: 2 blurry images: b.jpg, … (+1 more)",
        "new or changed on feature: 1 corrupt image: g.jpg",
        "transitions: good→blurry 2",
        "relabelled, same bytes (a model change): c.jpg (good→blurry)",
        "removed: d.jpg",
        "blur: median 30 [20, 40] → 10 [2, 30]",
    ]


# -- the gate's verdict and `clearlake merge` -------------------------------------------------


def side(records: dict[str, dict[str, Any]], ref: str) -> Side:
    return Side(ref, ref, records, "model", None)


def test_the_verdict_says_what_the_merge_brings_from_its_diff() -> None:
    destination = {"b.jpg": BEFORE["b.jpg"], "c.jpg": BEFORE["c.jpg"]}
    incoming = {p: AFTER[p] for p in ("b.jpg", "c.jpg", "f.jpg", "g.jpg")}
    brings = what_it_brings(side(destination, "main-commit"), side(incoming, "src"), "main")
    assert brings == [
        "this merge brings 2 blurry images into main: b.jpg, f.jpg",
        "this merge brings 1 corrupt image into main: g.jpg",
        "it turns 2 images on main good→blurry: b.jpg, c.jpg",
    ]
    labels = labels_of(incoming)
    assert labels == {"b.jpg": "blurry", "c.jpg": "blurry", "f.jpg": "blurry",
                      "g.jpg": "not decodable (corrupt)"}
    policy = Policy.parse("max_not_good_percent: 50\nrules:\n"
                          "  - {prefix: f, forbid: [blurry]}\n")
    verdict = Verdict(False, "r", "s" * 64, "main", "d" * 64, checked=4,
                      reasons=judge(policy, labels), labels=labels, brings=brings)
    assert verdict.explain() == (
        f"clearlake gate: REFUSED merge of {'s' * 12} into main (4 incoming images checked "
        f"against _clearlake/policy.yaml@{'d' * 12})\n"
        "  this merge brings 2 blurry images into main: b.jpg, f.jpg\n"
        "  this merge brings 1 corrupt image into main: g.jpg\n"
        "  it turns 2 images on main good→blurry: b.jpg, c.jpg\n"
        "  - 100.0 % of incoming images are not good (4 of 4; limit 50 %)\n"
        "  - no blurry image may enter f: f.jpg (blurry)\n")


HOOK_LOG = (  # the shape of lakeFS v1.84.0's log of a webhook call (CRLF in the HTTP dump)
    "Request:\nPOST http://127.0.0.1:1/lakefs/gate\nQuery Params:\nHeaders:\n"
    "X-Clearlake-Secret: *******\nContent-Type: application/json\nRequest Body:\n"
    '{"event_type":"pre-merge","repository_id":"r"}\n\n\nRequest duration: 712ms\n\n'
    "Response:\nHTTP/1.1 412 Precondition Failed\r\nContent-Length: 52\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nclearlake gate: REFUSED merge\n"
    "  this merge brings 1 blurry image into main: a.jpg\n"
    "Error: action failed: webhook request failed (status code: 412)\n"
)


def test_only_the_hooks_answer_is_shown_never_its_request() -> None:
    assert hook_answer(HOOK_LOG) == (
        "clearlake gate: REFUSED merge\n  this merge brings 1 blurry image into main: a.jpg")
    unanswered = HOOK_LOG.split("Response:")[0] + "Error: dial tcp: connection refused\n"
    assert hook_answer(unanswered) == "dial tcp: connection refused"
    assert action_run_url("http://127.0.0.1:8000/", "my repo", "4okkpp9k") == (
        "http://127.0.0.1:8000/repositories/my%20repo/actions/4okkpp9k")


# -- the real stack --------------------------------------------------------------------------


def swapped_model() -> bytes:
    """The packaged model with 'good' and 'blurry' swapped: a model change that relabels."""
    data = json.loads(Model.load(None).to_json())
    data["collapse"] = {sub: {"good": "blurry", "blurry": "good"}.get(label, label)
                        for sub, label in data["collapse"].items()}
    return json.dumps(data).encode()


@pytest.mark.slow
def test_the_diff_of_two_processed_refs_comes_from_their_records(
    lakefs: LakeFS, repo: str, classify: Any, stack: Stack
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {
        "keep.jpg": photo(seed, size=400),
        "edit.jpg": photo(seed + 1, size=400),
        "gone.jpg": photo(seed + 2, size=400, blur=6.0),
        "same.jpg": photo(seed + 3, size=400, blur=6.0),
    })
    classify(repo)
    lakefs.create_branch(repo, "feature", "main")
    lakefs.upload_many(repo, "feature", [
        ("edit.jpg", photo(seed + 1, size=400, blur=6.0)),
        ("new.jpg", photo(seed + 4, size=400, blur=6.0)),
        (layout.MODEL_PATH, swapped_model()),
    ])
    lakefs.delete_objects(repo, "feature", ["gone.jpg"])
    lakefs.commit(repo, "feature", "edit, add, remove; swap good and blurry")
    classify(repo, "feature")
    main_records = {r["path"]: r for r in pipeline.read_table(lakefs, repo, "main", "main")}
    feature_records = {r["path"]: r for r in pipeline.read_table(lakefs, repo, "feature",
                                                                 "feature")}

    diff = quality_diff(lakefs, repo, "main", "feature", key=signing_key()).to_dict()

    def state(record: dict[str, Any]) -> dict[str, Any]:
        return {"label": record["label"], "outcome": "ok",
                "p_good": record["probabilities"]["good"], "sha256": record["sha256"]}

    before, after = ({p: state(r) for p, r in records.items()}
                     for records in (main_records, feature_records))
    assert {p: s["label"] for p, s in before.items()} == {
        "keep.jpg": "good", "edit.jpg": "good", "gone.jpg": "blurry", "same.jpg": "blurry"}
    assert {p: s["label"] for p, s in after.items()} == {  # the swapped model
        "keep.jpg": "blurry", "edit.jpg": "good", "new.jpg": "good", "same.jpg": "good"}
    assert diff["computed"] == 0
    assert diff["sides"]["from"]["processed"] and diff["sides"]["to"]["processed"]
    assert (diff["from_commit"], diff["to_commit"]) == (lakefs.head(repo, "main"),
                                                        lakefs.head(repo, "feature"))
    assert diff["added"] == [{"path": "new.jpg", "before": None, "after": after["new.jpg"]}]
    assert diff["removed"] == [{"path": "gone.jpg", "before": before["gone.jpg"],
                                "after": None}]
    assert diff["changed"] == [{"path": "edit.jpg", "before": before["edit.jpg"],
                                "after": after["edit.jpg"]}]
    assert diff["relabelled"] == [
        {"path": p, "before": before[p], "after": after[p]} for p in ("keep.jpg", "same.jpg")]
    assert diff["transitions"] == {"blurry→good": 1, "good→blurry": 1}
    assert diff["counts"] == {
        "from": {"images": 4, "labels": {"blurry": 2, "good": 2}, "outcomes": {"ok": 4}},
        "to": {"images": 4, "labels": {"blurry": 1, "good": 3}, "outcomes": {"ok": 4}},
    }
    blur = diff["metric_shift"]["laplacian_var_score"]
    assert blur["from"]["count"] == blur["to"]["count"] == 4
    assert blur["from"]["median"] > blur["to"]["median"]  # a sharp image was blurred

    as_json = run_cli("diff", repo, "main", "feature", "--json", home=stack.home)
    assert json.loads(as_json.stdout) == diff
    text = run_cli("diff", repo, "main", "feature", home=stack.home).stdout
    print(text)  # what the README shows
    lines = text.splitlines()
    assert lines[1:7] == [
        "images: 4→4 (1 added, 1 removed, 1 changed, 2 relabelled with the same bytes)",
        "labels: good 2→3, blurry 2→1",
        "outcomes: ok 4→4",
        "transitions: blurry→good 1, good→blurry 1",
        "relabelled, same bytes (a model change): keep.jpg (good→blurry), same.jpg (blurry→good)",
        "removed: gone.jpg",
    ]
    assert [line.split(":")[0] for line in lines[7:]] == sorted(diff["metric_shift"])


@pytest.mark.slow
def test_a_side_without_results_is_measured_and_labelled_with_its_model(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {"a.jpg": photo(seed, size=400)})
    classify(repo)
    lakefs.create_branch(repo, "raw", "main")
    commit_images(lakefs, repo, {"b.jpg": photo(seed + 1, size=400, blur=6.0),
                                 "broken.jpg": b"not an image"}, branch="raw")
    lakefs.upload_object(repo, "raw", layout.MODEL_PATH, swapped_model())
    lakefs.commit(repo, "raw", "a model that swaps good and blurry")

    diff = quality_diff(lakefs, repo, "main", "raw", key=signing_key())

    assert diff.computed == 2
    assert diff.sides["to"] == {"processed": False, "model_id": Model.from_json(
        swapped_model().decode()).id, "stored": 0, "relabelled": 1, "computed": 2}
    assert {c.path: c.after.name for c in diff.added} == {"b.jpg": "good",
                                                          "broken.jpg": "corrupt"}
    assert [(c.path, c.before.name, c.after.name) for c in diff.relabelled] == [
        ("a.jpg", "good", "blurry")]
    assert lakefs.head(repo, "raw") == diff.to_commit  # nothing was written


@pytest.mark.slow
def test_a_missing_repository_or_ref_is_named(
    lakefs: LakeFS, repo: str, stack: Stack
) -> None:
    commit_images(lakefs, repo, {"a.jpg": photo(unique_seed())})
    with pytest.raises(NotFoundError, match=r"no such repository.*'no-such-repo'"):
        quality_diff(lakefs, "no-such-repo", "main", "main", key=signing_key())
    with pytest.raises(NotFoundError, match=r"no such branch, tag or commit.*'nope'"):
        quality_diff(lakefs, repo, "main", "nope", key=signing_key())
    result = run_cli("diff", repo, "nope", "main", home=stack.home, check=False)
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [f"error: no such branch, tag or commit (repository {repo!r}, ref 'nope')"]


@pytest.mark.slow
def test_a_refused_merge_says_what_it_brings_once_and_links_the_action_run(
    lakefs: LakeFS, watched_repo: str, stack: Stack
) -> None:
    repo = watched_repo
    seed = unique_seed()
    commit_images(lakefs, repo, {POLICY_PATH: b"max_not_good_percent: 0\n",
                                 "old.jpg": photo(seed, size=400)}, message="a strict policy")
    wait_until(lambda: settled(lakefs, repo))
    lakefs.create_branch(repo, "bad", "main")
    commit_images(lakefs, repo, {"incoming/blurred.jpg": photo(seed + 1, size=400, blur=6.0),
                                 "old.jpg": photo(seed, size=400, blur=6.0)}, branch="bad")
    result = run_cli("merge", repo, "bad", "main", home=stack.home, check=False)

    print(result.stdout)  # what the README shows
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "merge of bad into main refused by a pre-merge hook:"
    assert re.fullmatch(r"clearlake gate: REFUSED merge of [0-9a-f]{12} into main \(2 incoming "
                        r"images checked against _clearlake/policy\.yaml@[0-9a-f]{12}\)",
                        lines[1])
    assert lines[2:5] == [
        "  this merge brings 2 blurry images into main: incoming/blurred.jpg, old.jpg",
        "  it turns 1 image on main good→blurry: old.jpg",
        "  - 100.0 % of incoming images are not good (2 of 2; limit 0 %)",
    ]
    run_page = re.fullmatch(rf"action run: {re.escape(lakefs.settings.endpoint)}/repositories/"
                            rf"{repo}/actions/([a-z0-9]+)", lines[5])
    assert run_page and len(lines) == 6
    assert "REFUSED" in "".join(log for _, log in lakefs.hook_outputs(repo, run_page[1]))
    secrets = StackSecrets.load(stack.home)
    output = result.stdout + result.stderr
    for never in ("Request", "Headers", "event_type", "*******",
                  secrets.webhook_secret.get_secret_value(),
                  lakefs.settings.secret_access_key.get_secret_value()):
        assert never not in output
