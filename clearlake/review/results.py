"""A ref's results as an index the review pages filter, sort and page through.

The branch's table (`_clearlake/tables/<branch>/`, in parts) holds every record; the
index keeps, per image, only what a grid needs (path, label, outcome, probabilities,
metrics, SHA-256), taken from the record itself once its signature verifies
(`provenance.verified_record`). A row whose record does not verify, or whose flat
columns disagree with it, stays in the index as `unverified` with no label: it is
shown, never trusted. Each table version is read once (streamed a row group at a
time) and its index kept in memory, keyed by its parts' checksums, so a page
costs a sort over the index, never a read of 100,000 records or images.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clearlake.lakefs import LakeFS
from clearlake.layout import table_folder
from clearlake.pipeline import stored_table
from clearlake.provenance import ResultsMarker, latest_results, verified_record
from clearlake.table import iter_table_records

UNVERIFIED = "unverified"  # the outcome shown for a row clearlake did not sign
PAGE_SIZE = 48
INDEXES_KEPT = 4


@dataclass(frozen=True)
class RefResults:
    """What the review pages know about a ref.

    Attributes:
        repository: the repository.
        ref: the ref as asked for.
        commit: the commit it resolves to.
        results_commit: the newest results commit on its first-parent line (None: never
            processed).
        marker: that commit's verified marker.
        index: the results, one row per image (None: no results).
    """

    repository: str
    ref: str
    commit: str
    results_commit: str | None
    marker: ResultsMarker | None
    index: pa.Table | None

    @property
    def table_folder(self) -> str | None:
        """The folder of the branch table the results come from."""
        return table_folder(self.marker.branch) if self.marker else None


def _index_row(path: str, record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        return {"path": path, "verified": False, "label": None, "outcome": UNVERIFIED,
                "reason": "its record is not signed by clearlake", "sha256": None,
                "probabilities": {}, "metrics": {}}
    return {"path": path, "verified": True, "label": record.get("label"),
            "outcome": record.get("outcome"), "reason": record.get("reason") or "",
            "sha256": record.get("sha256"), "probabilities": record.get("probabilities") or {},
            "metrics": record.get("metrics") or {}}


def build_index(tables: Iterable[bytes], key: bytes) -> pa.Table:
    """The index of a branch table's parts (Parquet bytes), sorted by path, verified row by
    row (a row is its record: a column changed after signing fails the signature)."""
    rows: list[dict[str, Any]] = []
    for table in tables:
        for stored in iter_table_records(table):
            path = stored.get("path")
            if isinstance(path, str):
                rows.append(_index_row(path, verified_record(stored, key, path=path)))
    return index_table(rows)


def index_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Index rows (see `_index_row`) as a table: a column per class probability and metric."""
    classes = sorted({c for r in rows for c in r["probabilities"]})
    metrics = sorted({m for r in rows for m in r["metrics"]})
    columns: dict[str, pa.Array] = {
        "path": pa.array([r["path"] for r in rows], pa.string()),
        "verified": pa.array([r["verified"] for r in rows], pa.bool_()),
        "label": pa.array([r["label"] for r in rows], pa.string()),
        "outcome": pa.array([r["outcome"] for r in rows], pa.string()),
        "reason": pa.array([r["reason"] for r in rows], pa.string()),
        "sha256": pa.array([r["sha256"] for r in rows], pa.string()),
    }
    for c in classes:
        columns[f"p_{c}"] = pa.array([r["probabilities"].get(c) for r in rows], pa.float64())
    for m in metrics:
        columns[m] = pa.array([_number(r["metrics"].get(m)) for r in rows], pa.float64())
    return pa.table(columns).sort_by("path")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Query:
    """What a grid shows: filters, order, and which page.

    Attributes:
        label: only this label ("" any).
        outcome: only this outcome ("" any; 'unverified' for rows clearlake did not sign).
        prefix: only paths under this prefix.
        sort: a column of the index: 'path', 'p_<class>' or a metric.
        descending: largest first.
        offset: rows skipped (the page).
        limit: rows on a page.
    """

    label: str = ""
    outcome: str = ""
    prefix: str = ""
    sort: str = "p_good"
    descending: bool = False
    offset: int = 0
    limit: int = PAGE_SIZE


def sortable_columns(index: pa.Table) -> list[str]:
    """Columns a grid may sort by: P(class) first, then the metrics, then the path."""
    fixed = {"path", "verified", "label", "outcome", "reason", "sha256"}
    probabilities = [n for n in index.column_names if n.startswith("p_")]
    metrics = [n for n in index.column_names if n not in fixed and not n.startswith("p_")]
    return [*probabilities, *metrics, "path"]


def select(index: pa.Table, query: Query) -> tuple[list[dict[str, Any]], int]:
    """The page of rows `query` asks for, and how many rows match in all.

    Rows without a value in the sort column (unverified, not decodable) come last;
    ties go by path, so pages never overlap.
    """
    conditions = []
    if query.label:
        conditions.append(pc.equal(index["label"], query.label))
    if query.outcome:
        conditions.append(pc.equal(index["outcome"], query.outcome))
    if query.prefix:
        conditions.append(pc.starts_with(index["path"], query.prefix))
    matching = index
    if conditions:
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_(mask, condition)
        matching = index.filter(pc.fill_null(mask, False))
    sort = query.sort if query.sort in sortable_columns(index) else "path"
    order = "descending" if query.descending else "ascending"
    keys = [(sort, order, "at_end")] + ([("path", "ascending", "at_end")]
                                        if sort != "path" else [])
    indices = pc.sort_indices(matching, sort_keys=keys)
    page = indices[query.offset : query.offset + query.limit]
    return matching.take(page).to_pylist(), matching.num_rows


def counts(index: pa.Table) -> dict[str, dict[str, int]]:
    """Images per label and per outcome (largest first)."""
    def tally(column: str) -> dict[str, int]:
        found = pc.value_counts(index[column].drop_null()).to_pylist()
        return dict(sorted(((v["values"], v["counts"]) for v in found),
                           key=lambda item: (-item[1], item[0])))

    return {"labels": tally("label"), "outcomes": tally("outcome")}


class ResultsIndex:
    """Indexes of branch tables, built once per table version and kept in memory.

    Args:
        key: the signing key records are verified with.
        kept: how many indexes to keep (least recently used go first).
    """

    def __init__(self, key: bytes, kept: int = INDEXES_KEPT) -> None:
        self.key = key
        self.kept = kept
        self._indexes: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], pa.Table]
        self._indexes = OrderedDict()
        self._lock = threading.Lock()

    def results(self, lakefs: LakeFS, repository: str, ref: str) -> RefResults:
        """The results `ref` holds.

        Raises:
            NotFoundError: no such repository or ref.
        """
        commit = lakefs.get_commit(repository, ref).id
        latest = latest_results(lakefs, repository, commit, self.key)
        if latest is None:
            return RefResults(repository, ref, commit, None, None, None)
        results_commit, marker = latest
        return RefResults(repository, ref, commit, results_commit, marker,
                          self._index(lakefs, repository, commit, marker.branch))

    def _index(self, lakefs: LakeFS, repository: str, commit: str, branch: str) -> pa.Table | None:
        table = stored_table(lakefs, repository, commit, branch)
        if table.empty:
            return None
        cache_key = (repository, tuple(sorted((o.path, o.checksum) for o in table.objects())))
        with self._lock:  # one build at a time: a second request waits and reuses it
            if cache_key in self._indexes:
                self._indexes.move_to_end(cache_key)
                return self._indexes[cache_key]
            index = build_index(table.read_all(lakefs), self.key)
            self._indexes[cache_key] = index
            while len(self._indexes) > self.kept:
                self._indexes.popitem(last=False)
            return index


def record_json(record: dict[str, Any]) -> str:
    """A record for people to read (without its signature)."""
    return json.dumps({k: v for k, v in record.items() if k != "signature"}, indent=1,
                      sort_keys=True)
