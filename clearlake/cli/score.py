"""Commands: score."""

from clearlake.cli.app import app  # noqa: F401
