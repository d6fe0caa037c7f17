"""The one Typer application behind the `clearlake` command.

Command modules import `app` (or a sub-app) from here and register themselves;
`clearlake.cli` imports every command module. Heavy libraries (Prefect, OpenCV,
the lakeFS SDK) are imported inside commands so that `clearlake --help` is quick.
"""

import typer
from rich.console import Console

console = Console()

app = typer.Typer(
    name="clearlake",
    help="Versioned, data-driven image-quality pipelines on lakeFS, Prefect and Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(error: Exception) -> typer.Exit:
    """Print an error the user can act on and give the exit to raise (status 1)."""
    console.print(f"[red]error:[/red] {error}")
    return typer.Exit(code=1)
