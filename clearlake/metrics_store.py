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
without reading it. New entries are written by one transaction per run (`StoreWrite`),
merged with 'source-wins': entries are content-addressed, so two runs that
measured the same bytes wrote equivalent entries and either may stay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from types import TracebackType

from clearlake.errors import NotFoundError
from clearlake.settings import settings
from clearlake.store import LakeFS
from clearlake.transaction import Transaction

STORE_BRANCH = "main"


def store_repository() -> str:
    """The metrics store's repository: `CLEARLAKE_METRICS_REPOSITORY` or the default."""
    return settings().metrics_repository


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
        self.lakefs.create_repository(self.repository, default_branch=STORE_BRANCH)

    def _read_existing(self, paths: Iterable[str]) -> dict[str, bytes]:
        try:
            return self.lakefs.read_existing(self.repository, STORE_BRANCH, paths)
        except NotFoundError:  # no store yet: it knows nothing
            return {}

    def sha256s_for(self, objects: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The SHA-256s earlier reads learned, by lakeFS (checksum, size), for those known."""
        by_path = {checksum_path(checksum, size): (checksum, size) for checksum, size in objects}
        found = self._read_existing(by_path)
        return {by_path[path]: json.loads(data)["sha256"] for path, data in found.items()}

    def get_many(self, analysis_version: str, sha256s: Iterable[str]) -> dict[str, StoredAnalysis]:
        """The stored analyses of those of `sha256s` whose bytes were measured before."""
        paths = [analysis_path(analysis_version, sha256) for sha256 in sha256s]
        found = self._read_existing(paths)
        analyses = (StoredAnalysis(**json.loads(data)) for data in found.values())
        return {analysis.sha256: analysis for analysis in analyses}

    def put_documents(
        self, documents: dict[str, bytes], message: str, merge_timeout_s: float = 120.0
    ) -> str | None:
        """Write documents to the store as one commit; return it (None if nothing to write)."""
        with self.write(merge_timeout_s) as writing:
            writing.add(documents)
            return writing.commit(message)

    def write(self, merge_timeout_s: float = 120.0) -> StoreWrite:
        """A write of documents, uploaded as they are added and committed at once."""
        return StoreWrite(self, merge_timeout_s)


def documents_for(
    analysis_version: str, analyses: Iterable[StoredAnalysis],
    checksums: dict[tuple[str, int], str],
) -> dict[str, bytes]:
    """The store's documents {path: bytes} for analyses and (lakeFS checksum, size) → SHA-256."""
    documents = {analysis_path(analysis_version, a.sha256): a.to_json() for a in analyses}
    documents.update({
        checksum_path(checksum, size): json.dumps({"sha256": sha256}).encode()
        for (checksum, size), sha256 in checksums.items()
    })
    return documents


class StoreWrite:
    """New store entries uploaded as they come, then applied as one commit.

    A `Transaction` on the store's branch, opened with the first entry (a write with
    nothing to add creates nothing) and merged 'source-wins': entries are
    content-addressed, so two runs that measured the same bytes wrote equivalent
    entries and either may stay. A run adds each measured batch's entries while later
    batches are still being measured, so its uploads overlap with measuring. Use as a
    context manager: a write that is not committed leaves nothing in the store.

    Args:
        store: the store.
        merge_timeout_s: how long to retry a merge into a dirty store branch.
    """

    def __init__(self, store: MetricsStore, merge_timeout_s: float) -> None:
        self.store = store
        self.merge_timeout_s = merge_timeout_s
        self._tx: Transaction | None = None

    def add(self, documents: dict[str, bytes]) -> None:
        """Queue documents {path: bytes} for upload; returns at once."""
        if not documents:
            return
        if self._tx is None:
            self.store.ensure()
            self._tx = Transaction(self.store.lakefs, self.store.repository, STORE_BRANCH,
                                   merge_timeout_s=self.merge_timeout_s, strategy="source-wins")
            self._tx.__enter__()
        self._tx.upload_in_background(documents.items())

    def commit(self, message: str) -> str | None:
        """Wait for the uploads, commit and merge them; return the merge (None if nothing added)."""
        return self._tx.commit(message) if self._tx is not None else None

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds of each step of the write's transaction (see `Transaction.seconds`)."""
        return self._tx.seconds if self._tx is not None else {}

    def __enter__(self) -> StoreWrite:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tx is not None:
            self._tx.__exit__(exc_type, exc, tb)
