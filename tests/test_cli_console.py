"""CLI output stays readable when captured: tables do not wrap at 80 columns in a log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.pipeline_support import CLI, photo

LONG = "a-folder-name-long-enough-that-an-80-column-table-would-wrap-it/" * 2


def test_a_captured_table_keeps_every_cell_on_one_line(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / LONG).mkdir(parents=True)
    (images / LONG / "sharp.jpg").write_bytes(photo(1, size=200))
    (images / LONG / "broken.jpg").write_bytes(b"not an image")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    result = subprocess.run([*CLI, "score", str(images), "--no-cache", "--jobs", "1"],
                            env={**env, "CLEARLAKE_CACHE_DIR": str(tmp_path / "cache")},
                            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    rows = {name: [line for line in result.stdout.splitlines() if name in line]
            for name in ("sharp.jpg", "broken.jpg")}
    assert all(len(found) == 1 and f"{LONG}{name}" in found[0] for name, found in rows.items())
    broken = rows["broken.jpg"][0]
    assert "corrupt" in broken and "not an image" in broken  # the row's other cells, same line
