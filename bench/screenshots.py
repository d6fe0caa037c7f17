"""The README's screenshot of the review page: ``python -m bench.screenshots [--out PATH]``.

Starts a stack in a temporary state directory on free loopback ports, commits the
labelled sample photographs (`clearlake sample-data`, one of each class per source
photograph, under neutral names) and one file that is not an image to a repository,
classifies them, opens the review page in headless Chromium (Debian's `chromium`,
driven by Playwright) with the login link `clearlake review` prints, and saves the
page as PNG (default `docs/review.png`). Everything it started is stopped after,
also on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench import cleanup

if TYPE_CHECKING:
    from clearlake.lakefs import LakeFS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
REPOSITORY = "photos"
VIEWPORT = {"width": 1360, "height": 1000}


def commit_sample(lakefs: LakeFS, folder: Path) -> int:
    """Upload the sample photographs (shuffled, renamed) and a broken file; commit."""
    from clearlake.quality.sample_data import generate

    labels = generate(folder, seed=0, per_class=1)
    photos = sorted(p for p in labels.parent.rglob("*.jpg"))
    random.Random(0).shuffle(photos)
    files = {f"shoot/2026-11/IMG_{i:04d}.jpg": p.read_bytes() for i, p in enumerate(photos)}
    files["shoot/2026-11/IMG_9999.jpg"] = b"an upload cut short: not an image"
    lakefs.upload_many(REPOSITORY, "main", files.items())
    lakefs.commit(REPOSITORY, "main", "shoot 2026-11")
    return len(files)


def main(out: Path) -> None:
    from clearlake.config import lakefs_settings
    from clearlake.lakefs import LakeFS
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack, free_loopback_ports

    install_lakefs(report=print)
    with tempfile.TemporaryDirectory(prefix="clearlake-screenshots-") as scratch:
        home = Path(scratch) / "home"
        stack = Stack(home=home, ports=free_loopback_ports())
        # Before Prefect is first imported (by `up`): it reads its settings then.
        os.environ.update(CLEARLAKE_HOME=str(home), PREFECT_API_URL=stack.prefect_api_url)
        try:
            with cleanup.deferred():  # started services are recorded before a stop lands
                stack.up(report=print)
            lakefs = LakeFS(lakefs_settings(home))
            lakefs.create_repository(REPOSITORY)
            count = commit_sample(lakefs, Path(scratch) / "sample")
            print(f"committed {count} files; classifying")
            from clearlake.flows.classify import classify_commit

            summary = classify_commit(REPOSITORY, "main", dask_address=stack.dask_address)
            print(f"labels: {summary['labels']}, outcomes: {summary['outcomes']}")
            shoot(stack.bridge_url, out)
        finally:
            with cleanup.deferred():
                stack.down(report=print)


def shoot(bridge_url: str, out: Path) -> None:
    """Open the review page of main, worst first, and save it to `out`."""
    from playwright.sync_api import sync_playwright

    from clearlake.cli.review import review_url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.set_default_timeout(120_000)
            page.goto(review_url(REPOSITORY, "main", bridge_url=bridge_url))
            page.wait_for_function("() => [...document.images].every(image => image.complete)")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            print(f"saved {out}")
        finally:
            browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "review.png")
    arguments = parser.parse_args()
    cleanup.main(lambda: main(arguments.out))
