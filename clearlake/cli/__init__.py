"""Command-line interface: `clearlake …`."""

import clearlake.cli.importing  # noqa: F401  (registers `clearlake import`)
from clearlake.cli import demo, diff, model, pipeline, repo, score, stack  # noqa: F401  (registers the commands)
from clearlake.cli.app import app


def main() -> None:
    """Entry point of the `clearlake` console script."""
    app()
