"""Commands: `clearlake init-repo`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from clearlake.cli.app import app
from clearlake.errors import LakeFSError

console = Console()


@app.command("init-repo")
def init_repo(
    name: Annotated[str, typer.Argument(help="Repository name.")],
    storage_namespace: Annotated[
        str | None,
        typer.Option(help="Where lakeFS stores the data; default local://NAME (local blockstore)."),
    ] = None,
    default_branch: Annotated[str, typer.Option(help="The default branch.")] = "main",
) -> None:
    """Create a lakeFS repository with its default branch. Harmless when it exists."""
    from clearlake.store import LakeFS

    try:
        created = LakeFS().create_repository(
            name, storage_namespace or f"local://{name}", default_branch
        )
    except (LakeFSError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=1) from error
    console.print(f"repository {name!r} {'created' if created else 'already exists'}")
