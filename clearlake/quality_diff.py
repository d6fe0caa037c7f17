"""The quality diff between two refs: what changed in the images, and in their labels.

`quality_diff(lakefs, repository, from_ref, to_ref, key=…)` compares the images of two
refs (branches, tags or commits) of one repository and returns a `QualityDiff`:

- counts per label and per outcome on each side;
- images added, removed and changed (their bytes differ), each with its state before
  and after, and the label transitions among them (good→blurry, …);
- images `relabelled`: same bytes (same SHA-256; lakeFS checksum when a side has no
  SHA-256), another label or outcome — a model change, never an image change;
- `incoming`: labels of the images TO has new or changed (what a merge would bring);
- the shift of each metric: its quartiles on each side, over images that decoded.

Each side is read from clearlake's signed records at that ref (the branch tables under
`_clearlake/tables/`, then `_clearlake/records/…` for any image the tables miss); a
record counts only if it verifies with `key` for that image's path and lakeFS checksum
(`provenance.verified_record`). When a side is processed, that is every image, and
nothing is measured. Otherwise what is missing is computed in-process: an image without
a record is measured with `pipeline.measure_batch` (the metrics store's analyses of its
bytes are reused, bytes are read only for what the store has never seen), and a record
labelled by another model than the ref's own (`pipeline.load_model`) is labelled again
from its stored metrics. Nothing is written anywhere.

`QualityDiff.to_dict()` is plain JSON:

    {"repository", "from_ref", "to_ref", "from_commit", "to_commit",
     "counts": {"from": {"images": n, "labels": {…}, "outcomes": {…}}, "to": {…}},
     "added" | "removed" | "changed" | "relabelled": [
         {"path", "before": {"label", "outcome", "p_good", "sha256"} | null,
                  "after": {…} | null}, …],          # sorted by path
     "transitions": {"good→blurry": n, …},        # changed + relabelled images
     "incoming": {"blurry": n, …},                # added + changed images, by new label
     "metric_shift": {metric: {"from": {"q1", "median", "q3", "count"}, "to": {…}}},
     "computed": n,                               # images measured for a side lacking a record
     "sides": {"from": {"processed", "model_id", "stored", "relabelled", "computed"},
               "to": {…}}}

A state's `label` is None for an image that did not decode; `state_name` then gives
its outcome ("corrupt", …), which is what transitions and summaries show.
`summary_lines(diff)` renders a diff as a few lines of text (the CLI's output);
`brings_lines` phrases what arrives on a branch (shared with the gate's verdict).

`compare` is the pure core: it takes the two sides' records, no lakeFS.
`merge_sides` reads only what a merge changes (lakeFS's three-dot diff), both sides
labelled by the destination's model: `compare` of the two is the merge's quality
diff, which the pre-merge gate (`clearlake.gate`) reports and judges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clearlake import layout, pipeline, scripts
from clearlake.errors import NotFoundError
from clearlake.lakefs import LakeFS, ObjectInfo
from clearlake.metrics_store import MetricsStore
from clearlake.provenance import latest_results, verified_record
from clearlake.quality.classifier import Model
from clearlake.quality.registry import MetricSet
from clearlake.table import iter_table_records, part_bits, parts_touched

RUN_ID = "quality-diff"  # the run id of labels a diff computes (they are never stored)
ARROW = "→"
RECORD_LOOKUP_CHUNK = 1024  # record objects looked up (and held) at once


# -- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageState:
    """One image on one side: its label, outcome, P(good) and bytes.

    Attributes:
        label: the model's label; None when the image did not decode.
        outcome: the decode outcome ('ok', 'corrupt', 'failed', …).
        p_good: the model's P(good); None without a label.
        sha256: SHA-256 of the bytes ('' when they could not be read).
        checksum: lakeFS's checksum of the object (compares bytes when a side has no SHA-256).
    """

    label: str | None
    outcome: str
    p_good: float | None
    sha256: str
    checksum: str

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> ImageState:
        """The state a clearlake record describes."""
        probabilities = record.get("probabilities") or {}
        return cls(record.get("label"), record["outcome"], probabilities.get("good"),
                   record.get("sha256") or "", record.get("checksum") or "")

    @property
    def name(self) -> str:
        """The label, or the outcome of an image that has none."""
        return state_name(self)

    def same_bytes(self, other: ImageState) -> bool:
        """True when both sides hold the same bytes."""
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return self.checksum == other.checksum

    def to_dict(self) -> dict[str, Any]:
        """{label, outcome, p_good, sha256}."""
        return {"label": self.label, "outcome": self.outcome, "p_good": self.p_good,
                "sha256": self.sha256}


def state_name(state: ImageState | None) -> str:
    """What a person calls a state: its label, else its outcome ('corrupt', …); '∅' for none."""
    if state is None:
        return "∅"
    return state.label or state.outcome


@dataclass(frozen=True)
class ImageChange:
    """One image whose state differs between the sides (None: absent on that side)."""

    path: str
    before: ImageState | None
    after: ImageState | None

    def to_dict(self) -> dict[str, Any]:
        """{path, before, after}."""
        return {"path": self.path,
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None}


@dataclass(frozen=True)
class QualityDiff:
    """The quality diff between two refs (see the module docstring for each field)."""

    repository: str
    from_ref: str
    to_ref: str
    from_commit: str
    to_commit: str
    counts: Mapping[str, Mapping[str, Any]]
    added: tuple[ImageChange, ...]
    removed: tuple[ImageChange, ...]
    changed: tuple[ImageChange, ...]
    relabelled: tuple[ImageChange, ...]
    transitions: Mapping[str, int]
    incoming: Mapping[str, int]
    metric_shift: Mapping[str, Mapping[str, Mapping[str, float | int | None]]]
    computed: int = 0
    sides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "repository": self.repository,
            "from_ref": self.from_ref,
            "to_ref": self.to_ref,
            "from_commit": self.from_commit,
            "to_commit": self.to_commit,
            "counts": {side: dict(c) for side, c in self.counts.items()},
            "added": [c.to_dict() for c in self.added],
            "removed": [c.to_dict() for c in self.removed],
            "changed": [c.to_dict() for c in self.changed],
            "relabelled": [c.to_dict() for c in self.relabelled],
            "transitions": dict(self.transitions),
            "incoming": dict(self.incoming),
            "metric_shift": {m: {side: dict(q) for side, q in s.items()}
                             for m, s in self.metric_shift.items()},
            "computed": self.computed,
            "sides": {side: dict(s) for side, s in self.sides.items()},
        }


def side_counts(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """{images, labels: {label: n}, outcomes: {outcome: n}}, keys sorted."""
    records = list(records)
    labels = Counter(r["label"] for r in records if r.get("label"))
    outcomes = Counter(r["outcome"] for r in records)
    return {"images": len(records), "labels": dict(sorted(labels.items())),
            "outcomes": dict(sorted(outcomes.items()))}


def quartiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """{q1, median, q3, count} of `values` (numpy's linear interpolation); None when empty."""
    if not values:
        return {"q1": None, "median": None, "q3": None, "count": 0}
    q1, median, q3 = (float(v) for v in np.percentile(np.asarray(values, float), [25, 50, 75]))
    return {"q1": q1, "median": median, "q3": q3, "count": len(values)}


def metric_shift(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Quartiles of every metric on each side, over the records that have metrics."""
    sides: dict[str, dict[str, list[float]]] = {"from": {}, "to": {}}
    for side, records in (("from", before), ("to", after)):
        for r in records:
            for name, value in (r.get("metrics") or {}).items():
                if value is not None:
                    sides[side].setdefault(name, []).append(float(value))
    names = sorted(set(sides["from"]) | set(sides["to"]))
    return {n: {side: quartiles(sides[side].get(n, [])) for side in ("from", "to")}
            for n in names}


def compare(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    *,
    repository: str,
    from_ref: str,
    to_ref: str,
    from_commit: str = "",
    to_commit: str = "",
    computed: int = 0,
    sides: Mapping[str, Mapping[str, Any]] | None = None,
) -> QualityDiff:
    """The diff between two sides' records, {image path: clearlake record} each.

    A record needs `outcome`, and should carry `label`, `probabilities`, `sha256`,
    `checksum` and `metrics` (as `pipeline.record` writes them).
    """
    added, removed, changed, relabelled = [], [], [], []
    for path in sorted(set(before) | set(after)):
        old = ImageState.of(before[path]) if path in before else None
        new = ImageState.of(after[path]) if path in after else None
        if old is None:
            added.append(ImageChange(path, None, new))
        elif new is None:
            removed.append(ImageChange(path, old, None))
        elif not old.same_bytes(new):
            changed.append(ImageChange(path, old, new))
        elif (old.label, old.outcome) != (new.label, new.outcome):
            relabelled.append(ImageChange(path, old, new))
    transitions = Counter(f"{c.before.name}{ARROW}{c.after.name}"
                          for c in (*changed, *relabelled)
                          if c.before and c.after and c.before.name != c.after.name)
    incoming = Counter(c.after.name for c in (*added, *changed) if c.after)
    return QualityDiff(
        repository=repository, from_ref=from_ref, to_ref=to_ref,
        from_commit=from_commit, to_commit=to_commit,
        counts={"from": side_counts(before.values()), "to": side_counts(after.values())},
        added=tuple(added), removed=tuple(removed), changed=tuple(changed),
        relabelled=tuple(relabelled),
        transitions=dict(sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0]))),
        incoming=dict(sorted(incoming.items(), key=lambda kv: (-kv[1], kv[0]))),
        metric_shift=metric_shift(before.values(), after.values()),
        computed=computed,
        sides=dict(sides or {}),
    )


# -- text ------------------------------------------------------------------------------------


def listing(paths: Sequence[str], limit: int) -> str:
    """'a.jpg, b.jpg, … (+7 more)': at most `limit` paths."""
    shown = ", ".join(paths[:limit])
    more = len(paths) - limit
    return f"{shown}, … (+{more} more)" if more > 0 else shown


def images_phrase(count: int, label: str = "") -> str:
    """'1 image', '12 blurry images'."""
    return f"{count} {label + ' ' if label else ''}image{'' if count == 1 else 's'}"


def brings_lines(
    arriving: Mapping[str, Sequence[str]], into: str, *, limit: int = 10
) -> list[str]:
    """'this merge brings 12 blurry images into main: a.jpg, … (+2 more)', a line per label.

    Args:
        arriving: the paths arriving with each label (or outcome), in the order to show.
        into: the branch they arrive on.
        limit: most paths named per line.
    """
    return [f"this merge brings {images_phrase(len(paths), label)} into {into}: "
            f"{listing(sorted(paths), limit)}" for label, paths in arriving.items() if paths]


def arrivals(diff: QualityDiff, *, exclude: Iterable[str] = ("good",)) -> dict[str, list[str]]:
    """Paths (sorted) of the images TO adds or changes, by their new label, leaving out
    `exclude`; the most frequent label first."""
    found: dict[str, list[str]] = {}
    for change in (*diff.added, *diff.changed):
        if change.after is not None and change.after.name not in set(exclude):
            found.setdefault(change.after.name, []).append(change.path)
    return {label: sorted(paths)
            for label, paths in sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


def transition_paths(diff: QualityDiff) -> dict[str, list[str]]:
    """Paths (sorted) of the changed and relabelled images by transition ('good→blurry'),
    as `diff.transitions` orders them."""
    found: dict[str, list[str]] = {t: [] for t in diff.transitions}
    for change in sorted((*diff.changed, *diff.relabelled), key=lambda c: c.path):
        transition = f"{state_name(change.before)}{ARROW}{state_name(change.after)}"
        if transition in found:
            found[transition].append(change.path)
    return found


def _fmt(value: float | int | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _counts_line(title: str, before: Mapping[str, int], after: Mapping[str, int]) -> str:
    names = sorted(set(before) | set(after), key=lambda n: (-after.get(n, 0), n))
    return f"{title}: " + ", ".join(f"{n} {before.get(n, 0)}{ARROW}{after.get(n, 0)}"
                                    for n in names) if names else f"{title}: none"


def summary_lines(diff: QualityDiff, limit: int = 10) -> list[str]:
    """The diff as a few lines for a person: totals, counts, arrivals, transitions,
    relabelled images and each metric's median [q1, q3]; at most `limit` paths named
    per line."""
    before, after = diff.counts["from"], diff.counts["to"]
    lines = [
        f"{diff.repository}: {diff.from_ref} ({diff.from_commit[:12]}) {ARROW} "
        f"{diff.to_ref} ({diff.to_commit[:12]})",
        f"images: {before['images']}{ARROW}{after['images']} ({len(diff.added)} added, "
        f"{len(diff.removed)} removed, {len(diff.changed)} changed, "
        f"{len(diff.relabelled)} relabelled with the same bytes"
        + (f"; {diff.computed} measured now, lacking a record" if diff.computed else "") + ")",
        _counts_line("labels", before["labels"], after["labels"]),
        _counts_line("outcomes", before["outcomes"], after["outcomes"]),
    ]
    lines += [f"new or changed on {diff.to_ref}: {images_phrase(len(paths), label)}: "
              f"{listing(paths, limit)}" for label, paths in arrivals(diff).items()]
    if diff.transitions:
        lines.append("transitions: " + ", ".join(f"{t} {n}" for t, n in diff.transitions.items()))
    if diff.relabelled:
        shown = [f"{c.path} ({state_name(c.before)}{ARROW}{state_name(c.after)})"
                 for c in diff.relabelled]
        lines.append(f"relabelled, same bytes (a model change): {listing(shown, limit)}")
    if diff.removed:
        lines.append(f"removed: {listing([c.path for c in diff.removed], limit)}")
    for name, shift in diff.metric_shift.items():
        old, new = shift["from"], shift["to"]
        lines.append(f"{name}: median {_fmt(old['median'])} [{_fmt(old['q1'])}, {_fmt(old['q3'])}]"
                     f" {ARROW} {_fmt(new['median'])} [{_fmt(new['q1'])}, {_fmt(new['q3'])}]")
    return lines


# -- reading a side from lakeFS ---------------------------------------------------------------


@dataclass
class Side:
    """One ref's images and their records, as the diff reads or computes them.

    Attributes:
        ref: the ref as given.
        commit: the commit it resolves to.
        records: {image path: record}, one per input image at the commit.
        model_id: the id of the ref's model (what labels what is computed).
        processed: clearlake's latest results on the ref cover its commit (None: not
            checked).
        stored: images whose label comes from a stored, verified record.
        relabelled: images whose stored metrics the ref's model labelled now (their
            record came from another model).
        computed: images measured now (no verified record).
    """

    ref: str
    commit: str
    records: dict[str, dict[str, Any]]
    model_id: str
    processed: bool | None
    stored: int = 0
    relabelled: int = 0
    computed: int = 0

    def summary(self) -> dict[str, Any]:
        """{processed, model_id, stored, relabelled, computed}."""
        return {"processed": self.processed, "model_id": self.model_id, "stored": self.stored,
                "relabelled": self.relabelled, "computed": self.computed}


def resolve(lakefs: LakeFS, repository: str, ref: str) -> str:
    """The commit id `ref` points at.

    Raises:
        NotFoundError: the repository or the ref does not exist (naming it).
    """
    try:
        return lakefs.get_commit(repository, ref).id
    except NotFoundError:
        if not lakefs.repository_exists(repository):
            raise NotFoundError("no such repository", repository=repository) from None
        raise NotFoundError("no such branch, tag or commit", repository=repository,
                            ref=ref) from None


def input_objects(
    lakefs: LakeFS, repository: str, ref: str, inputs: pipeline.Inputs
) -> Iterator[ObjectInfo]:
    """The input images at `ref` (listed a page at a time, no bytes read), in path order;
    clearlake's own folders are skipped without listing what they hold."""
    if inputs.prefix:
        listing: Iterable[ObjectInfo] = lakefs.list_objects(repository, ref, inputs.prefix)
    else:
        listing = (
            entry
            for top in lakefs.list_objects(repository, ref, delimiter="/")
            if not top.path.startswith(layout.NEVER_INPUTS)
            for entry in ((top,) if top.change != "prefix"
                          else lakefs.list_objects(repository, ref, top.path))
        )
    return (o for o in listing if inputs.matches(o.path))


def stored_records(
    lakefs: LakeFS, repository: str, commit: str, images: Mapping[str, ObjectInfo],
    *, key: bytes, model_id: str, branch: str | None = None, tables: bool = True,
) -> dict[str, dict[str, Any]]:
    """The verified record of each image at `commit` that has one, {path: record}.

    With `tables`, the branch tables come first (one object each, every record of a
    run): `branch`'s own, then others (a merged branch's) while images lack a record;
    that suits a whole ref. A record counts only for the image's path and lakeFS
    checksum; among several, one by `model_id` wins. Images the tables miss (all of
    them without `tables`) are looked up under `_clearlake/records/`, in few listing
    requests.
    """
    found: dict[str, dict[str, Any]] = {}

    def offer(record: dict[str, Any]) -> None:
        image = images.get(record.get("path", ""))
        if image is None or record.get("checksum") != image.checksum:
            return
        held = found.get(image.path)
        if held is None or (held.get("model_id") != model_id
                            and record.get("model_id") == model_id):
            found[image.path] = record

    if tables:
        # A table in one object (layouts 1, 2) is read whole; of a table in parts, only
        # the parts that hold these images.
        names: list[str] = []
        parts: dict[str, dict[str, str]] = {}  # folder → bits → object
        for o in lakefs.list_objects(repository, commit, layout.TABLES_PREFIX):
            folder, _, name = o.path.rpartition("/")
            if f"{folder}/" == layout.TABLES_PREFIX and name.endswith(".parquet"):
                names.append(o.path)
            elif (bits := part_bits(name)) is not None:
                parts.setdefault(folder, {})[bits] = o.path
        for of_folder in parts.values():
            names += [of_folder[bits] for bits in parts_touched(of_folder, images)
                      if bits in of_folder]  # (none holds an image whose part went missing)
        own = (layout.table_folder(branch), layout.legacy_table_path(branch)) if branch else ()
        for name in sorted(names, key=lambda p: (not p.startswith(own), p)):
            if len(found) == len(images):
                break  # a branch that merged others holds their (older) tables too
            for record in iter_table_records(
                    lakefs.get_object(repository, commit, name), key=key):
                offer(record)
    missing = [p for p in images if p not in found]
    for start in range(0, len(missing), RECORD_LOOKUP_CHUNK):
        chunk = {layout.record_path(p): p for p in missing[start:start + RECORD_LOOKUP_CHUNK]}
        for record_key, data in lakefs.read_existing(repository, commit, chunk).items():
            record = verified_record(data, key, path=chunk[record_key])
            if record is not None:
                offer(record)
    return found


def is_processed(lakefs: LakeFS, repository: str, commit: str, key: bytes) -> bool:
    """True when clearlake's latest results on `commit`'s history cover it."""
    latest = latest_results(lakefs, repository, commit, key)
    if latest is None:
        return False
    source = pipeline.source_of(lakefs, repository, commit, key)
    return lakefs.is_ancestor(repository, source, latest[1].source_commit)


def label_images(
    lakefs: LakeFS, repository: str, ref: str, commit: str, images: Mapping[str, ObjectInfo],
    model: Model, *, key: bytes, store: MetricsStore | None = None, tables: bool = True,
    processed: bool | None = None, batch_size: int = pipeline.DEFAULT_BATCH_SIZE,
    metric_set: MetricSet | None = None,
) -> Side:
    """`images` (objects at `commit`) with a record each, labelled by `model`: a stored,
    verified record where there is one (labelled again from its metrics if another
    model labelled it), else measured now (`pipeline.measure_batch`, which reuses the
    metrics store's analyses and reads bytes only for what it has never seen) with
    `metric_set` (default: what a run at `commit` computes, `scripts.metrics_at`)."""
    branch = ref if ref != commit else None
    records = stored_records(lakefs, repository, commit, images, key=key, model_id=model.id,
                             branch=branch, tables=tables)
    side = Side(ref, commit, {}, model.id, processed)
    other_model = [r for r in records.values() if r.get("model_id") != model.id]
    side.stored = len(records) - len(other_model)
    if other_model:
        relabelled = pipeline.relabel(other_model, model, RUN_ID, key=key)
        side.relabelled = len(relabelled)
        records.update((r["path"], r) for r in relabelled)
    missing = [pipeline.Datum(o.path, o.checksum, o.size)
               for path, o in images.items() if path not in records]
    if missing:
        store = store or MetricsStore(lakefs)
        if metric_set is None:
            metric_set = scripts.metrics_at(lakefs, repository, commit)
        for start in range(0, len(missing), batch_size):
            batch = missing[start:start + batch_size]
            measured = pipeline.measure_batch(lakefs, store, repository, commit, batch, RUN_ID,
                                              metric_set=metric_set)
            records.update((r["path"], r)
                           for r in pipeline.label(measured, model, commit, RUN_ID, key=key))
        side.computed = len(missing)
    side.records = {p: records[p] for p in sorted(records)}
    return side


def read_side(
    lakefs: LakeFS, repository: str, ref: str, *, key: bytes,
    inputs: pipeline.Inputs | None = None, store: MetricsStore | None = None,
) -> Side:
    """Every input image of `ref`, labelled by the ref's own model (see `label_images`)."""
    commit = resolve(lakefs, repository, ref)
    model, _ = pipeline.load_model(lakefs, repository, commit)
    images = {o.path: o for o in input_objects(lakefs, repository, commit,
                                                inputs or pipeline.Inputs())}
    return label_images(lakefs, repository, ref, commit, images, model, key=key, store=store,
                        processed=is_processed(lakefs, repository, commit, key))


def merge_sides(
    lakefs: LakeFS, repository: str, source: str, destination: str, *, key: bytes,
    inputs: pipeline.Inputs | None = None, store: MetricsStore | None = None,
    stat_threads: int = 4,
) -> tuple[Side, Side]:
    """What a merge of `source` into `destination` touches: (the destination's images the
    merge changes or removes, every image it brings in), both labelled with the
    destination's model — what the quality gate judges by.

    Only what the merge changes is read (lakeFS's three-dot diff, records one image at
    a time): the cost grows with the change, not with the repository, as a gate that
    lakeFS gives a minute needs. `compare` of the two is the merge's quality diff.

    Both sides are measured with the metrics a run on the destination computes (its
    pinned scripts included, `scripts.metrics_at`): the destination's model reads them,
    and, as with its policy, a branch cannot bring code of its own into the gate.
    """
    inputs = inputs or pipeline.Inputs()
    destination_commit = resolve(lakefs, repository, destination)
    source_commit = resolve(lakefs, repository, source)
    model, _ = pipeline.load_model(lakefs, repository, destination_commit)
    metric_set = scripts.metrics_at(lakefs, repository, destination_commit)
    changes = [c for c in pipeline.input_changes(lakefs, repository, destination_commit,
                                                 source_commit, inputs, three_dot=True)
               if inputs.matches(c.path)]
    incoming = {c.path: c for c in changes if c.change != "removed"}

    def on_destination(path: str) -> ObjectInfo | None:
        try:
            return lakefs.stat_object(repository, destination_commit, path)
        except NotFoundError:  # the destination does not have it (any more)
            return None

    with ThreadPoolExecutor(max_workers=stat_threads) as pool:
        found = pool.map(on_destination, [c.path for c in changes if c.change != "added"])
        present = {o.path: o for o in found if o is not None}
    before = label_images(lakefs, repository, destination, destination_commit, present, model,
                          key=key, store=store, tables=False, metric_set=metric_set)
    after = label_images(lakefs, repository, source, source_commit, incoming, model, key=key,
                         store=store, tables=False, metric_set=metric_set)
    return before, after


def quality_diff(
    lakefs: LakeFS, repository: str, from_ref: str, to_ref: str, *, key: bytes,
    inputs: pipeline.Inputs | None = None, store: MetricsStore | None = None,
) -> QualityDiff:
    """The quality diff between two refs of `repository` (see the module docstring).

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        from_ref: the side before (branch, tag or commit).
        to_ref: the side after.
        key: the signing key records must verify with (`provenance.signing_key()`).
        inputs: which paths are images (default: any image file outside clearlake's folders).
        store: the metrics store to reuse analyses from (default `MetricsStore(lakefs)`).

    Raises:
        NotFoundError: the repository or a ref does not exist (naming it).
    """
    before = read_side(lakefs, repository, from_ref, key=key, inputs=inputs, store=store)
    after = read_side(lakefs, repository, to_ref, key=key, inputs=inputs, store=store)
    return compare(before.records, after.records, repository=repository,
                   from_ref=from_ref, to_ref=to_ref, from_commit=before.commit,
                   to_commit=after.commit, computed=before.computed + after.computed,
                   sides={"from": before.summary(), "to": after.summary()})
