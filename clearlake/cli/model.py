"""Commands: model."""

from clearlake.cli.app import app  # noqa: F401
