"""Commands: `clearlake classify` and `clearlake lineage`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated

import typer

from clearlake.cli.app import app, console
from clearlake.errors import ClearlakeError, ConfigurationError, LakeFSError


def use_stack_prefect() -> None:
    """Point Prefect at the local stack's server unless PREFECT_API_URL says otherwise.

    Must run before Prefect is imported: it reads its settings on import.
    """
    from clearlake.config import prefect_api_url

    os.environ.setdefault("PREFECT_API_URL", prefect_api_url())


@app.command()
def classify(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    branch: Annotated[str, typer.Argument(help="Branch whose results are updated.")],
    commit: Annotated[str | None, typer.Option(help="Commit to process (default: head).")] = None,
    prefix: Annotated[str, typer.Option(help="Only images under this folder.")] = "",
    glob: Annotated[str | None, typer.Option(help="fnmatch pattern below the prefix.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Most images per Dask task (default: the flow's).")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler (default: a LocalCluster).")
    ] = None,
    dask_cluster: Annotated[
        str | None, typer.Option(help="Or a saved DaskCluster block, by name.")
    ] = None,
) -> None:
    """Run the classify-commit flow for a branch now, and print its summary."""
    use_stack_prefect()
    import importlib

    from clearlake.flows import CLASSIFY_RUN_IMPORTS
    from clearlake.flows.classify import classify_commit

    for module in CLASSIFY_RUN_IMPORTS:  # as a triggered run has them (see there)
        importlib.import_module(module)

    # The default batch size lives in one place, the flow (chosen by bench.pipeline).
    sizing = {} if batch_size is None else {"batch_size": batch_size}
    try:
        summary = classify_commit(repository, branch, commit=commit, prefix=prefix, glob=glob,
                                  dask_address=dask_address, dask_cluster=dask_cluster,
                                  **sizing)
    except ClearlakeError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=1) from error
    console.print_json(json.dumps(summary))


@app.command()
def lineage(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    path: Annotated[str, typer.Argument(help="Path of the image in the repository.")],
    ref: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
) -> None:
    """Where an image's metrics came from, which model labelled it, and its label history."""
    from rich.table import Table

    from clearlake.lakefs import LakeFS
    from clearlake.lineage import lineage as find_lineage

    try:
        found = find_lineage(LakeFS(), repository, path, ref)
    except (LakeFSError, ConfigurationError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=1) from error
    r = found.record
    computed = r["computed_at"]
    console.print(f"[bold]{repository}/{ref}: {path}[/bold]")
    console.print(f"  checksum     {r['checksum']} (lakeFS), sha256 {r['sha256']}")
    console.print(f"  label        {r['label']}  {r['probabilities']}")
    console.print(f"  outcome      {r['outcome']} {r['reason']}")
    console.print(f"  model        {r['model_id']}")
    console.print(f"  metrics      {r['origin']} in run {r['run_id']} at source commit "
                  f"{r['source_commit'][:12]}")
    console.print(f"  computed at  {computed.get('repository', repository)}@"
                  f"{computed.get('commit', '')[:12]}:{computed.get('path', '')} "
                  f"in run {computed.get('run_id', '')}")
    table = Table("results commit", "date", "label", "checksum", "source commit", "metrics",
                  "model", "run")
    for h in found.history:
        when = datetime.fromtimestamp(h.date, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(h.commit[:12], when, str(h.label), h.checksum[:12], h.source_commit[:12],
                      h.origin, h.model_id, h.run_id[:8])
    console.print(table)


@app.command()
def reconcile(
    repository: Annotated[
        list[str] | None, typer.Option(help="Only this repository (repeat); default all.")
    ] = None,
) -> None:
    """Run the reconcile flow now: catch up on missed commits, settle temporary branches."""
    use_stack_prefect()
    from clearlake.flows.reconcile import reconcile as reconcile_flow

    console.print_json(json.dumps(reconcile_flow(repository or None)))
