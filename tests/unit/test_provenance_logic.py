"""Signed records and results markers (`provenance.py`), without servers.

The only lakeFS call involved (`verified_marker`'s top-level diff of a commit) is
answered by `TopLevelDiff`, a stand-in that records what it was asked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import lakefs_sdk
import pytest

from clearlake import provenance
from clearlake.provenance import (
    RECORD_SIGNATURE,
    ResultsMarker,
    sign,
    sign_record,
    verified_marker,
    verified_record,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
RECORD = {"path": "images/a.jpg", "checksum": "c0ffee", "label": "good", "metrics": {"x": 1.5}}
MARKER = ResultsMarker(
    repository="photos",
    branch="main",
    source_commit="a" * 64,
    previous_source_commit="",
    run_id="run-1",
    model_id="model-1",
    model_commit="packaged",
    analysis_version="v1",
    clearlake_version="0.1.0",
    counts={"computed": 3, "reused": 1},
    retry=["images/lost.jpg"],
)


# -- records ----------------------------------------------------------------------------------


def test_a_signed_record_is_the_record_plus_an_hmac_over_its_canonical_json() -> None:
    signed = sign_record(RECORD, KEY)
    canonical = json.dumps(RECORD, sort_keys=True, separators=(",", ":")).encode()
    expected = hmac.new(KEY, b"clearlake-record\n" + canonical, hashlib.sha256).hexdigest()
    assert signed == {**RECORD, RECORD_SIGNATURE: expected}
    assert sign_record(signed, KEY) == signed  # re-signing replaces, never nests


@pytest.mark.parametrize("form", ["dict", "bytes", "str"])
def test_a_signed_record_verifies_in_every_stored_form(form: str) -> None:
    signed = sign_record(RECORD, KEY)
    text = json.dumps(signed)
    data = {"dict": signed, "bytes": text.encode(), "str": text}[form]
    assert verified_record(data, KEY) == signed
    assert verified_record(data, KEY, path="images/a.jpg", checksum="c0ffee") == signed


def test_a_record_is_refused_for_another_image_or_another_key() -> None:
    signed = sign_record(RECORD, KEY)
    assert verified_record(signed, OTHER_KEY) is None
    assert verified_record(signed, KEY, path="images/b.jpg") is None  # moved to another key
    assert verified_record(signed, KEY, checksum="beef") is None  # the image changed since


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(label="blurry"),
        lambda r: r["metrics"].update(x=2.0),
        lambda r: r.update(extra="field"),
        lambda r: r.pop("checksum"),
        lambda r: r.update(signature=r["signature"].upper()),
    ],
)
def test_any_change_to_a_signed_record_is_refused(change: Any) -> None:
    tampered = json.loads(json.dumps(sign_record(RECORD, KEY)))
    change(tampered)
    assert verified_record(tampered, KEY) is None


@pytest.mark.parametrize(
    "data",
    [None, b"", b"not json", "[1, 2]", b"42", json.dumps(RECORD),  # unsigned
     json.dumps({**RECORD, "signature": 7}), b"[" * 100_000,  # deeper than the parser goes
     {"signature": "0" * 64}],
)
def test_what_clearlake_did_not_sign_is_no_record(data: Any) -> None:
    assert verified_record(data, KEY) is None


def test_a_marker_signature_never_passes_for_a_record() -> None:
    # Separate domains: the MAC of a marker's fields is not a valid record signature.
    fields = {"repository": "photos", "source_commit": "a" * 64, "run_id": "run-1"}
    forged = {**fields, RECORD_SIGNATURE: sign(KEY, "photos", "a" * 64, "run-1")}
    assert verified_record(forged, KEY) is None


# -- markers ----------------------------------------------------------------------------------


def test_a_marker_round_trips_through_commit_metadata() -> None:
    metadata = MARKER.to_metadata(KEY)
    assert all(k.startswith("clearlake.") and isinstance(v, str) for k, v in metadata.items())
    assert metadata["clearlake.kind"] == "results"
    assert metadata["clearlake.signature"] == hmac.new(
        KEY, f"photos\n{'a' * 64}\nrun-1".encode(), hashlib.sha256).hexdigest()
    assert json.loads(metadata["clearlake.counts"]) == {"computed": 3, "reused": 1}
    assert ResultsMarker.from_metadata(metadata, KEY) == MARKER
    # Other metadata on the same commit is ignored.
    assert ResultsMarker.from_metadata({**metadata, "user": "x"}, KEY) == MARKER


def test_a_marker_from_before_retries_were_recorded_has_none() -> None:
    metadata = MARKER.to_metadata(KEY)
    del metadata["clearlake.retry"]
    assert ResultsMarker.from_metadata(metadata, KEY).retry == []


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update({"clearlake.source_commit": "b" * 64}),  # signed fields
        lambda m: m.update({"clearlake.run_id": "run-2"}),
        lambda m: m.update({"clearlake.repository": "other"}),
        lambda m: m.update({"clearlake.kind": "something else"}),
        lambda m: m.pop("clearlake.signature"),
        lambda m: m.pop("clearlake.model_id"),  # a field missing
        lambda m: m.update({"clearlake.counts": "{not json"}),
    ],
)
def test_a_changed_or_incomplete_marker_is_no_marker(change: Any) -> None:
    metadata = MARKER.to_metadata(KEY)
    change(metadata)
    assert ResultsMarker.from_metadata(metadata, KEY) is None


def test_no_metadata_or_another_key_is_no_marker() -> None:
    assert ResultsMarker.from_metadata(None, KEY) is None
    assert ResultsMarker.from_metadata({}, KEY) is None
    assert ResultsMarker.from_metadata(MARKER.to_metadata(KEY), OTHER_KEY) is None


@dataclass
class TopLevelDiff:
    """Answers `LakeFS.diff(repository, left, right, delimiter="/")` with fixed paths."""

    paths: list[str]
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def diff(self, repository: str, left: str, right: str, *, delimiter: str = "") -> list[Any]:
        assert delimiter == "/"  # one entry per changed top-level folder
        self.calls.append((repository, left, right))
        return [lakefs_sdk.Diff(type="changed", path=p, path_type="common_prefix")
                for p in self.paths]


def _commit(commit_id: str, metadata: dict[str, str], parents: list[str] | None = None) -> Any:
    return lakefs_sdk.Commit(id=commit_id, parents=["parent"] if parents is None else parents,
                             committer="clearlake", message="results", creation_date=0,
                             meta_range_id="", metadata=metadata)


@pytest.fixture(autouse=True)
def _forget_diffs() -> None:
    provenance._ONLY_RESULTS.clear()  # answers are cached per commit id


def test_a_marker_counts_on_a_commit_that_changes_only_clearlakes_folder() -> None:
    lakefs = TopLevelDiff(["_clearlake/"])
    commit = _commit("c1", MARKER.to_metadata(KEY))
    assert verified_marker(lakefs, "photos", commit, KEY) == MARKER  # type: ignore[arg-type]
    assert lakefs.calls == [("photos", "parent", "c1")]
    verified_marker(lakefs, "photos", commit, KEY)  # type: ignore[arg-type]
    assert len(lakefs.calls) == 1  # a commit id's answer never changes: asked once


def test_a_marker_copied_onto_a_commit_that_adds_images_is_no_marker() -> None:
    lakefs = TopLevelDiff(["_clearlake/", "images/"])
    commit = _commit("c2", MARKER.to_metadata(KEY))
    assert verified_marker(lakefs, "photos", commit, KEY) is None  # type: ignore[arg-type]


def test_a_marker_without_a_valid_signature_costs_no_lakefs_call() -> None:
    lakefs = TopLevelDiff(["_clearlake/"])
    assert verified_marker(lakefs, "photos", _commit("c3", MARKER.to_metadata(OTHER_KEY)),
                           KEY) is None  # type: ignore[arg-type]
    assert verified_marker(lakefs, "other-repo", _commit("c4", MARKER.to_metadata(KEY)),
                           KEY) is None  # type: ignore[arg-type]
    assert lakefs.calls == []


def test_a_root_commit_is_never_a_results_commit() -> None:
    lakefs = TopLevelDiff(["_clearlake/"])
    commit = _commit("c5", MARKER.to_metadata(KEY), parents=[])
    assert verified_marker(lakefs, "photos", commit, KEY) is None  # type: ignore[arg-type]
    assert lakefs.calls == []
