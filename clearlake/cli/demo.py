"""Command: `clearlake demo` — the main job, end to end, narrated.

A commit of images is all a user does; the classification commit follows by
itself. The demo does what a user would, with lakectl, and shows what happens.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from clearlake.cli.app import app, console

DEMO_REPO = "clearlake-demo"
INGEST = "ingest"
POLICY = b"""# What may enter main: clearlake's quality gate reads this from main itself.
max_not_good_percent: 10
rules:
  - prefix: images/
    forbid: [blurry]
"""
RUN_TIMEOUT_S = 600.0
REPORT_TIMEOUT_S = 60.0
CLEARLAKE = [sys.executable, "-m", "clearlake.cli"]  # this very installation of the CLI


def step(text: str) -> None:
    """Narrate one step of the demo."""
    console.rule(f"[bold cyan]{text}")


def lakectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the stack's lakectl, echoing the command (never its credentials)."""
    from clearlake.config import lakefs_settings
    from clearlake.stack.install import lakectl_environment

    settings = lakefs_settings()
    env = lakectl_environment(settings.endpoint, settings.access_key_id,
                              settings.secret_access_key.get_secret_value())
    console.print(f"[dim]$ lakectl {' '.join(args)}[/dim]")
    done = subprocess.run(["lakectl", *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        console.print(done.stdout, done.stderr, markup=False)
        raise typer.Exit(code=1)
    return done


def commit_with_lakectl(branch: str, message: str) -> str | None:
    """Commit what is staged on `branch`; None when there was nothing to commit."""
    done = lakectl("commit", f"lakefs://{DEMO_REPO}/{branch}", "-m", message, check=False)
    if done.returncode != 0:
        if "no changes" in (done.stdout + done.stderr):
            console.print("nothing new to commit (the repository already has these files)")
            return None
        console.print(done.stdout, done.stderr, markup=False)
        raise typer.Exit(code=1)
    return done.stdout.split("ID: ", 1)[1].split()[0]


def wait_for_results(branch: str, commit: str | None) -> dict[str, Any]:
    """Wait until the branch's results cover its head; return the marker's facts."""
    from clearlake.lakefs import LakeFS
    from clearlake.pipeline import is_covered
    from clearlake.provenance import latest_results, signing_key

    lakefs, key = LakeFS(), signing_key()
    started = time.monotonic()
    with console.status(f"waiting for the triggered run on {branch}…"):
        while not is_covered(lakefs, DEMO_REPO, branch, key):
            if time.monotonic() - started > RUN_TIMEOUT_S:
                console.print("[red]no results after 10 minutes[/red]: "
                              "see `clearlake stack logs prefect-worker`")
                raise typer.Exit(code=1)
            time.sleep(0.5)
    results_commit, marker = latest_results(lakefs, DEMO_REPO, branch, key)
    waited = time.monotonic() - started
    console.print(f"results commit {results_commit[:12]} covers "
                  f"{(commit or marker.source_commit)[:12]} ({waited:.1f} s after the commit)")
    return {"commit": results_commit, "marker": marker}


def show_summary(branch: str, results: dict[str, Any]) -> None:
    """Counts per label and the worst images, from the branch's results table."""
    from rich.table import Table

    from clearlake.lakefs import LakeFS
    from clearlake.pipeline import read_table, worst_images

    marker = results["marker"]
    records = read_table(LakeFS(), DEMO_REPO, branch, branch)
    console.print(f"this run: {marker.counts}")
    labels = Counter(r["label"] or r["outcome"] for r in records)
    table = Table("label", "images", title=f"{DEMO_REPO}/{branch}: {len(records)} images")
    for label, count in sorted(labels.items()):
        table.add_row(label, str(count))
    console.print(table)
    worst = Table("image", "label", "P(good)", title="least likely to be good")
    for r in worst_images(records, 5):
        worst.add_row(r["path"], r["label"], f"{r['probabilities'].get('good', 0):.3f}")
    console.print(worst)


def run_report_url(repository: str, branch: str, run_id: str) -> str | None:
    """The Prefect UI page of the report a run published (it does so just after its
    results commit), None if none appears within a minute."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from clearlake.report import prefect_artifact_url, run_report_id
    from clearlake.stack.services import Stack

    api = Stack().prefect_api_url
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    # The stack's server, not a temporary one of Prefect's own: the demo's process never
    # set PREFECT_API_URL (the runs did, in theirs).
    with temporary_settings(updates={PREFECT_API_URL: api}):
        while (artifact_id := run_report_id(run_id, repository, branch)) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)
    return prefect_artifact_url(api, artifact_id)


def show_links(repository: str, branch: str, run_id: str) -> None:
    """Where to look at the results: the review page, the table in lakeFS, the run's report,
    and how to log in (the access key id, and the file holding the secret key)."""
    from clearlake import report
    from clearlake.lakefs import LakeFS
    from clearlake.layout import table_folder
    from clearlake.stack.services import Stack

    stack = Stack()
    prefect_ui = stack.prefect_api_url.removesuffix("/api")
    artifact = run_report_url(repository, branch, run_id) or (
        f"none found; the branch's reports: {prefect_ui}/artifacts/key/"
        f"{report.report_key(repository, branch)}")
    links = {
        "the images, to review": report.review_url(stack.bridge_url, repository, branch),
        "the results table": report.lakefs_folder_url(stack.lakefs_url, repository, branch,
                                                      table_folder(branch)),
        "the run's report": artifact,
        "the run": f"{prefect_ui}/runs/flow-run/{run_id}",
        "lakeFS UI": stack.lakefs_url,
        "Prefect UI": prefect_ui,
    }
    for what, link in links.items():  # one line each, never wrapped: links stay clickable
        console.print(f"{what:<22} {link}", soft_wrap=True, markup=False, highlight=False)
    console.print(
        f"Log in to lakeFS and to the review pages with access key id "
        f"{LakeFS().settings.access_key_id}; the secret key is lakefs_secret_access_key in "
        f"{stack.home / 'secrets.json'}.", soft_wrap=True)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where sample images are generated.")] = Path(
        ".clearlake/demo"
    ),
) -> None:
    """Start the stack, commit images with lakectl and watch clearlake classify them."""
    from clearlake.actions import install_actions, render_actions
    from clearlake.lakefs import LakeFS
    from clearlake.layout import POLICY_PATH
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack
    from clearlake.transaction import commit_changed_files

    step("1. Start the local stack: an S3 server, lakeFS over it (web UI), Prefect (server, "
         "worker), Dask, bridge")
    install_lakefs(report=console.print)
    stack = Stack()
    stack.up(report=console.print)
    lakefs = LakeFS()

    step(f"2. Create the repository {DEMO_REPO!r} with clearlake's lakeFS actions")
    created = lakefs.create_repository(DEMO_REPO)
    console.print(f"repository {DEMO_REPO!r} {'created' if created else 'already exists'}")
    install_actions(lakefs, DEMO_REPO, "main", render_actions(stack.bridge_url))
    commit_changed_files(lakefs, DEMO_REPO, "main", {POLICY_PATH: POLICY},
                         "quality policy for main")
    console.print(f"main is protected by the gate; its policy ({POLICY_PATH}):")
    console.print(POLICY.decode(), markup=False)
    wait_for_results("main", None)

    step("3. Generate labelled sample photographs (good, blurry, moiré)")
    images = workdir / "images"
    if not (images / "labels.csv").exists():
        subprocess.run([*CLEARLAKE, "sample-data", str(images)], check=True)

    step(f"4. Upload them with lakectl to branch {INGEST!r} and commit: that is all a user does")
    if INGEST not in {name for name, _ in lakefs.list_branches(DEMO_REPO)}:
        lakectl("branch", "create", f"lakefs://{DEMO_REPO}/{INGEST}",
                "--source", f"lakefs://{DEMO_REPO}/main")
    lakectl("fs", "upload", "--recursive", "-s", str(images),
            f"lakefs://{DEMO_REPO}/{INGEST}/images/")
    commit = commit_with_lakectl(INGEST, "Add sample images")
    sample_run = wait_for_results(INGEST, commit)
    show_summary(INGEST, sample_run)

    step("5. Commit one more, blurred image: the next run measures exactly one")
    blurred = workdir / "one-more-blurred.jpg"
    _write_blurred_photo(blurred)
    lakectl("fs", "upload", "-s", str(blurred), f"lakefs://{DEMO_REPO}/{INGEST}/images/new/"
            f"{blurred.name}")
    commit = commit_with_lakectl(INGEST, "One more image")
    results = wait_for_results(INGEST, commit)
    counts = results["marker"].counts
    console.print(f"[bold]computed {counts['computed']}[/bold], reused {counts['reused']}: "
                  "only the new image was decoded")

    step(f"6. Try to merge {INGEST!r} (it has blurry and moiré images) into protected main")
    console.print(f"[dim]$ clearlake merge {DEMO_REPO} {INGEST} main[/dim]")
    merge = subprocess.run([*CLEARLAKE, "merge", DEMO_REPO, INGEST, "main"])
    if merge.returncode == 0:
        console.print("[yellow]the merge went through (the images passed the policy)[/yellow]")

    console.rule("[bold green]done")
    show_links(DEMO_REPO, INGEST, sample_run["marker"].run_id)
    console.print("The stack keeps running: commit more images and watch. Stop it with "
                  "`make down`.")


def _write_blurred_photo(path: Path) -> None:
    """A new blurred crop of a sample photograph (new bytes each time, so it is measured)."""
    import cv2
    from sklearn.datasets import load_sample_image

    rng = secrets.SystemRandom()
    photo = cv2.cvtColor(load_sample_image("china.jpg"), cv2.COLOR_RGB2BGR)
    y, x = rng.randrange(0, 100), rng.randrange(0, 300)
    crop = photo[y : y + 320, x : x + 320]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.GaussianBlur(crop, (0, 0), rng.uniform(3.0, 5.0)))
