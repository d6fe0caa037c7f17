"""The marks clearlake leaves on its own commits, signed so they cannot be forged.

A results commit (and the merge that applies it) carries metadata under the
`clearlake.` prefix: which source commit it covers, the previous one, the model,
the metric set, the code version, the Prefect flow run and the counts. The marker
is signed with an HMAC over repository, source commit and run id using the stack's
signing key: an unsigned or badly signed marker is treated as no marker. A signed
marker counts only on a commit that changes nothing outside `_clearlake/` (see
`verified_marker`), so metadata copied onto a user's commit does not make clearlake
skip it.

Records (`_clearlake/records/…` and the rows of a branch's table) carry an HMAC of
their own over their whole content (`sign_record`): anyone can write under
`_clearlake/` on their branch, so a reader trusts a record only if
`verified_record` accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lakefs_sdk

from clearlake.config import StackSecrets, state_dir
from clearlake.errors import ConfigurationError
from clearlake.lakefs import LakeFS
from clearlake.layout import RESULTS_LAYOUT, RESULTS_ROOT
from clearlake.settings import settings
from clearlake.table import RECORD_SIGNATURE

PREFIX = "clearlake."
KIND_RESULTS = "results"
# Commit id → whether it changes only `_clearlake/`. A lakeFS commit id hashes the commit's
# metarange and parents, so the answer never changes for an id; bounded, cleared when full.
_ONLY_RESULTS: dict[str, bool] = {}
_ONLY_RESULTS_MAX = 4096


def signing_key(home: Path | None = None) -> bytes:
    """The HMAC key: `CLEARLAKE_SIGNING_KEY`, else the one `clearlake stack up` generated.

    Raises:
        ConfigurationError: neither is there. A key made up here would sign markers
            that validate nowhere else, so none is.
    """
    if key := settings().signing_key:
        return key.encode()
    try:
        secrets = StackSecrets.load(home or state_dir())
    except ConfigurationError as error:
        raise ConfigurationError(
            f"no signing key (CLEARLAKE_SIGNING_KEY is unset) and {error}") from None
    return secrets.signing_key.get_secret_value().encode()


def sign(key: bytes, repository: str, source_commit: str, run_id: str) -> str:
    """HMAC-SHA256 over the facts a marker vouches for."""
    message = f"{repository}\n{source_commit}\n{run_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _significant(value: Any) -> bool:
    return value is not None and value != {}


def _canonical_record(record: dict[str, Any]) -> bytes:
    """What a record's signature covers, as canonical JSON: every field but the signature,
    with empty values (None, {}, and None inside a map) left out.

    A record read back from the results table's columns, where an absent value and a
    null are the same thing, then signs exactly as the record written.
    """
    content = {
        k: {n: x for n, x in v.items() if x is not None} if isinstance(v, dict) else v
        for k, v in record.items() if k != RECORD_SIGNATURE
    }
    content = {k: v for k, v in content.items() if _significant(v)}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _legacy_canonical_record(record: dict[str, Any]) -> bytes:
    """What signatures covered before empty values were left out: every field verbatim."""
    content = {k: v for k, v in record.items() if k != RECORD_SIGNATURE}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _record_digest(key: bytes, record: dict[str, Any], *, legacy: bool = False) -> str:
    canonical = (_legacy_canonical_record if legacy else _canonical_record)(record)
    # Its own domain, so a record's MAC can never pass for a marker's or the reverse.
    return hmac.new(key, b"clearlake-record\n" + canonical, hashlib.sha256).hexdigest()


def sign_record(record: dict[str, Any], key: bytes) -> dict[str, Any]:
    """`record` with an HMAC over all of its other fields (replacing any it had)."""
    content = {k: v for k, v in record.items() if k != RECORD_SIGNATURE}
    return {**content, RECORD_SIGNATURE: _record_digest(key, content)}


def verified_record(
    data: bytes | str | dict[str, Any] | None,
    key: bytes,
    *,
    path: str | None = None,
    checksum: str | None = None,
) -> dict[str, Any] | None:
    """The record if clearlake wrote it, else None: the one check every reader makes.

    The signature covers every field, the image path and lakeFS checksum among them, so
    a signed record moved to another image's key, or left behind by a change of the
    image, fails the `path` and `checksum` a reader expects. Anything else — written
    by a user under `_clearlake/`, from before records were signed, not JSON — is
    None: the reader measures the image again (from the metrics store, where its bytes
    were seen before) or reports no record.

    Args:
        data: a record as stored (JSON bytes or text) or already parsed.
        key: the signing key (`signing_key()`).
        path: the image path the record must be for, if the reader knows it.
        checksum: the image's lakeFS checksum the record must be for, if known.
    """
    try:
        record = json.loads(data) if isinstance(data, bytes | str) else data
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None
    if not isinstance(record, dict) or not isinstance(record.get(RECORD_SIGNATURE), str):
        return None
    signature = record[RECORD_SIGNATURE]
    if not (hmac.compare_digest(_record_digest(key, record), signature)
            or hmac.compare_digest(_record_digest(key, record, legacy=True), signature)):
        return None
    if (path is not None and record.get("path") != path) or (
            checksum is not None and record.get("checksum") != checksum):
        return None
    return record


@dataclass(frozen=True)
class ResultsMarker:
    """What a results commit records about the run that made it.

    Attributes:
        repository: the repository the results belong to.
        branch: the branch they were merged into.
        source_commit: the commit whose images the results cover.
        previous_source_commit: the source commit of the results before, or "".
        run_id: the Prefect flow run id.
        model_id: the model that labelled the images.
        model_commit: the commit the model was read from ("packaged" for the default).
        analysis_version: the metric-set (and decoder) version of the metrics.
        clearlake_version: the code version.
        counts: computed / reused / failed / removed / relabelled counts.
        retry: images whose measurement failed for want of their bytes (lakeFS
            unreachable, a worker lost for good); the next run measures them again.
        attempts: for each image in `retry`, how many runs in a row failed to measure
            it (`reconcile` waits longer before each further attempt).
        layout: the results layout written (`clearlake.layout`; 1 before it was recorded).
        metric_versions: {name: version} of the metrics the records hold.
        scripts: the scripts repository commit metrics were loaded from
            (``lakefs://repo/ref@commit``), or "".
    """

    repository: str
    branch: str
    source_commit: str
    previous_source_commit: str
    run_id: str
    model_id: str
    model_commit: str
    analysis_version: str
    clearlake_version: str
    counts: dict[str, int] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    layout: int = RESULTS_LAYOUT
    metric_versions: dict[str, str] = field(default_factory=dict)
    scripts: str = ""

    def to_metadata(self, key: bytes) -> dict[str, str]:
        """lakeFS commit metadata (string values), with the signature."""
        values = {
            "kind": KIND_RESULTS,
            "repository": self.repository,
            "branch": self.branch,
            "source_commit": self.source_commit,
            "previous_source_commit": self.previous_source_commit,
            "run_id": self.run_id,
            "model_id": self.model_id,
            "model_commit": self.model_commit,
            "analysis_version": self.analysis_version,
            "clearlake_version": self.clearlake_version,
            "counts": json.dumps(self.counts, sort_keys=True),
            "retry": json.dumps(self.retry),
            "attempts": json.dumps(self.attempts, sort_keys=True),
            "layout": str(self.layout),
            "metric_versions": json.dumps(self.metric_versions, sort_keys=True),
            "scripts": self.scripts,
            "signature": sign(key, self.repository, self.source_commit, self.run_id),
        }
        return {PREFIX + k: v for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, key: bytes) -> ResultsMarker | None:
        """The marker in a commit's metadata if present and validly signed, else None."""
        meta = {k.removeprefix(PREFIX): v for k, v in (metadata or {}).items()
                if k.startswith(PREFIX)}
        if meta.get("kind") != KIND_RESULTS:
            return None
        try:
            expected = sign(key, meta["repository"], meta["source_commit"], meta["run_id"])
            if not hmac.compare_digest(expected, meta.get("signature", "")):
                return None
            return cls(
                repository=meta["repository"],
                branch=meta["branch"],
                source_commit=meta["source_commit"],
                previous_source_commit=meta["previous_source_commit"],
                run_id=meta["run_id"],
                model_id=meta["model_id"],
                model_commit=meta["model_commit"],
                analysis_version=meta["analysis_version"],
                clearlake_version=meta["clearlake_version"],
                counts=json.loads(meta["counts"]),
                retry=json.loads(meta.get("retry", "[]")),
                attempts=json.loads(meta.get("attempts", "{}")),
                layout=int(meta.get("layout", "1")),
                metric_versions=json.loads(meta.get("metric_versions", "{}")),
                scripts=meta.get("scripts", ""),
            )
        except (KeyError, ValueError):
            return None


def changes_only_results(lakefs: LakeFS, repository: str, commit: lakefs_sdk.Commit) -> bool:
    """True when `commit` changes nothing outside `_clearlake/` relative to its first parent.

    One diff of the top level (changed folders come back once each), so the cost does
    not grow with the number of images; it stops at the first entry outside.
    """
    if not commit.parents:
        return False
    known = _ONLY_RESULTS.get(commit.id)
    if known is None:
        top_level = lakefs.diff(repository, commit.parents[0], commit.id, delimiter="/")
        known = all(entry.path.startswith(RESULTS_ROOT) for entry in top_level)
        if len(_ONLY_RESULTS) >= _ONLY_RESULTS_MAX:
            _ONLY_RESULTS.clear()
        _ONLY_RESULTS[commit.id] = known
    return known


def verified_marker(
    lakefs: LakeFS, repository: str, commit: lakefs_sdk.Commit, key: bytes
) -> ResultsMarker | None:
    """The results marker `commit` carries, if it is one clearlake made; else None.

    The HMAC cannot name the commit that carries it: a commit's id is computed by lakeFS
    from its metadata (the marker among it), and the merge that applies results gets
    its id and first parent only when lakeFS makes it — a merge retried after the
    branch moved has other ones — while it carries the same metadata as the results
    commit (`transaction.Transaction.commit`). What holds for every commit clearlake
    makes, and can be checked, is that it changes nothing outside `_clearlake/`
    relative to its first parent: the temporary branch's commit adds records and a
    table, and the merge brings only those. So a marker counts only there (one lakeFS
    diff of the top level, only for commits whose signature is valid).

    A marker copied onto a commit that adds or changes an image is thus no marker: the
    commit is processed. One copied onto a commit that changes only `_clearlake/` is
    accepted, and that hides nothing: stepping over such a commit skips no input (it
    changes none), and what it can do to the branch's results (point at an older
    source, drop a retry) a plain commit deleting files under `_clearlake/` can do as
    well — which is why nothing there is trusted unless signed (`verified_record`).
    """
    marker = ResultsMarker.from_metadata(commit.metadata, key)
    if marker is None or marker.repository != repository:
        return None
    return marker if changes_only_results(lakefs, repository, commit) else None


def latest_results(
    lakefs: LakeFS, repository: str, ref: str, key: bytes, *, max_commits: int = 10_000
) -> tuple[str, ResultsMarker] | None:
    """The newest results commit on `ref`'s first-parent line that clearlake made.

    Results are merged into their branch, so their merge commits lie on its
    first-parent line; the walk stops at the first one (normally a few commits back).
    A marker for another repository, or on a commit that changes more than
    `_clearlake/` (copied metadata), does not count (see `verified_marker`).

    Returns:
        (commit id, marker), or None when the branch has never been processed.
    """
    for count, commit in enumerate(lakefs.log(repository, ref, first_parent=True)):
        marker = verified_marker(lakefs, repository, commit, key)
        if marker is not None:
            return commit.id, marker
        if count >= max_commits:
            break
    return None
