"""Command: `clearlake review` — the URL of a ref's review page, with a login link."""

from __future__ import annotations

from typing import Annotated

import typer

from clearlake.cli.app import app, console, fail
from clearlake.errors import ConfigurationError, LakeFSError


def review_url(repository: str, ref: str | None = None, *, bridge_url: str | None = None) -> str:
    """The review page of `ref` (default: the repository's page, its branches), as a
    one-time login link valid 10 minutes.

    `ref` may be `FROM...TO` for the quality diff between two refs.

    Raises:
        NotFoundError: the repository or a ref does not exist.
        ConfigurationError: no signing key (no stack here, and `CLEARLAKE_SIGNING_KEY` unset).
    """
    import urllib.parse

    from clearlake import report
    from clearlake.bridge import BadRequest
    from clearlake.errors import NotFoundError
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import signing_key
    from clearlake.review.app import DIFF_SEPARATOR, checked_ref, ref_url
    from clearlake.review.auth import make_token

    lakefs = LakeFS()
    if not lakefs.repository_exists(repository):
        raise NotFoundError("no such repository", repository=repository)
    for part in ref.split(DIFF_SEPARATOR) if ref else []:
        try:
            checked_ref(part)
        except BadRequest:
            raise ConfigurationError(f"{part!r} is not a lakeFS ref") from None
        try:
            lakefs.get_commit(repository, part)
        except NotFoundError:
            raise NotFoundError("no such branch, tag or commit", repository=repository,
                                ref=part) from None
    base = bridge_url or report.bridge_url()
    target = ref_url(repository, ref) if ref else f"/review/{repository}"
    token = make_token(signing_key(), repository, target)
    return f"{base}/review/_login?{urllib.parse.urlencode({'token': token})}"


@app.command()
def review(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    ref: Annotated[str | None, typer.Argument(
        help="Branch, tag or commit (default: a list of branches); FROM...TO for a diff.")] = None,
) -> None:
    """Print the URL of the review page: thumbnails, filters, lineage (a login link)."""
    try:
        url = review_url(repository, ref)
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
    # Printed alone on its line so that a terminal never wraps it into two links.
    console.print("review page (this link signs you in once, for 10 minutes):")
    console.print(url, soft_wrap=True, markup=False, highlight=False)
