"""The one Typer application behind the `clearlake` command.

Command modules import `app` (or a sub-app) from here and register themselves;
`clearlake.cli` imports every command module listed in its `COMMAND_MODULES`.
So that `clearlake --help` stays quick, a command module imports at its top only
Typer, the standard library, this module and `clearlake.errors`; everything else
(rich, NumPy, OpenCV, SciPy, scikit-learn, Prefect, the lakeFS SDK, PyArrow) is
imported inside the command that uses it. `tests/unit/test_cli_imports.py` checks it.
Every console the commands print to comes from `make_console` (`clearlake.cli.console`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


def make_console(*, stderr: bool = False) -> Console:
    """The console a command prints to (stdout, or stderr for progress and diagnostics)."""
    from clearlake.cli.console import UnwrappedConsole

    return UnwrappedConsole(stderr=stderr)


class _SharedConsole:
    """The commands' console, made on first use (importing rich costs more than all of
    `clearlake --help`)."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if _SharedConsole._console is None:
            _SharedConsole._console = make_console()
        return getattr(_SharedConsole._console, name)


console: Console = _SharedConsole()  # type: ignore[assignment]

app = typer.Typer(
    name="clearlake",
    help="Versioned, data-driven image-quality pipelines on lakeFS, Prefect and Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain (click) help and usage errors: Typer's rich help imports rich's
    # Markdown, Pygments and tracebacks, ~3× the rest of `clearlake --help`.
    rich_markup_mode=None,
)


def fail(error: Exception) -> typer.Exit:
    """Print an error the user can act on and give the exit to raise (status 1)."""
    console.print(f"[red]error:[/red] {error}")
    return typer.Exit(code=1)
