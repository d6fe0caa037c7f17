"""The marks clearlake leaves on its own commits, signed so they cannot be forged.

A results commit (and the merge that applies it) carries metadata under the
`clearlake.` prefix: which source commit it covers, the previous one, the model,
the metric set, the code version, the Prefect flow run and the counts. The marker
is signed with an HMAC over repository, source commit and run id using the stack's
signing key, so a user who copies the metadata onto their own commit cannot make
clearlake skip it: an unsigned or badly signed marker is treated as no marker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from clearlake.config import StackSecrets, state_dir
from clearlake.errors import ConfigurationError
from clearlake.store import LakeFS

PREFIX = "clearlake."
KIND_RESULTS = "results"
SIGNING_KEY_ENV = "CLEARLAKE_SIGNING_KEY"


def signing_key(home: Path | None = None) -> bytes:
    """The HMAC key: `CLEARLAKE_SIGNING_KEY`, else the one `clearlake stack up` generated.

    Raises:
        ConfigurationError: neither is there. A key made up here would sign markers
            that validate nowhere else, so none is.
    """
    if key := os.environ.get(SIGNING_KEY_ENV):
        return key.encode()
    try:
        secrets = StackSecrets.load(home or state_dir())
    except ConfigurationError as error:
        raise ConfigurationError(
            f"no signing key ({SIGNING_KEY_ENV} is unset) and {error}") from None
    return secrets.signing_key.get_secret_value().encode()


def sign(key: bytes, repository: str, source_commit: str, run_id: str) -> str:
    """HMAC-SHA256 over the facts a marker vouches for."""
    message = f"{repository}\n{source_commit}\n{run_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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
            )
        except (KeyError, ValueError):
            return None


def latest_results(
    lakefs: LakeFS, repository: str, ref: str, key: bytes, *, max_commits: int = 10_000
) -> tuple[str, ResultsMarker] | None:
    """The newest validly signed results commit on `ref`'s first-parent line.

    Results are merged into their branch, so their merge commits lie on its
    first-parent line; the walk stops at the first one (normally a few commits back).
    A marker for another repository (copied metadata) does not count.

    Returns:
        (commit id, marker), or None when the branch has never been processed.
    """
    for count, commit in enumerate(lakefs.log(repository, ref, first_parent=True)):
        marker = ResultsMarker.from_metadata(commit.metadata, key)
        if marker is not None and marker.repository == repository:
            return commit.id, marker
        if count >= max_commits:
            break
    return None
