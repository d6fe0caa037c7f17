"""The results table: image records as Parquet, one row per image.

A branch's table and `clearlake score`'s output share this one layout: a column per
record field, per metric and per class probability, so `SELECT *` in lakeFS's object
viewer, pandas or DuckDB gives one readable row per image, and each record can be
rebuilt from its row (and, when clearlake signed it, still verifies). The layout lives
in the Parquet schema's metadata, so no column is ever guessed.

A branch's table is kept in parts (`_clearlake/tables/<branch>/part*.parquet`) so that
a run rewrites only what it changes, whatever the size of the repository: each
image's row lives in the part its path hashes to, and a part that grows beyond
`PART_ROWS` rows splits in two (extendible hashing). Part `part-01.parquet` holds the
paths whose SHA-256 begins with the bits 0, 1; the root, `part.parquet`, holds every
path until the table first splits. The parts always cover every hash exactly once.

Imports only the standard library and pyarrow (lazily): `clearlake score` uses it.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clearlake.layout import RESULTS_LAYOUT, check_layout

if TYPE_CHECKING:
    import pyarrow as pa

GROUP_ROWS = 1024  # rows per Parquet row group: the most a table update decodes at once
PART_ROWS = 1024
"""The most rows a part of a branch's table holds before it splits in two.

A run rewrites each part it changes whole, so this bounds what a small change costs:
about 0.3 MB of Parquet a part. A branch of 100,000 images has 128 parts of ~780 rows
(hashes spread evenly: 100,000 / 2⁷)."""
HASH_BITS = 256  # a part is named by at most this many leading bits of SHA-256(path)
_PART_NAME = re.compile(r"part(?:-([01]{1,256}))?\.parquet")
RECORD_SIGNATURE = "signature"  # the record field holding clearlake's signature (provenance)


def table_records(table: bytes | None, *, key: bytes | None = None) -> list[dict[str, Any]]:
    """The records a Parquet table holds, rebuilt from its columns (see `records_table`).

    Args:
        table: the table's Parquet bytes.
        key: the signing key: only the rows clearlake signed are returned (a table is a
            file under `_clearlake/` like any other: anyone can write one). None returns
            every row as stored, unchecked.
    """
    return [] if table is None else list(iter_table_records(table, key=key))


def iter_table_records(table: bytes, *, key: bytes | None = None) -> Iterator[dict[str, Any]]:
    """The records of a Parquet table (see `table_records`), decoded a row group at a time,
    so a reader of a large table never holds more of it decoded than one group."""
    import pyarrow.parquet as pq

    if key is not None:
        from clearlake.provenance import verified_record
    source = pq.ParquetFile(io.BytesIO(table))
    layout = _TableLayout.of(source.schema_arrow)
    for batch in source.iter_batches(batch_size=GROUP_ROWS,
                                     columns=["record"] if layout is None else None):
        if layout is None:  # layout 1: each row's record as JSON in a `record` column
            records = (json.loads(text) for text in batch.column(0).to_pylist())
        else:
            columns = batch.to_pydict()
            records = (layout.record(dict(zip(columns, row, strict=True)))
                       for row in zip(*columns.values(), strict=True))
        for record in records:
            if key is None or verified_record(record, key) is not None:
                yield record


# Record fields that lead the table, in this order; metrics and class probabilities
# follow as columns of their own, then every other field, maps as JSON, the signature last.
_LEADING_FIELDS = ("path", "label", "outcome", "reason")
_SPREAD_FIELDS = frozenset({"metrics", "probabilities", RECORD_SIGNATURE})
_TABLE_METADATA_KEY = b"clearlake"


@dataclass(frozen=True)
class _TableLayout:
    """How a record is spread over the table's columns (kept in the Parquet schema's
    metadata, so no column layout is ever guessed).

    Attributes:
        metrics: metric name → its column (the name itself unless a field has it).
        classes: class → its probability column (`p_<class>`).
        json_fields: fields stored as JSON text (maps and lists other than the two above).
    """

    metrics: dict[str, str]
    classes: dict[str, str]
    json_fields: tuple[str, ...]

    @classmethod
    def for_records(cls, records: Sequence[dict[str, Any]]) -> _TableLayout:
        fields = {f for r in records for f in r}
        classes = sorted({c for r in records for c in (r.get("probabilities") or {})})
        taken = fields | {f"p_{c}" for c in classes}
        metrics = dict.fromkeys(n for r in records for n in (r.get("metrics") or {}))
        return cls(
            metrics={n: f"metric_{n}" if n in taken else n for n in metrics},
            classes={c: f"p_{c}" for c in classes},
            json_fields=tuple(sorted(f for f in fields - _SPREAD_FIELDS if any(
                isinstance(r.get(f), dict | list) for r in records))),
        )

    @classmethod
    def of(cls, schema: pa.Schema) -> _TableLayout | None:
        """The layout a table was written with; None for layout 1 (a `record` column)."""
        text = (schema.metadata or {}).get(_TABLE_METADATA_KEY)
        if text is None:
            return None
        data = json.loads(text)
        check_layout(data["layout"], "this results table")
        return cls(metrics=data["metrics"], classes=data["classes"],
                   json_fields=tuple(data["json_fields"]))

    def merged(self, other: _TableLayout) -> _TableLayout:
        return _TableLayout(metrics={**self.metrics, **other.metrics},
                            classes=dict(sorted({**self.classes, **other.classes}.items())),
                            json_fields=tuple(sorted({*self.json_fields, *other.json_fields})))

    def metadata(self) -> dict[bytes, bytes]:
        return {_TABLE_METADATA_KEY: json.dumps({
            "layout": RESULTS_LAYOUT, "metrics": self.metrics, "classes": self.classes,
            "json_fields": list(self.json_fields)}).encode()}

    def column_order(self, names: Iterable[str]) -> list[str]:
        """`names` in the table's reading order: what a person queries first."""
        names = list(names)
        spread = [*_LEADING_FIELDS, *self.classes.values(), *self.metrics.values()]
        rest = [n for n in names if n not in spread and n != RECORD_SIGNATURE]
        ordered = ([n for n in spread if n in names]
                   + [n for n in rest if n not in self.json_fields]
                   + [n for n in rest if n in self.json_fields])
        return ordered + ([RECORD_SIGNATURE] if RECORD_SIGNATURE in names else [])

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """A record rebuilt from its row: nulls are absent values (see `sign_record`)."""
        metric_of = {column: name for name, column in self.metrics.items()}
        class_of = {column: name for name, column in self.classes.items()}
        record: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        probabilities: dict[str, float] = {}
        for column, value in row.items():
            if column in metric_of:
                if value is not None:
                    metrics[metric_of[column]] = value
            elif column in class_of:
                if value is not None:
                    probabilities[class_of[column]] = value
            elif column in self.json_fields and value is not None:
                record[column] = json.loads(value)
            elif column == RECORD_SIGNATURE and value is None:
                continue  # an unsigned record has none
            else:
                record[column] = value
        record["metrics"] = metrics or None
        record["probabilities"] = probabilities or None
        return record


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Records as a table of flat columns, one row per record, sorted by path.

    Columns: path, label, outcome, reason, p_<class>, every metric, then the other
    fields of a record (sha256, size, width, height, model_id, source_commit, run_id,
    origin, …; maps such as `computed_at` as JSON), and its `signature` last. Each
    record can be rebuilt from its row (`table_records`) and still verify.
    """
    import pyarrow as pa

    layout = _TableLayout.for_records(records)
    columns: dict[str, pa.Array] = {
        name: pa.array([r.get(name) for r in records], pa.string()) for name in _LEADING_FIELDS}
    for c, column in layout.classes.items():
        columns[column] = pa.array(
            [(r.get("probabilities") or {}).get(c) for r in records], pa.float64())
    for n, column in layout.metrics.items():
        columns[column] = pa.array([(r.get("metrics") or {}).get(n) for r in records],
                                   pa.float64())
    others = dict.fromkeys(f for r in records for f in r
                           if f not in _SPREAD_FIELDS and f not in _LEADING_FIELDS)
    for name in others:
        values = [r.get(name) for r in records]
        columns[name] = (pa.array([None if v is None else json.dumps(v, sort_keys=True)
                                   for v in values], pa.string())
                         if name in layout.json_fields else pa.array(values))
    if any(RECORD_SIGNATURE in r for r in records):  # clearlake's records; not score's
        columns[RECORD_SIGNATURE] = pa.array([r.get(RECORD_SIGNATURE) for r in records],
                                             pa.string())  # last: nobody reads it
    table = pa.table(columns)
    table = table.select(layout.column_order(table.column_names))
    return table.replace_schema_metadata(layout.metadata()).sort_by("path")


def updated_table(
    base: bytes | None, new_records: Sequence[dict[str, Any]], removed: Sequence[str]
) -> bytes:
    """The branch's table as Parquet: `base` with `new_records` in place of rows of the
    same path and the rows of `removed` paths dropped, sorted by path.

    Streamed one row group at a time: kept rows are copied column by column, never
    decoded into records, and the flow never holds more of the old table decoded
    than one group, so its memory does not grow with the repository. `base` is
    sorted by path, so each group is merged with the new rows that sort before its
    last path, and the rest follow at the end. A layout-1 table (records as JSON) is
    rewritten in today's layout once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    new = records_table(new_records)
    sink = io.BytesIO()
    if base is not None and _TableLayout.of(pq.read_schema(io.BytesIO(base))) is None:
        base = parquet_bytes(records_table(table_records(base)))
    if base is None:
        return parquet_bytes(new)
    old = pq.ParquetFile(io.BytesIO(base))
    # A new model or metric set brings columns the kept rows lack: those are null there.
    layout = _TableLayout.of(old.schema_arrow).merged(_TableLayout.of(new.schema))
    unified = pa.unify_schemas([new.schema, old.schema_arrow], promote_options="default")
    schema = pa.schema([unified.field(n) for n in layout.column_order(unified.names)],
                       metadata=layout.metadata())
    replaced = pa.array([r["path"] for r in new_records] + list(removed), pa.string())
    new_paths = new.column("path").to_pylist()
    merged = 0  # rows of `new` written so far
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for group in old.iter_batches(batch_size=GROUP_ROWS):
            if group.num_rows == 0:
                continue
            kept = pa.Table.from_batches([group])
            kept = kept.filter(pc.invert(pc.is_in(kept["path"], value_set=replaced)))
            until = bisect.bisect_right(new_paths, group.column("path")[-1].as_py())
            chunk = pa.concat_tables([_conform(kept, schema),
                                      _conform(new.slice(merged, until - merged), schema)])
            writer.write_table(chunk.sort_by("path"), row_group_size=GROUP_ROWS)
            merged = until
        writer.write_table(_conform(new.slice(merged), schema), row_group_size=GROUP_ROWS)
    return sink.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    """`table` as Parquet bytes, zstd-compressed in row groups of `GROUP_ROWS`."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=GROUP_ROWS)
    return sink.getvalue()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order; those it lacks are all null."""
    import pyarrow as pa

    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.table(columns, schema=schema)


# -- a branch's table in parts --------------------------------------------------------------


def part_name(bits: str) -> str:
    """The file name of the part holding the paths whose hash begins with `bits`."""
    return f"part-{bits}.parquet" if bits else "part.parquet"


def part_bits(name: str) -> str | None:
    """The bits a part's file name stands for; None when `name` is not a part's."""
    match = _PART_NAME.fullmatch(name)
    return None if match is None else match.group(1) or ""


def _hash_bits(path: str) -> str:
    return format(int.from_bytes(hashlib.sha256(path.encode()).digest(), "big"), "0256b")


def part_of(path: str, parts: Collection[str]) -> str:
    """The part (its bits) that holds `path`'s row, among the table's `parts`.

    `parts` cover every hash once, so exactly one is a prefix of the path's hash; with
    no parts yet it is the root. Should a part be missing (deleted by hand), the path
    gets a new part: the shortest prefix of its hash that overlaps no existing part.
    """
    bits = _hash_bits(path)
    for depth in range(max(map(len, parts), default=0) + 1):
        if bits[:depth] in parts:
            return bits[:depth]
    depth = 0
    while any(p.startswith(bits[:depth]) for p in parts):
        depth += 1
    return bits[:depth]


def parts_touched(parts: Collection[str], paths: Iterable[str]) -> set[str]:
    """The parts holding `paths` (a change of those paths rewrites these parts only)."""
    return {part_of(p, parts) for p in paths}


def updated_parts(
    parts: Collection[str],
    stored: Mapping[str, bytes],
    new_records: Sequence[dict[str, Any]],
    removed: Sequence[str],
) -> dict[str, bytes | None]:
    """What a change writes to a table kept in parts: bits → the part's new Parquet, or
    None for a part that split (its halves are among the others).

    Args:
        parts: the bits of every part the table has (empty for a new table).
        stored: the Parquet of each part the change touches (`parts_touched`); a part
            not yet written is absent.
        new_records: records replacing those of the same path, or new.
        removed: paths whose rows are dropped.
    """
    records: dict[str, list[dict[str, Any]]] = {}
    dropped: dict[str, list[str]] = {}
    for record in new_records:
        records.setdefault(part_of(record["path"], parts), []).append(record)
    for path in removed:
        dropped.setdefault(part_of(path, parts), []).append(path)
    touched = set(records) | set(dropped) | (set() if parts else {""})
    written: dict[str, bytes | None] = {}
    for bits in sorted(touched):
        pieces = _split(updated_table(stored.get(bits), records.get(bits, ()),
                                      dropped.get(bits, ())), bits)
        if bits not in pieces:
            written[bits] = None
        written.update(pieces)
    return written


def _split(table: bytes, bits: str) -> dict[str, bytes]:
    """`table` (the part `bits`) as parts of at most `PART_ROWS` rows: itself if it fits,
    else halved by the next bit of each path's hash, again until every half fits."""
    import pyarrow.parquet as pq

    if pq.ParquetFile(io.BytesIO(table)).metadata.num_rows <= PART_ROWS:
        return {bits: table}
    rows = pq.read_table(io.BytesIO(table))
    hashes = [_hash_bits(p) for p in rows.column("path").to_pylist()]
    pieces: dict[str, bytes] = {}

    def divide(indices: list[int], prefix: str) -> None:
        if len(indices) <= PART_ROWS or len(prefix) == HASH_BITS:
            pieces[prefix] = parquet_bytes(rows.take(indices))  # still sorted by path
            return
        depth = len(prefix)
        divide([i for i in indices if hashes[i][depth] == "0"], prefix + "0")
        divide([i for i in indices if hashes[i][depth] == "1"], prefix + "1")

    divide(list(range(rows.num_rows)), bits)
    return pieces
