"""The one Typer application behind the `clearlake` command.

Command modules import `app` (or a sub-app) from here and register themselves;
`clearlake.cli` imports every command module. Heavy libraries (Prefect, OpenCV,
the lakeFS SDK) are imported inside commands so that `clearlake --help` is quick.
"""

import typer

app = typer.Typer(
    name="clearlake",
    help="Versioned, data-driven image-quality pipelines on lakeFS, Prefect and Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
