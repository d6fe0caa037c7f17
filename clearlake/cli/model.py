"""Commands: sample-data, train, evaluate (the classifier's life cycle)."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clearlake.cli.app import app, make_console

if TYPE_CHECKING:
    from rich.console import Console

    from clearlake.quality.classifier import Evaluation


@app.command("sample-data")
def sample_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the images and labels.csv to.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    per_class: Annotated[
        int,
        typer.Option(
            "--per-class", min=1, help="Images per class (good, blurry, moire) per source photo."
        ),
    ] = 8,
    sources: Annotated[
        str | None,
        typer.Option("--sources", help="Comma-separated source photo ids (default: all found)."),
    ] = None,
    min_side: Annotated[
        int, typer.Option("--min-side", min=32, help="Smallest short side of an image, px.")
    ] = 256,
    generator: Annotated[
        str,
        typer.Option(
            "--generator",
            help="Degradation family: a (below); b (independent: box, upscale, shake and "
            "ring blur; aliased weave, Bayer, LCD and print moiré; soft frames as good); or c "
            "(independent again: polygonal-aperture, arc-motion, resampling and field blur; "
            "delta-panel, line-screen and mesh moiré resampled under perspective; hard-JPEG "
            "images as good); or d (for training: noisy, sharpened and video-codec blur; "
            "fabric, double-net and newsprint moiré; phone-processed, shallow-focus and hazy "
            "images as good); or e (for training: rescaled, JPEG-damaged and moving-subject "
            "blur; screen-through-Bayer, blinds and brick moiré; night, lens and tone-mapped "
            "images as good).",
        ),
    ] = "a",
) -> None:
    """Make labelled sample images from the photographs installed packages ship.

    Sources: scikit-learn's and scikit-image's photographs, smooth content included
    (moon, retina, microscopy, text and page scans; no drawings or synthetic
    patterns); labels.csv's `content` column says which. Every image is a crop of
    a photo downscaled (never upscaled) to a short side from --min-side up to the
    crop's native size, then (generator a):
    good = as is; blurry = Gaussian blur σ 1–5 px, motion blur 5–25 px at any
    angle, or defocus (disk) radius 1.5–6 px; moire = fine gratings (period
    2.2–8 px, amplitude 5–25 %), a photographed RGB-stripe screen (pitch 3–6 px,
    camera 2–12 % off in pitch, 0–6° rotated), a halftone dot screen decimated
    without antialiasing, or screen moiré surviving only as colour bands. 30 % of
    images get noise σ 1–3; JPEG quality 80–95. Writes labels.csv
    (path,label,sublabel,source,content). See clearlake.quality.sample_data.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from clearlake.quality.sample_data import find_sources, generate

    console = make_console()
    wanted = [s.strip() for s in sources.split(",") if s.strip()] if sources else None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("generating", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            labels = generate(
                out_dir,
                seed=seed,
                per_class=per_class,
                sources=wanted,
                min_side=min_side,
                generator=generator,
                progress=tick,
            )
        except ValueError as exc:
            if "generator" in str(exc):
                raise typer.BadParameter(str(exc), param_hint="--generator") from exc
            known = ", ".join(s.id for s in find_sources())
            raise typer.BadParameter(f"{exc} (available: {known})", param_hint="--sources") from exc
    with labels.open(newline="") as fh:
        count = sum(1 for _ in csv.DictReader(fh))
    console.print(f"wrote {count} images and [bold]{labels}[/bold]")


LabelsCsv = Annotated[
    list[Path],
    typer.Argument(
        help="CSV(s) with columns path,label,source (+ optional sublabel, content); several "
        "sets are pooled, and a source id names the same photograph in all of them.",
        exists=True,
        dir_okay=False,
    ),
]
ImagesDir = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="Folder the CSVs' paths are relative to (default: each CSV's own folder).",
        exists=True,
        file_okay=False,
    ),
]

# Options `train` and `evaluate` share.
Folds = Annotated[
    int,
    typer.Option("--folds", min=0,
                 help="Cross-validation folds by source; 0 = leave one source out."),
]
UseSublabels = Annotated[
    bool,
    typer.Option("--sublabels/--no-sublabels",
                 help="Fit per sub-label (collapsed into labels), when the CSV has them."),
]
ClassifierKind = Annotated[
    str,
    typer.Option("--classifier", help="logistic (L2-penalised logistic regression, the "
                 "default) or naive_bayes (GaussianNB)."),
]
Jobs = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Worker processes (default: all).")
]


@app.command("train")
def train_command(
    labels_csv: LabelsCsv,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model JSON.")],
    images: ImagesDir = None,
    folds: Folds = 0,
    use_sublabels: UseSublabels = True,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated metric names the model reads, any "
                     "subset of `clearlake metrics list` (default: the packaged model's)."),
    ] = None,
    kind: ClassifierKind = "logistic",
    jobs: Jobs = None,
) -> None:
    """Train the classifier on labelled images and write it as JSON.

    The model records its cross-validated scores, with folds grouped by source
    photograph (an image's siblings from the same photo are never on both sides),
    and the version of every metric it reads. Only the metrics it reads are computed.
    """
    from clearlake.quality.classifier import train

    console = make_console()
    chosen = _features(features)
    data = _load_labelled(labels_csv, images, jobs, console, need_sources=True, features=chosen)
    model = train(
        data.rows,
        data.labels,
        data.sources,
        sublabels=data.sublabels if use_sublabels else None,
        checksums=data.checksums,
        folds=folds,
        features=chosen,
        kind=_kind(kind),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    cv = model.info["cross_validation"]
    console.print(
        f"model [bold]{model.id}[/bold] → {out}: classes {', '.join(model.classes)}; "
        f"cross-validated macro-F1 {cv['macro_f1']:.3f}, accuracy {cv['accuracy']:.3f} "
        f"({cv['split']})"
    )


@app.command("evaluate")
def evaluate_command(
    labels_csv: LabelsCsv,
    images: ImagesDir = None,
    test_on: Annotated[
        list[Path] | None,
        typer.Option(
            "--test-on",
            help="Train on LABELS_CSV's sets only and test on this set (repeatable), still by "
            "source: a test photograph is in no training fold, under any set. E.g. train on "
            "one degradation generator, test on another.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    model_path: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Evaluate this model on the whole set instead of cross-validating.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    folds: Folds = 0,
    use_sublabels: UseSublabels = True,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated metric names (default: the model's)."),
    ] = None,
    kind: ClassifierKind = "logistic",
    jobs: Jobs = None,
) -> None:
    """Report confusion matrix, per-class precision/recall/F1 and macro-F1.

    Without --model: trains on some source photographs and predicts the others
    (folds grouped by source, never by image; several CSVs are pooled, so a
    photograph's variants from every set are held out together). With --model:
    that model's predictions on the whole set. When the CSVs have a `content`
    column (as `sample-data` writes), the good-image recall on smooth content is
    reported too.
    """
    from clearlake.quality.classifier import (
        Model,
        ModelError,
        cross_validate,
        evaluate_model,
    )
    from clearlake.quality.registry import available

    console = make_console()
    if model_path is not None:
        try:
            model = Model.load(model_path)
            model.check(available())
        except ModelError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from exc
        data = _load_labelled(labels_csv, images, jobs, console, need_sources=False,
                              features=model.features)
        result = evaluate_model(model, data.rows, data.labels)
    else:
        chosen = _features(features)
        tests = list(test_on or [])
        data = _load_labelled([*labels_csv, *tests], images, jobs, console, need_sources=True,
                              features=chosen)
        result = cross_validate(
            data.rows,
            data.labels,
            data.sources,
            sublabels=data.sublabels if use_sublabels else None,
            features=chosen,
            folds=folds,
            kind=_kind(kind),
            held_out=[s in tests for s in data.sets] if tests else None,
        )
        if tests:
            data = data.subset([s in tests for s in data.sets])
    _print_evaluation(console, result)
    _print_good_recall(console, result, data)


# --- helpers ------------------------------------------------------------------------------


@dataclass
class _Labelled:
    rows: list[dict[str, float]]
    labels: list[str]
    sublabels: list[str]
    sources: list[str]
    checksums: list[str]
    contents: list[str]
    sets: list[Path]  # the CSV each row comes from

    def subset(self, selected: list[bool]) -> _Labelled:
        """The selected rows."""
        def keep(values: list) -> list:
            return [v for v, s in zip(values, selected, strict=True) if s]
        return _Labelled(*(keep(getattr(self, f.name)) for f in fields(self)))


def _kind(text: str) -> str:
    """A classifier kind from the option, or a usage error naming the known ones."""
    from clearlake.quality.classifier import FORMATS

    if text not in FORMATS:
        raise typer.BadParameter(f"{text!r}; known: {', '.join(FORMATS)}",
                                 param_hint="--classifier")
    return text


def _features(text: str | None) -> tuple[str, ...]:
    """Metric names from a comma-separated option (default: the packaged model's)."""
    from clearlake.errors import ConfigurationError
    from clearlake.quality.classifier import DEFAULT_FEATURES
    from clearlake.quality.registry import available

    if not text:
        return DEFAULT_FEATURES
    chosen = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    try:
        available().select(chosen)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--features") from exc
    return chosen


def _load_labelled(
    labels_csvs: list[Path], images: Path | None, jobs: int | None, console: Console, *,
    need_sources: bool, features: tuple[str, ...],
) -> _Labelled:
    """Read the CSVs, then decode every listed image on all cores and compute `features`."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TimeRemainingColumn,
    )

    entries: list[dict[str, str]] = []
    paths: list[Path] = []
    sets: list[Path] = []
    for labels_csv in labels_csvs:
        with labels_csv.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            listed = list(reader)
        required = {"path", "label"} | ({"source"} if need_sources else set())
        if not required <= columns:
            raise typer.BadParameter(
                f"{labels_csv} needs columns {sorted(required)} (has {sorted(columns)}); "
                "'source' (the source photograph) is what folds are grouped by",
                param_hint="LABELS_CSV",
            )
        if not listed:
            raise typer.BadParameter(f"{labels_csv} lists no images", param_hint="LABELS_CSV")
        folder = labels_csv.parent if images is None else images
        entries += listed
        paths += [folder / e["path"] for e in listed]
        sets += [labels_csv] * len(listed)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise typer.BadParameter(
            f"{len(missing)} listed image(s) not found, e.g. {missing[0]}", param_hint="--images"
        )
    workers = jobs or os.cpu_count() or 1
    out = _Labelled([], [], [], [], [], [], [])
    skipped: list[str] = []
    with (
        Progress(
            "measuring",
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
        # forkserver: never fork this process, which runs the progress bar's thread.
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool,
    ):
        task = progress.add_task("measuring", total=len(paths))
        chunk = max(1, min(16, len(paths) // (4 * workers) or 1))
        measure = functools.partial(_analyse_file, features=features)
        for entry, labels_set, result in zip(
            entries, sets, pool.map(measure, paths, chunksize=chunk), strict=True
        ):
            progress.advance(task)
            checksum, outcome, reason, metrics = result
            if metrics is None:
                skipped.append(f"{entry['path']}: {outcome} ({reason})")
                continue
            out.rows.append(metrics)
            out.labels.append(entry["label"])
            out.sublabels.append(entry.get("sublabel") or entry["label"])
            out.sources.append(entry.get("source") or "")
            out.checksums.append(checksum)
            out.contents.append(entry.get("content") or "")
            out.sets.append(labels_set)
    for line in skipped:
        console.print(f"[yellow]skipped[/yellow] {line}")
    if not out.rows:
        raise typer.BadParameter("no listed image could be decoded", param_hint="LABELS_CSV")
    return out


def _analyse_file(
    path: Path, features: tuple[str, ...]
) -> tuple[str, str, str, dict[str, float] | None]:
    """Decode one image and compute `features` (None for metrics when one failed on it)."""
    from clearlake.quality.analyse import analyse
    from clearlake.quality.registry import available

    result = analyse(path.read_bytes(), metric_set=available().select(features))
    if result.failures:
        return result.sha256, "metric_failed", "; ".join(result.failures.values()), None
    return result.sha256, str(result.outcome), result.reason, result.metrics


def _print_good_recall(console: Console, result: Evaluation, data: _Labelled) -> None:
    """Good-image recall where false alarms concentrate: on content that is smooth by
    nature (the `content` column of `sample-data`'s sets), per source, and on soft frames
    (the `good_soft` sub-label)."""
    from rich.table import Table

    smooth = [c == "smooth" for c in data.contents]
    groups = {f"{source} (smooth)": [s and src == source for s, src in
                                     zip(smooth, data.sources, strict=True)]
              for source in sorted({src for s, src in zip(smooth, data.sources, strict=True)
                                    if s})}
    if any(smooth):
        groups["all smooth content"] = smooth
    soft = [s == "good_soft" for s in data.sublabels]
    if any(soft):
        groups["soft frames (good_soft)"] = soft
    table = Table(title="Good-image recall")
    for column in ("images", "good", "recalled", "recall"):
        table.add_column(column, justify="left" if column == "images" else "right")
    for name, selected in groups.items():
        good = result.subset(selected, name).per_class().get("good", {"support": 0})
        if good["support"]:
            table.add_row(name, str(good["support"]),
                          str(round(good["recall"] * good["support"])), f"{good['recall']:.3f}")
    if table.row_count:
        console.print(table)


def _print_evaluation(console: Console, result: Evaluation) -> None:
    from rich.table import Table

    classes = result.classes
    matrix = result.confusion
    cm = Table(title=f"Confusion matrix — {result.split}", show_lines=False)
    cm.add_column("true \\ predicted", style="bold")
    for c in classes:
        cm.add_column(c, justify="right")
    for i, c in enumerate(classes):
        cm.add_row(c, *[str(v) for v in matrix[i]])
    console.print(cm)
    per = Table(title="Per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for c, s in result.per_class().items():
        per.add_row(
            c, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])
        )
    console.print(per)
    console.print(
        f"macro-F1 [bold]{result.macro_f1:.3f}[/bold]   accuracy {result.accuracy:.3f}   "
        f"images {len(result.truth)}"
    )


# --- clearlake metrics … --------------------------------------------------------------------

metrics_app = typer.Typer(help="Metrics: which exist, their versions, where they come from.",
                          no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("list")
def metrics_list(
    models: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="Also show which metrics this model file reads "
                     "(repeatable).", exists=True, dir_okay=False),
    ] = None,
    repository: Annotated[
        str | None,
        typer.Option("--repository", "-r", help="A lakeFS repository: add the metrics its "
                     "_clearlake/config.yaml pins and the model trained into it."),
    ] = None,
    ref: Annotated[str, typer.Option("--ref", help="Branch or commit of --repository.")] = "main",
) -> None:
    """Every metric: name, version, source (built-in, entry point, scripts@commit), and which
    models read it. A metric a model reads at a version nobody computes is listed as missing."""
    from rich.table import Table

    from clearlake.cli.app import fail
    from clearlake.errors import ClearlakeError
    from clearlake.quality.classifier import Model, ModelError
    from clearlake.quality.registry import available

    console = make_console()
    named: list[tuple[str, Model]] = []
    pinned = []
    try:
        named.append((f"packaged {Model.load(None).id}", Model.load(None)))
        for path in models or []:
            model = Model.load(path)
            named.append((f"{path} {model.id}", model))
        if repository:
            from clearlake import pipeline, scripts
            from clearlake.lakefs import LakeFS

            lakefs = LakeFS()
            model, commit = pipeline.load_model(lakefs, repository, ref)
            if commit != pipeline.PACKAGED_MODEL:
                named.append((f"{repository}@{ref} {model.id}", model))
            pin = scripts.configured(lakefs, repository, ref)
            if pin is not None:
                pinned = scripts.load(lakefs, pin)
        metric_set = available(pinned)
    except (ClearlakeError, ModelError) as error:
        raise fail(error) from error
    table = Table(title="clearlake metrics")
    for column in ("name", "version", "source", "used by"):
        table.add_column(column)
    for m in metric_set:
        users = [label for label, model in named if model.metrics.get(m.name) == m.version]
        table.add_row(m.name, m.version, m.source, ", ".join(users) or "-")
    for label, model in named:
        for name, version in model.metrics.items():
            if name not in metric_set or metric_set[name].version != version:
                table.add_row(name, version, "[red]missing[/red]", label)
    console.print(table)


@metrics_app.command("migrate")
def metrics_migrate() -> None:
    """Rewrite the metrics store's analyses from before metrics had versions of their own as
    per-metric documents, in one commit: nothing is computed again. (Until then they are
    read where they are, at one more lookup for each image the store has no document of.)"""
    from clearlake.cli.app import console, fail
    from clearlake.errors import ClearlakeError
    from clearlake.lakefs import LakeFS
    from clearlake.metrics_store import MetricsStore

    try:
        store = MetricsStore(LakeFS())
        versions = store.legacy_versions()
        if not versions:
            console.print(f"{store.repository}: nothing to migrate")
        for version in versions:
            count, commit = store.migrate(version)
            console.print(f"{store.repository}: {count} analyses of {version} migrated "
                          f"(commit {(commit or '')[:12]})")
    except ClearlakeError as error:
        raise fail(error) from error
