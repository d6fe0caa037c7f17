"""Commands: `clearlake init-repo`, `clearlake merge`, `clearlake gate explain`."""

from __future__ import annotations

from typing import Annotated

import typer

from clearlake.cli.app import app, console, fail
from clearlake.errors import ConfigurationError, HookRejectedError, LakeFSError

gate_app = typer.Typer(help="The pre-merge quality gate.", no_args_is_help=True)
app.add_typer(gate_app, name="gate")



@app.command("init-repo")
def init_repo(
    name: Annotated[str, typer.Argument(help="Repository name.")],
    storage_namespace: Annotated[
        str | None,
        typer.Option(help="Where lakeFS stores the data (e.g. s3://bucket/NAME); default "
                          "$CLEARLAKE_STORAGE_NAMESPACE or lakeFS's default prefix, + NAME."),
    ] = None,
    default_branch: Annotated[str, typer.Option(help="The default branch.")] = "main",
    watch: Annotated[
        list[str] | None, typer.Option(help="Branch pattern to classify (repeat); default all.")
    ] = None,
    protect: Annotated[
        list[str] | None, typer.Option(help="Branch whose merges pass the gate (repeat).")
    ] = None,
) -> None:
    """Create a lakeFS repository and install clearlake's lakeFS actions. Harmless twice."""
    from clearlake.actions import install_actions, render_actions
    from clearlake.stack.services import Stack
    from clearlake.store import LakeFS

    try:
        lakefs = LakeFS()
        created = lakefs.create_repository(name, storage_namespace, default_branch)
        console.print(f"repository {name!r} {'created' if created else 'already exists'}")
        files = render_actions(Stack().bridge_url, watch or (), protect or [default_branch])
        commit = install_actions(lakefs, name, default_branch, files)
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
    if commit:
        console.print(f"installed {', '.join(files)} on {default_branch} ({commit[:12]})")
    else:
        console.print("lakeFS actions already up to date")


def hook_answer(log: str) -> str:
    """The body of the response in a lakeFS webhook log (the gate's reason), else the log."""
    _, found, response = log.partition("\nResponse:\n")
    if not found:
        return log
    _, _, body = response.partition("\n\n")  # after the status line and headers
    return body.split("\nError: ", 1)[0].strip() or log


def _print_hook_logs(repository: str, run_id: str) -> None:
    from clearlake.store import LakeFS

    for hook_id, log in LakeFS().hook_outputs(repository, run_id):
        console.print(f"[bold]hook {hook_id}[/bold] (action run {run_id}):")
        console.print(hook_answer(log), markup=False, highlight=False)


@app.command()
def merge(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    source: Annotated[str, typer.Argument(help="Branch or ref to merge.")],
    destination: Annotated[str, typer.Argument(help="Branch to merge into.")],
    message: Annotated[str, typer.Option("-m", help="Merge message.")] = "",
) -> None:
    """Merge like lakeFS does, but when the quality gate refuses, print its reason."""
    from clearlake.store import LakeFS

    try:
        commit = LakeFS().merge(repository, source, destination,
                               message or f"Merge {source} into {destination}")
    except HookRejectedError as error:
        console.print(f"[red]merge refused by a pre-merge hook[/red]: {error}")
        if error.run_id:
            _print_hook_logs(repository, error.run_id)
        raise typer.Exit(code=2) from error
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
    console.print(f"merged {source} into {destination}: {commit[:12]}")


@gate_app.command("explain")
def explain(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    run_id: Annotated[str, typer.Argument(help="The action run id lakeFS reported.")],
) -> None:
    """Print what the quality gate answered in a lakeFS action run."""
    try:
        _print_hook_logs(repository, run_id)
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
