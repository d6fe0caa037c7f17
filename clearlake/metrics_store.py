"""The content-addressed store of metrics shared by every repository.

Metrics are keyed by the SHA-256 of an image's bytes and the analysis version, so
an image whose bytes were measured once — at any path, on any branch, in any
repository, before a revert — is never decoded again. The store is a lakeFS
repository of its own (`clearlake-metrics` by default):

    analyses/<analysis version>/<sha256[:2]>/<sha256>.json   metrics and outcome
    checksums/<lakeFS checksum>-<size>.json                    → {"sha256": …}

lakeFS's own checksum is an MD5 or a multipart ETag (the same bytes can carry
different ones), so it is never a key for metrics: it only finds the SHA-256 that
an earlier read of the same object learned, which lets an unchanged copy be reused
without reading it. New entries are written by one transaction per run, merged
with 'source-wins': entries are content-addressed, so two runs that measured the
same bytes wrote equivalent entries and either may stay.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clearlake.errors import NotFoundError
from clearlake.store import LakeFS
from clearlake.transaction import TEMP_BRANCH_PREFIX, merge_with_retry

DEFAULT_STORE_REPOSITORY = "clearlake-metrics"
STORE_BRANCH = "main"


def store_repository() -> str:
    """The metrics store's repository: `CLEARLAKE_METRICS_REPOSITORY` or the default."""
    return os.environ.get("CLEARLAKE_METRICS_REPOSITORY", DEFAULT_STORE_REPOSITORY)


@dataclass(frozen=True)
class StoredAnalysis:
    """One image's analysis as the store keeps it.

    Attributes:
        sha256: the content key.
        size: bytes.
        outcome: decode outcome ('ok', 'corrupt', …).
        reason: why it failed, if it did.
        width: pixels.
        height: pixels.
        metrics: metric values, None unless ok.
        computed_at: where it was first computed: repository, commit, path, run_id.
    """

    sha256: str
    size: int
    outcome: str
    reason: str
    width: int
    height: int
    metrics: dict[str, float] | None
    computed_at: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def analysis_path(analysis_version: str, sha256: str) -> str:
    """Where the analysis of `sha256` under `analysis_version` lives in the store."""
    return f"analyses/{analysis_version}/{sha256[:2]}/{sha256}.json"


def checksum_path(checksum: str, size: int) -> str:
    """Where the SHA-256 learned for a lakeFS (checksum, size) pair lives in the store."""
    return f"checksums/{checksum}-{size}.json"


class MetricsStore:
    """Read and write the shared store.

    Args:
        lakefs: the lakeFS holding the store.
        repository: the store's repository (created on first use).
    """

    def __init__(self, lakefs: LakeFS, repository: str | None = None) -> None:
        self.lakefs = lakefs
        self.repository = repository or store_repository()

    def ensure(self) -> None:
        """Create the store's repository if it does not exist yet."""
        self.lakefs.create_repository(self.repository, f"local://{self.repository}", STORE_BRANCH)

    def _read_json(self, path: str) -> Any | None:
        try:
            return json.loads(self.lakefs.get_object(self.repository, STORE_BRANCH, path))
        except NotFoundError:
            return None

    def sha256_for(self, checksum: str, size: int) -> str | None:
        """The SHA-256 an earlier read learned for this lakeFS checksum and size."""
        found = self._read_json(checksum_path(checksum, size))
        return found["sha256"] if found else None

    def get(self, analysis_version: str, sha256: str) -> StoredAnalysis | None:
        """The stored analysis of `sha256`, None when these bytes were never measured."""
        found = self._read_json(analysis_path(analysis_version, sha256))
        return StoredAnalysis(**found) if found else None

    def put(
        self,
        analysis_version: str,
        analyses: list[StoredAnalysis],
        checksums: dict[tuple[str, int], str],
        message: str,
    ) -> str | None:
        """Add analyses and checksum mappings as one commit; return it (None if nothing new)."""
        documents = {analysis_path(analysis_version, a.sha256): a.to_json() for a in analyses}
        documents.update({
            checksum_path(checksum, size): json.dumps({"sha256": sha256}).encode()
            for (checksum, size), sha256 in checksums.items()
        })
        return self.put_documents(documents, message)

    def put_documents(
        self, documents: dict[str, bytes], message: str, merge_timeout_s: float = 120.0
    ) -> str | None:
        """Write documents to the store as one commit; return it (None if nothing to write).

        Nobody stages changes on the store's branch by hand, so the write goes
        through a temporary branch only to make it one atomic merge.
        """
        if not documents:
            return None
        self.ensure()
        temp = f"{TEMP_BRANCH_PREFIX}{int(time.time())}-store-{os.urandom(4).hex()}"
        self.lakefs.create_branch(self.repository, temp, STORE_BRANCH)
        try:
            self.lakefs.upload_many(self.repository, temp, documents.items())
            self.lakefs.commit(self.repository, temp, message, allow_empty=True)
            return merge_with_retry(
                self.lakefs, self.repository, temp, STORE_BRANCH, message, {}, merge_timeout_s,
                strategy="source-wins",
            )
        finally:
            self.lakefs.delete_branch(self.repository, temp)
