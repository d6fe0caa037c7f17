"""A branch's table in parts (clearlake.table): which part holds a path, how a change
rewrites only its parts, how a full part splits. No server."""

from __future__ import annotations

import io
from typing import Any

import pyarrow.parquet as pq
import pytest

from clearlake import table
from clearlake.table import (
    part_bits,
    part_name,
    part_of,
    parts_touched,
    table_records,
    updated_parts,
    updated_table,
)

# The leading bits of SHA-256 of each path, for the expectations below:
# a.jpg 010100…, b.jpg 011110…, c.jpg 100100…, d.jpg 010100….


def _record(path: str, label: str = "good") -> dict[str, Any]:
    return {"path": path, "label": label, "outcome": "ok", "reason": "",
            "probabilities": {label: 0.9}, "metrics": {"blur": 1.0}, "sha256": "0" * 64,
            "size": 10, "width": 4, "height": 3, "model_id": "m"}


def _rows(part: bytes) -> int:
    return pq.ParquetFile(io.BytesIO(part)).metadata.num_rows


def test_part_names_spell_their_bits_and_nothing_else_is_a_part() -> None:
    assert part_name("") == "part.parquet"
    assert part_name("01") == "part-01.parquet"
    assert [part_bits(n) for n in ("part.parquet", "part-01.parquet", "part-.parquet",
                                   "part-2.parquet", "main.parquet", "part-01.parquet.bak")] == [
        "", "01", None, None, None, None]


def test_each_path_is_in_exactly_the_part_its_hash_begins_with() -> None:
    assert part_of("a.jpg", set()) == ""  # a new table: the root
    assert part_of("a.jpg", {""}) == ""
    parts = {"00", "01", "1"}
    assert [part_of(p, parts) for p in ("a.jpg", "b.jpg", "c.jpg")] == ["01", "01", "1"]
    assert parts_touched({"0100", "0101", "011", "00", "1"}, ["a.jpg", "b.jpg", "d.jpg"]) == {
        "0101", "011"}


def test_a_path_whose_part_went_missing_gets_a_new_part_overlapping_none() -> None:
    # Part "1" deleted by hand: c.jpg (1…) gets "1" again; with "10" and "111" left,
    # the shortest prefix of 1001… that begins no existing part is "100".
    assert part_of("c.jpg", {"0"}) == "1"
    assert part_of("c.jpg", {"0", "101", "11"}) == "100"


def test_a_new_table_is_one_part_until_it_outgrows_part_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    written = updated_parts(set(), {}, [_record("a.jpg"), _record("c.jpg")], [])
    assert list(written) == [""]
    assert [r["path"] for r in table_records(written[""])] == ["a.jpg", "c.jpg"]
    assert updated_parts(set(), {}, [], []).keys() == {""}  # a first run with no image

    monkeypatch.setattr(table, "PART_ROWS", 2)
    paths = [f"{i}.jpg" for i in range(9)]
    written = updated_parts(set(), {}, [_record(p) for p in paths], [])
    assert written.pop("") is None  # the root split; its halves hold every row once
    assert all(len(bits) > 0 and _rows(data) <= 2 for bits, data in written.items())
    held = {r["path"]: bits for bits, data in written.items() for r in table_records(data)}
    assert sorted(held) == sorted(paths)
    assert all(part_of(p, set(written)) == bits for p, bits in held.items())
    assert not any(a != b and b.startswith(a) for a in written for b in written)  # prefix-free


def test_a_change_rewrites_only_the_parts_that_hold_its_paths(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table, "PART_ROWS", 2)
    parts = {"00": updated_table(None, [], []),
             "01": updated_table(None, [_record("a.jpg"), _record("b.jpg")], []),
             "1": updated_table(None, [_record("c.jpg")], [])}
    touched = parts_touched(parts, ["b.jpg"])
    assert touched == {"01"}
    written = updated_parts(parts, {b: parts[b] for b in touched},
                            [_record("b.jpg", "blurry")], [])
    assert list(written) == ["01"]
    assert [(r["path"], r["label"]) for r in table_records(written["01"])] == [
        ("a.jpg", "good"), ("b.jpg", "blurry")]

    # d.jpg joins the full part 01: it splits at the paths' third bit (a.jpg and d.jpg
    # begin 010…, b.jpg 011…); c.jpg leaves part 1 empty.
    written = updated_parts(parts, {"01": parts["01"], "1": parts["1"]}, [_record("d.jpg")],
                            ["c.jpg"])
    assert written.keys() == {"01", "010", "011", "1"}
    assert written["01"] is None
    assert [_rows(written[b]) for b in ("010", "011", "1")] == [2, 1, 0]


def test_a_table_in_one_object_is_read_as_the_root_and_rewritten_in_parts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table, "PART_ROWS", 2)
    legacy = updated_table(None, [_record(p) for p in ("a.jpg", "b.jpg", "c.jpg")], [])
    written = updated_parts({""}, {"": legacy}, [], ["b.jpg"])
    assert written == {"": written[""]}  # two rows left: still one part
    assert [r["path"] for r in table_records(written[""])] == ["a.jpg", "c.jpg"]
