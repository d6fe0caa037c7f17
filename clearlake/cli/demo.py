"""Command: `clearlake demo` — the main job, end to end, narrated."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clearlake.cli.app import app

console = Console()
DEMO_REPO = "clearlake-demo"


def step(text: str) -> None:
    """Narrate one step of the demo."""
    console.rule(f"[bold cyan]{text}")


def lakectl(*args: str) -> str:
    """Run lakectl against the local stack, echoing the command (never its credentials)."""
    from clearlake.config import lakefs_settings
    from clearlake.stack.install import lakectl_environment

    settings = lakefs_settings()
    env = lakectl_environment(
        settings.endpoint, settings.access_key_id, settings.secret_access_key.get_secret_value()
    )
    console.print(f"[dim]$ lakectl {' '.join(args)}[/dim]")
    done = subprocess.run(["lakectl", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        console.print(done.stdout, done.stderr, markup=False)
        raise typer.Exit(code=1)
    return done.stdout


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where sample images are generated.")] = Path(
        ".clearlake/demo"
    ),
) -> None:
    """Start the stack, create a repository, commit sample images with lakectl, score them."""
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack
    from clearlake.store import LakeFS

    step("1. Start the local stack (lakeFS with its web UI, Prefect server)")
    install_lakefs(report=console.print)
    stack = Stack()
    stack.up(report=console.print)

    step(f"2. Create the repository {DEMO_REPO!r}")
    lakefs = LakeFS()
    created = lakefs.create_repository(DEMO_REPO, f"local://{DEMO_REPO}")
    console.print(f"repository {DEMO_REPO!r} {'created' if created else 'already exists'}")

    step("3. Generate labelled sample photographs (good, blurry, moiré)")
    images = workdir / "images"
    subprocess.run(["clearlake", "sample-data", str(images)], check=True)

    step("4. Upload them with lakectl on a branch and commit")
    if "ingest" not in {name for name, _ in lakefs.list_branches(DEMO_REPO)}:
        lakectl(
            "branch",
            "create",
            f"lakefs://{DEMO_REPO}/ingest",
            "--source",
            f"lakefs://{DEMO_REPO}/main",
        )
    lakectl(
        "fs", "upload", "--recursive", "-s", str(images), f"lakefs://{DEMO_REPO}/ingest/images/"
    )
    if lakefs.has_uncommitted_changes(DEMO_REPO, "ingest"):
        lakectl("commit", f"lakefs://{DEMO_REPO}/ingest", "-m", "Add sample images")
    else:
        console.print("nothing new to commit: the images are already in the repository")

    step("5. Score the images locally (prototype mode)")
    subprocess.run(
        ["clearlake", "score", str(images), "--out", str(workdir / "results.parquet")], check=True
    )

    console.print(
        f"\nBrowse the images: {stack.lakefs_url}/repositories/{DEMO_REPO}/objects?ref=ingest\n"
        f"Prefect UI: {stack.prefect_api_url.removesuffix('/api')}\n"
        "The data-driven pipeline (commit → classification commit) is not built yet.\n"
        "The stack keeps running; stop it with `make down`."
    )
