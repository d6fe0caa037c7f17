"""Command-line interface: `clearlake …`.

Each module in `COMMAND_MODULES` registers its commands on `clearlake.cli.app.app`
when imported. To add a command, write `clearlake/cli/NAME.py` (light imports at
its top: see `clearlake.cli.app`) and add "NAME" here.
"""

from importlib import import_module

from clearlake.cli.app import app

COMMAND_MODULES = ("importing", "demo", "diff", "model", "pipeline", "repo", "review", "score",
                   "stack")
"""Modules of `clearlake.cli` that register commands, in `--help` order of registration."""

for _name in COMMAND_MODULES:
    import_module(f"clearlake.cli.{_name}")


def main() -> None:
    """Entry point of the `clearlake` console script."""
    app()
