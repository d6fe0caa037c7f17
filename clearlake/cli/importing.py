"""Command: `clearlake import` (an S3 prefix into a branch, zero-copy, then classified)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from clearlake.cli.app import app, console, fail
from clearlake.errors import ClearlakeError

if TYPE_CHECKING:
    from clearlake.lakefs import LakeFS


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(
        help="s3://BUCKET/PREFIX/ to import. lakeFS reads it with its own blockstore "
             "credentials, so it must be storage lakeFS's blockstore can read (for the local "
             "stack: its S3 server, e.g. s3://clearlake/incoming/).")],
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    branch: Annotated[str, typer.Argument(help="Branch the import is committed to.")],
    to: Annotated[str, typer.Option(
        "--to", help="Folder on the branch the objects go to. lakeFS's import replaces "
                     "everything under it.")] = "images/",
    message: Annotated[str | None, typer.Option(
        "--message", "-m", help="Commit message (default: 'Import SOURCE into FOLDER').")] = None,
    replace: Annotated[bool, typer.Option(
        help="Allow a folder that already holds objects (they are replaced).")] = False,
    s3_bucket_block: Annotated[str | None, typer.Option(
        help="A saved prefect-aws S3Bucket block for the source's bucket (its credentials "
             "and endpoint). Default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
             "AWS_ENDPOINT_URL, else the local stack's S3 server and keys.")] = None,
    endpoint_url: Annotated[str | None, typer.Option(
        help="S3-compatible endpoint of the source (default: AWS_ENDPOINT_URL, or the "
             "local stack's S3 server when no AWS keys are set).")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for lakeFS's import before cancelling it.")] = 3600.0,
) -> None:
    """Import an S3 prefix into a branch without copying it, as one commit, then classify it.

    The source must exist and hold objects (checked first); on any error nothing is committed.

    The import's commit fires the post-commit hooks: `clearlake init-repo`'s actions classify it.
    """
    from clearlake.cli.pipeline import use_stack_prefect

    use_stack_prefect()  # before Prefect (and prefect-aws) is imported
    from clearlake import importing
    from clearlake.lakefs import LakeFS

    try:
        parsed = importing.S3Source.parse(source)
        bucket = importing.source_bucket(parsed, block_name=s3_bucket_block,
                                         endpoint_url=endpoint_url)
        lakefs = LakeFS()
        with console.status(f"importing {parsed.uri} into {repository}/{branch}/{to} …") as shown:
            summary, result = importing.import_from_s3(
                lakefs, bucket, repository, branch, to, message, replace=replace,
                timeout_s=timeout,
                progress=lambda n: shown.update(f"importing {parsed.uri}: {n} objects ingested"))
    except (ClearlakeError, FileNotFoundError, ValueError) as error:
        raise fail(error) from error
    console.print(f"imported {result.objects} objects ({summary.size_bytes:,} bytes) from "
                  f"{result.source} into {repository}/{branch}/{result.destination}: commit "
                  f"{result.commit_id[:12]}")
    if result.objects != summary.objects:
        console.print(f"[yellow]warning:[/yellow] the source listed {summary.objects} objects but "
                      f"lakeFS ingested {result.objects}: lakeFS reads the source with its own "
                      f"blockstore credentials and endpoint")
    _follow(lakefs, repository, branch, result.commit_id)


def _follow(lakefs: LakeFS, repository: str, branch: str, commit_id: str) -> None:
    """Say how the classification follows; send the bridge's event if lakeFS's hook failed."""
    from clearlake import importing

    try:
        if not importing.has_clearlake_actions(lakefs, repository, commit_id):
            console.print(f"no clearlake actions in {repository}: nothing classifies this commit "
                          f"by itself. Run `clearlake init-repo {repository}`, or `clearlake "
                          f"classify {repository} {branch}` now")
            return
        run = importing.post_commit_run(lakefs, repository, commit_id)
        if run is None:
            console.print(f"lakeFS ran no post-commit action for it: is branch {branch!r} "
                          f"watched (`clearlake init-repo --watch`)? `clearlake classify "
                          f"{repository} {branch}` classifies it now")
        elif run.status == "completed":
            console.print(f"lakeFS's post-commit hook told clearlake (action run {run.run_id}): "
                          f"the classification follows")
        else:
            event_id = importing.emit_commit_event(repository, branch, commit_id)
            console.print(f"lakeFS's post-commit hook {run.status} (action run {run.run_id}); "
                          f"clearlake sent the event itself ({event_id}): the classification "
                          f"follows")
    except ClearlakeError as error:
        raise fail(error) from error
