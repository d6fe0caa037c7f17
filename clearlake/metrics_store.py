"""The content-addressed store of metrics shared by every repository.

Metrics are keyed by (SHA-256 of an image's bytes, metric name, metric version), so
an image whose bytes were measured once — at any path, on any branch, in any
repository, before a revert — is never decoded again for a metric it has, and a new
or changed metric is computed alone. The store is a lakeFS repository of its own
(`clearlake-metrics` by default):

    images/dec<decoder>/<sha256[:2]>/<sha256>.json   outcome, size, and every metric
                                                     version measured: {name: {version: value}}
    checksums/<lakeFS checksum>-<size>.json         → {"sha256": …}
    analyses/<analysis version>/…                   the layout before metrics had versions
                                                    of their own (read-only; see `migrate`)

**One document per image**, holding every (name, version) measured for it, not one
object per metric: a new image costs one upload whatever the number of metrics, and
a run that adds a metric rewrites each image's document once (read, merge the new
values in, write). The decoder version is in the path because decoding decides the
outcome, size and pixels every metric reads. Two runs that add different metrics to
the same image at the same time both write its document; the merge keeps one, and
the other's metric is computed again by a later run (never a wrong value).

lakeFS's own checksum is an MD5 or a multipart ETag (the same bytes can carry
different ones), so it is never a key for metrics: it only finds the SHA-256 that
an earlier read of the same object learned, which lets an unchanged copy be reused
without reading it. New entries are written by one transaction per run (`StoreWrite`),
merged with 'source-wins'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType

from clearlake.errors import ConfigurationError, NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.quality.decode import DECODER_VERSION
from clearlake.quality.registry import LEGACY_METRIC_SETS
from clearlake.settings import settings
from clearlake.transaction import Transaction

STORE_BRANCH = "main"


def store_repository() -> str:
    """The metrics store's repository: `CLEARLAKE_METRICS_REPOSITORY` or the default."""
    return settings().metrics_repository


#: Analysis versions (metric set + decoder) of the layout before metrics had versions of
#: their own, read as the versions of today's built-ins that reproduce their values.
LEGACY_ANALYSES: dict[str, dict[str, str]] = {
    f"{metric_set}+dec1": versions for metric_set, versions in LEGACY_METRIC_SETS.items()
}
#: At most this many versions of one metric are kept per image (the newest).
MAX_VERSIONS = 8


@dataclass(frozen=True)
class StoredAnalysis:
    """One image's analysis as a run sees it: the values of the run's metric set.

    Attributes:
        sha256: the content key.
        size: bytes.
        outcome: decode outcome ('ok', 'corrupt', …).
        reason: why it failed, if it did.
        width: pixels.
        height: pixels.
        metrics: metric values {name: value}, None unless ok.
        computed_at: where it was first decoded: repository, commit, path, run_id.
        failures: metrics that failed on this image {name: why}.
    """

    sha256: str
    size: int
    outcome: str
    reason: str
    width: int
    height: int
    metrics: dict[str, float] | None
    computed_at: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ImageMetrics:
    """The store's document of one image: every metric version ever measured for it.

    Attributes:
        sha256: the content key.
        size: bytes.
        outcome: decode outcome.
        reason: why decoding failed, if it did.
        width: pixels.
        height: pixels.
        metrics: {name: {version: value}}.
        failures: {name: {version: why}}: a metric version that failed on these bytes
            fails again (same code, same pixels), so it is not retried.
        computed_at: where the image was first decoded.
    """

    sha256: str
    size: int
    outcome: str
    reason: str
    width: int
    height: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    computed_at: dict[str, str] = field(default_factory=dict)

    @property
    def measured(self) -> dict[str, set[str]]:
        """{name: versions} with a value or a recorded failure."""
        names = self.metrics.keys() | self.failures.keys()
        return {n: set(self.metrics.get(n, ())) | set(self.failures.get(n, ())) for n in names}

    def view(self, versions: dict[str, str]) -> StoredAnalysis:
        """The analysis a run with metrics `versions` ({name: version}) sees."""
        ok = self.outcome == "ok"
        values = {n: self.metrics[n][v] for n, v in versions.items()
                  if v in self.metrics.get(n, {})}
        failures = {n: self.failures[n][v] for n, v in versions.items()
                    if v in self.failures.get(n, {})}
        return StoredAnalysis(self.sha256, self.size, self.outcome, self.reason, self.width,
                              self.height, values if ok else None, self.computed_at,
                              failures if ok else {})

    def merged(
        self, versions: dict[str, str], values: dict[str, float], failures: dict[str, str]
    ) -> ImageMetrics:
        """This document with new `values` and `failures` of the metrics `versions` names."""
        metrics = {n: dict(v) for n, v in self.metrics.items()}
        failed = {n: dict(v) for n, v in self.failures.items()}
        for target, new in ((metrics, values), (failed, failures)):
            for name, item in new.items():
                entry = target.setdefault(name, {})
                entry.pop(versions[name], None)
                entry[versions[name]] = item  # newest last
                while len(entry) > MAX_VERSIONS:
                    del entry[next(iter(entry))]
        return replace(self, metrics=metrics, failures=failed)

    def to_json(self) -> bytes:
        """Canonical JSON bytes (metric versions keep their insertion order: newest last)."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ImageMetrics:
        """Inverse of `to_json`."""
        return cls(**json.loads(data))

    @classmethod
    def from_legacy(cls, analysis: StoredAnalysis, versions: dict[str, str]) -> ImageMetrics:
        """A pre-version analysis as a document, its values under `versions`."""
        values = {n: {versions[n]: v} for n, v in (analysis.metrics or {}).items()
                  if n in versions}
        return cls(analysis.sha256, analysis.size, analysis.outcome, analysis.reason,
                   analysis.width, analysis.height, values, {}, analysis.computed_at)


def document_path(sha256: str) -> str:
    """Where the metrics document of `sha256` lives in the store."""
    return f"images/dec{DECODER_VERSION}/{sha256[:2]}/{sha256}.json"


def analysis_path(analysis_version: str, sha256: str) -> str:
    """Where a pre-version analysis of `sha256` under `analysis_version` lives."""
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

    def documents(self, sha256s: Iterable[str]) -> dict[str, ImageMetrics]:
        """The documents of those of `sha256s` whose bytes were measured before.

        Where the store still holds analyses in the layout from before metrics had
        versions (`LEGACY_ANALYSES`), an image without a document is read from there
        (one listing request tells whether any are left; `migrate` rewrites them).
        """
        wanted = set(sha256s)
        found = self._read_existing(document_path(s) for s in wanted)
        documents = {d.sha256: d for d in map(ImageMetrics.from_json, found.values())}
        missing = wanted - documents.keys()
        for version in self.legacy_versions() if missing else ():
            for sha256, analysis in self._legacy(version, missing).items():
                documents[sha256] = ImageMetrics.from_legacy(analysis, LEGACY_ANALYSES[version])
            missing -= documents.keys()
        return documents

    def legacy_versions(self) -> list[str]:
        """The legacy analysis versions the store still holds analyses of."""
        held = []
        for version in LEGACY_ANALYSES:
            try:
                entries, _ = self.lakefs._list_entries(  # one entry is enough to know
                    self.repository, STORE_BRANCH, f"analyses/{version}/", after="", amount=1)
            except NotFoundError:
                return []
            if entries:
                held.append(version)
        return held

    def _legacy(self, version: str, sha256s: Iterable[str]) -> dict[str, StoredAnalysis]:
        found = self._read_existing(analysis_path(version, s) for s in sha256s)
        analyses = (StoredAnalysis(**json.loads(data)) for data in found.values())
        return {a.sha256: a for a in analyses}

    def migrate(self, version: str, message: str | None = None) -> tuple[int, str | None]:
        """Rewrite every analysis stored under the legacy `version` as a document (merged
        into the image's document if it has one) and delete the old objects, in one
        commit. Nothing is recomputed.

        Returns:
            (analyses migrated, the store's commit or None when there were none).

        Raises:
            ConfigurationError: `version` is not one whose values the built-ins reproduce.
        """
        if version not in LEGACY_ANALYSES:
            raise ConfigurationError(
                f"{version!r} is not a metric set whose values today's built-in metrics "
                f"reproduce (known: {', '.join(LEGACY_ANALYSES)}); its metrics are computed "
                "again as images are processed")
        versions = LEGACY_ANALYSES[version]
        try:
            old = [o.path for o in self.lakefs.list_objects(self.repository, STORE_BRANCH,
                                                             f"analyses/{version}/")]
        except NotFoundError:
            return 0, None
        if not old:
            return 0, None
        with self.write() as writing:
            for start in range(0, len(old), 1024):
                chunk = old[start:start + 1024]
                analyses = [StoredAnalysis(**json.loads(data))
                            for data in self._read_existing(chunk).values()]
                current = self._read_existing(document_path(a.sha256) for a in analyses)
                documents = {}
                for a in analyses:
                    legacy = ImageMetrics.from_legacy(a, versions)
                    existing = current.get(document_path(a.sha256))
                    if existing is not None:  # values measured since win; add the rest
                        doc = ImageMetrics.from_json(existing)
                        add = {n: next(iter(v.values())) for n, v in legacy.metrics.items()
                               if n not in doc.metrics or versions[n] not in doc.metrics[n]}
                        legacy = doc.merged(versions, add, {})
                    documents[document_path(a.sha256)] = legacy.to_json()
                writing.add(documents)
                writing.delete(chunk)
            return len(old), writing.commit(
                f"clearlake: {len(old)} analyses of {version} migrated to per-metric documents")

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
    documents: Iterable[ImageMetrics], checksums: dict[tuple[str, int], str],
) -> dict[str, bytes]:
    """The store's objects {path: bytes} for documents and (lakeFS checksum, size) → SHA-256."""
    objects = {document_path(d.sha256): d.to_json() for d in documents}
    objects.update({
        checksum_path(checksum, size): json.dumps({"sha256": sha256}).encode()
        for (checksum, size), sha256 in checksums.items()
    })
    return objects


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
        self._open()
        self._tx.upload_in_background(documents.items())

    def delete(self, paths: list[str]) -> None:
        """Delete objects from the store in this write (`migrate`)."""
        self._open()
        self._tx.delete(paths)

    def _open(self) -> None:
        if self._tx is None:
            self.store.ensure()
            self._tx = Transaction(self.store.lakefs, self.store.repository, STORE_BRANCH,
                                   merge_timeout_s=self.merge_timeout_s, strategy="source-wins")
            self._tx.__enter__()

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
