"""Commands: score."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clearlake.cli.app import app, make_console

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task, TaskID

    from clearlake.quality.score import ScoreResult

_OUTPUT_SUFFIXES = (".parquet", ".csv", ".jsonl")  # = score.OUTPUT_FORMATS, without importing it


@app.command()
def score(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder of images, walked recursively (hidden folders are skipped).",
            exists=True,
            file_okay=False,
            dir_okay=True,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Model JSON (from `clearlake train`); default: the packaged model.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Which metrics to compute and write: 'model' (those the model reads), "
                 "'all' (every built-in and installed metric), or names separated by "
                 "commas (with the model's).",
        ),
    ] = "model",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write one record per file to .parquet, .csv or .jsonl."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Worker processes (default: all cores)."),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            min=1,
            help="Refuse larger images as too_large (default: $CLEARLAKE_MAX_PIXELS or "
                 "52.7 MP, from the per-image memory budget).",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Neither read nor write the metrics cache."),
    ] = False,
    worst: Annotated[
        int, typer.Option("--worst", min=0, help="How many of the worst images to list.")
    ] = 10,
) -> None:
    """Measure and label every image under DIRECTORY on all cores, with a metrics cache.

    Bad files (corrupt, unsupported, too large) are reported, never fatal. The
    cache lives in $CLEARLAKE_CACHE_DIR (default ~/.cache/clearlake/metrics), one entry
    per image and metric version: asking for more metrics later computes only those.
    """
    if out is not None and out.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise typer.BadParameter(
            f"{out.name}: use a .parquet, .csv or .jsonl file name", param_hint="--out"
        )
    if "numpy" not in sys.modules:  # the command's own process (not a test's, say)
        # One BLAS thread here (this process only labels: small matrices), set before
        # NumPy is imported: a process without threads can fork its workers, which then
        # share its imports (see score_directory).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Heavy imports here, so that `clearlake --help` stays fast.
    from clearlake.errors import ConfigurationError
    from clearlake.quality.classifier import Model, ModelError
    from clearlake.quality.memory import keep_freed_memory
    from clearlake.quality.score import (
        ALL_METRICS,
        CacheError,
        metrics_to_compute,
        quiet_opencv,
        score_directory,
        write_records,
    )

    # This process is the command's own: outcomes carry OpenCV's reasons, and it (or the
    # workers it forks) only measures images.
    quiet_opencv()
    keep_freed_memory()
    try:
        loaded = Model.load(model)
        metric_set = metrics_to_compute(loaded, metrics)
    except ModelError as exc:
        make_console().print(f"[red]error:[/red] cannot use the model: {exc}")
        raise typer.Exit(2) from None
    except ConfigurationError as exc:  # an unknown name, or an unloadable plugin
        make_console().print(f"[red]error:[/red] --metrics: {exc}")
        raise typer.Exit(2) from None

    progress: Progress | None = None
    task: TaskID | None = None

    def show(total: int) -> None:
        # Called once the workers are forked: rich is imported only now, while they
        # work (they need none of it), and its display thread starts after the fork.
        nonlocal progress, task
        progress = _progress()
        task = progress.add_task("scoring", total=total)
        progress.start()

    def advance(count: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, count)

    try:
        result = score_directory(
            directory,
            model=loaded,
            metric_set=metric_set,
            jobs=jobs,
            max_pixels=max_pixels,
            use_cache=not no_cache,
            on_start=show,
            on_progress=advance,
        )
    except CacheError as exc:
        make_console().print(
            f"[red]error:[/red] {exc}\n(set CLEARLAKE_CACHE_DIR, or use --no-cache)")
        raise typer.Exit(2) from None
    finally:
        if progress is not None:
            progress.stop()
    console = make_console()
    if out is not None:
        write_records(result.records, out)
    _print_summary(console, result, worst, out, every_metric=metrics == ALL_METRICS)


def _progress() -> Progress:
    """A progress bar with count, rate (images/s), elapsed time and ETA, on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Images per second, averaged by rich over its recent samples."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("… img/s" if speed is None else f"{speed:,.1f} img/s", style="cyan")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=make_console(stderr=True),
        transient=False,
    )


def _print_summary(
    console: Console, result: ScoreResult, worst: int, out: Path | None, every_metric: bool
) -> None:
    """Counts per outcome and label, the files that could not be scored, the worst images."""
    from rich.table import Table

    from clearlake.quality.score import worst as worst_records

    total = len(result.records)
    rate = total / result.elapsed if result.elapsed > 0 else 0.0
    console.print(
        f"{total:,} files in {result.elapsed:.2f} s ({rate:,.1f}/s): "
        f"{result.computed:,} measured, {result.cached:,} from cache, "
        f"{result.hashed:,} read and hashed"
    )

    counts = Table(title="Files", show_edge=False)
    counts.add_column("outcome / label")
    counts.add_column("count", justify="right")
    for outcome, count in sorted(result.outcomes.items()):
        counts.add_row(f"outcome: {outcome}", f"{count:,}")
    for label, count in sorted(result.labels.items()):
        counts.add_row(f"label: {label}", f"{count:,}")
    console.print(counts)

    failed = [r for r in result.records if r["outcome"] != "ok"]
    if failed:
        bad = Table(title=f"Not scored ({len(failed):,})", show_edge=False)
        bad.add_column("path", overflow="fold")
        bad.add_column("outcome")
        bad.add_column("reason", overflow="fold")
        for record in failed[: max(worst, 1)]:
            bad.add_row(record["path"], record["outcome"], record["reason"])
        if len(failed) > max(worst, 1):
            bad.add_row("…", "", f"{len(failed) - max(worst, 1):,} more")
        console.print(bad)

    rows = worst_records(result, worst) if worst else []
    if rows:
        by_good = "good" in result.classes
        table = Table(title="Worst images" + (" (lowest P(good))" if by_good else ""),
                      show_edge=False)
        table.add_column("path", overflow="fold")
        table.add_column("label")
        for name in result.classes:
            table.add_column(f"P({name})", justify="right")
        for record in rows:
            table.add_row(
                record["path"],
                record["label"],
                *(f"{record['probabilities'][name]:.3f}" for name in result.classes),
            )
        console.print(table)
    if out is not None:
        more = "" if every_metric else " (--metrics all: every metric)"
        console.print(f"wrote {total:,} records with {len(result.metrics)} metrics to {out}{more}")
