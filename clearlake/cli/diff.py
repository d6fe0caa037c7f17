"""Command: `clearlake diff REPO FROM TO` — the quality diff between two refs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from clearlake.cli.app import app, console, fail
from clearlake.errors import ConfigurationError, LakeFSError


@app.command()
def diff(
    repository: Annotated[str, typer.Argument(metavar="REPO", help="lakeFS repository.")],
    from_ref: Annotated[str, typer.Argument(metavar="FROM", help="Branch, tag or commit before.")],
    to_ref: Annotated[str, typer.Argument(metavar="TO", help="Branch, tag or commit after.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole diff as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Most image paths named per line.")] = 10,
) -> None:
    """What changed in the images and their labels between two refs.

    Counts per label and outcome, images added, removed, changed and relabelled (same bytes, new label), label transitions, and metric quartiles.

    Reads clearlake's signed records; an image a side has no record for is measured now (reusing the metrics store) and labelled with that side's model. Nothing is written.
    """  # noqa: E501  (Typer keeps a docstring's line breaks)
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import signing_key
    from clearlake.quality_diff import quality_diff, summary_lines

    try:
        result = quality_diff(LakeFS(), repository, from_ref, to_ref, key=signing_key())
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
        return
    for line in summary_lines(result, limit=limit):
        console.print(line, markup=False, highlight=False)
