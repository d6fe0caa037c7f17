"""Check that a change to the built-in metrics keeps every value bit for bit.

Run it once with the code before the change and once after, then compare::

    # before: an export of the old code first on the path (a file run, not -c or -m,
    # so that the current directory does not come first)
    git archive <old commit> clearlake | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python bench/metric_values.py save before.npz /tmp/sample-a0 ...
    .venv/bin/python bench/metric_values.py save after.npz /tmp/sample-a0 ...
    .venv/bin/python bench/metric_values.py compare before.npz after.npz

`save` decodes every JPEG/PNG under the folders and stores all built-in metrics of each
(`metrics.measure`: together, sharing their intermediates) and, for every tenth image,
each metric computed alone (no sharing). `compare` says whether both are equal to the
bit (`np.array_equal` on the float64 values) and lists the first differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def save(out: Path, folders: list[Path]) -> None:
    """Every built-in metric of every image under `folders`, into `out` (.npz)."""
    from clearlake.quality import decode as decoding
    from clearlake.quality import metrics

    print(f"metrics from {metrics.__file__}", file=sys.stderr)
    paths = sorted(str(p) for folder in folders for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    functions = dict(metrics.BUILTIN_METRICS)
    together: dict[str, np.ndarray] = {}
    alone: dict[str, np.ndarray] = {}
    for index, path in enumerate(paths):
        image = decoding.decode(Path(path).read_bytes()).image
        if image is None:
            continue
        values = metrics.measure(image)
        together[path] = np.array([values[n] for n in metrics.METRIC_NAMES], np.float64)
        if index % 10 == 0:
            alone[path] = np.array([float(functions[n](image)) for n in metrics.METRIC_NAMES])
    np.savez(out, names=np.array(metrics.METRIC_NAMES), paths=np.array(list(together)),
             together=np.stack(list(together.values())), alone_paths=np.array(list(alone)),
             alone=np.stack(list(alone.values())))
    print(f"{len(together)} images, {len(alone)} of them also metric by metric alone",
          file=sys.stderr)


def compare(before: Path, after: Path) -> bool:
    """Print whether two `save` outputs are equal to the bit; True when they are."""
    a, b = np.load(before), np.load(after)
    if list(a["names"]) != list(b["names"]) or list(a["paths"]) != list(b["paths"]):
        print("not the same metrics or images")
        return False
    same = True
    for key, paths in (("together", "paths"), ("alone", "alone_paths")):
        x, y = a[key], b[key]
        equal = np.array_equal(x, y)
        same &= equal
        print(f"{key}: {x.shape[0]} images × {x.shape[1]} metrics: "
              f"{'bit-identical' if equal else 'DIFFERENT'}")
        if not equal:
            where = np.argwhere(x != y)
            for row, col in where[:20]:
                print(f"  {a[paths][row]} {a['names'][col]}: {x[row, col]!r} → {y[row, col]!r}")
            print(f"  {len(where)} values differ")
    return same


def main(argv: list[str] | None = None) -> int:
    """`save OUT FOLDER...` or `compare BEFORE AFTER`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save", help="measure every image under the folders")
    saving.add_argument("out", type=Path)
    saving.add_argument("folders", type=Path, nargs="+")
    comparing = commands.add_parser("compare", help="compare two saved sets of values")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "save":
        save(args.out, args.folders)
        return 0
    return 0 if compare(args.before, args.after) else 1


if __name__ == "__main__":
    sys.exit(main())
