"""Commands: `clearlake init-repo`, `clearlake merge`, `clearlake gate explain`."""

from __future__ import annotations

import urllib.parse
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
    from clearlake.lakefs import LakeFS
    from clearlake.stack.services import Stack

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
    """What a hook answered, from lakeFS's log of its webhook call: the response's body
    (the gate's verdict), else lakeFS's error line (a hook that got no answer). Never
    the request: lakeFS logs its headers and body, which are no reader's business."""
    log = log.replace("\r\n", "\n")
    _, found, response = log.partition("\nResponse:\n")
    if found:
        _, _, body = response.partition("\n\n")  # after the status line and headers
        body = body.split("\nError: ", 1)[0].strip()
        if body:
            return body
    errors = [line.removeprefix("Error: ") for line in log.splitlines()
              if line.startswith("Error: ")]
    return errors[-1] if errors else "the hook left no answer in its log"


def action_run_url(endpoint: str, repository: str, run_id: str) -> str:
    """The page of an action run in the lakeFS web UI (its route in lakeFS's
    webui/src/pages/index.jsx: repositories/:repoId/actions/:runId)."""
    return (f"{endpoint.rstrip('/')}/repositories/{urllib.parse.quote(repository, safe='')}"
            f"/actions/{urllib.parse.quote(run_id, safe='')}")


def _print_hook_answers(repository: str, run_id: str) -> None:
    """Each hook's answer in an action run, once, and the run's page in the lakeFS UI."""
    from clearlake.lakefs import LakeFS

    lakefs = LakeFS()
    answers = lakefs.hook_outputs(repository, run_id)
    for hook_id, log in answers:
        if len(answers) > 1:
            console.print(f"hook {hook_id}:", markup=False, highlight=False)
        console.print(hook_answer(log), markup=False, highlight=False)
    console.print(f"action run: {action_run_url(lakefs.settings.endpoint, repository, run_id)}",
                  markup=False, highlight=False)


@app.command()
def merge(
    repository: Annotated[str, typer.Argument(help="lakeFS repository.")],
    source: Annotated[str, typer.Argument(help="Branch or ref to merge.")],
    destination: Annotated[str, typer.Argument(help="Branch to merge into.")],
    message: Annotated[str, typer.Option("-m", help="Merge message.")] = "",
) -> None:
    """Merge like lakeFS does, but when the quality gate refuses, print its reason."""
    from rich.markup import escape

    from clearlake.lakefs import LakeFS

    try:
        commit = LakeFS().merge(repository, source, destination,
                               message or f"Merge {source} into {destination}")
    except HookRejectedError as error:
        why = ":" if error.run_id else f": {str(error).splitlines()[0]}"
        console.print(f"[red]merge of {escape(source)} into {escape(destination)} refused by a "
                      f"pre-merge hook[/red]{escape(why)}")
        if error.run_id:
            _print_hook_answers(repository, error.run_id)
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
        _print_hook_answers(repository, run_id)
    except (LakeFSError, ConfigurationError) as error:
        raise fail(error) from error
