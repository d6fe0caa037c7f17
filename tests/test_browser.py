"""What a person sees, in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright for Python; no browser is downloaded) against the session's stack.

The walk: lakeFS's first visit lands on its login (no set-up form) → the results table
in lakeFS's object viewer, where the DuckDB query returns rows → the review page with
one thumbnail per image, filtered by label → one image's page → the quality diff.
Screenshots go to a temporary folder, printed at the end of each test (`-s` shows it).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearlake.stack.services import Stack
from tests.review_support import ReviewedRepo, admin_keys

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
LOAD_TIMEOUT_MS = 120_000  # the machine may be loaded: DuckDB-WASM starts slowly then


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium. Missing, the test fails (CI installs it: `.ci/run`)."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
                    "(`apt-get install -y chromium`, as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def shoot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    print(f"screenshot: {folder / name}.png")


def test_lakefs_opens_on_its_login_then_queries_the_results_table(
    browser: Any, stack: Stack, reviewed: ReviewedRepo, screenshots: Path
) -> None:
    key_id, secret = admin_keys(stack)
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(stack.lakefs_url)
    page.wait_for_selector('input[name="username"]')
    assert "/auth/login" in page.url
    assert page.locator('input[type="email"]').count() == 0  # no "User Configuration" form
    shoot(page, screenshots, "01-lakefs-login")
    page.fill('input[name="username"]', key_id)
    page.fill('input[name="password"]', secret)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda url: "/auth/login" not in url)

    table = "_clearlake/tables/main/part.parquet"  # a table this small is one part
    query = urllib.parse.urlencode({"ref": "main", "path": table})
    page.goto(f"{stack.lakefs_url}/repositories/{reviewed.name}/object?{query}")
    rows = page.locator(".object-viewer-sql-results tbody tr")
    rows.first.wait_for()
    assert rows.count() == min(20, len(reviewed.records))  # the viewer's query: LIMIT 20
    header = page.locator(".object-viewer-sql-results thead").inner_text()
    assert "path" in header and "label" in header
    shoot(page, screenshots, "02-lakefs-results-table")
    page.close()


def test_the_review_page_shows_every_thumbnail_and_filters_by_label(
    browser: Any, stack: Stack, reviewed: ReviewedRepo, screenshots: Path
) -> None:
    from clearlake.cli.review import review_url

    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(review_url(reviewed.name, "main", bridge_url=stack.bridge_url))
    assert page.url.endswith(f"/review/{reviewed.name}/main")  # the token is gone from it
    tiles = page.locator("li.tile")
    assert tiles.count() == len(reviewed.records)
    page.wait_for_function("() => [...document.images].every(image => image.complete)")
    decoded = page.evaluate(
        "() => [...document.querySelectorAll('li.tile img')].filter(i => i.naturalWidth > 0)"
        ".length")
    assert decoded == len(reviewed.records)  # the corrupt one too: its placeholder
    shoot(page, screenshots, "03-review-grid")

    labels = reviewed.labels()
    label = min(labels, key=lambda name: (labels[name], name))  # the rarest label
    page.select_option('select[name="label"]', label)
    page.click('form.filters button[type="submit"]')
    page.wait_for_url(lambda url: f"label={label}" in url)
    assert tiles.count() == labels[label]
    assert set(page.eval_on_selector_all("li.tile", "tiles => tiles.map(t => t.dataset.label)")
               ) == {label}
    shoot(page, screenshots, "04-review-filtered")

    page.goto(page.url.split("?")[0] + "?label=")
    tiles.first.locator("a").click()
    page.wait_for_url(lambda url: "/image?path=" in url)
    assert page.get_by_text("Label history on this branch").count() == 1 or \
        page.locator("h2", has_text="Lineage").count() == 1
    page.wait_for_function("() => [...document.images].every(image => image.complete)")
    assert page.evaluate("() => document.querySelector('figure.view img').naturalWidth") > 0
    shoot(page, screenshots, "05-review-image")
    page.close()


def test_the_diff_page_shows_the_transitions(
    browser: Any, stack: Stack, reviewed: ReviewedRepo, screenshots: Path
) -> None:
    from clearlake.cli.review import review_url
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import signing_key
    from clearlake.quality_diff import quality_diff

    expected = quality_diff(LakeFS(), reviewed.name, reviewed.first, "main", key=signing_key())
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(review_url(reviewed.name, f"{reviewed.first}...main", bridge_url=stack.bridge_url))
    chips = page.locator(".transitions a.chip")
    assert sorted(chips.all_inner_texts()) == sorted(
        f"{name} {count}" for name, count in expected.transitions.items())
    assert page.locator("#changed li.tile").count() == len(reviewed.blurred)
    page.wait_for_function("() => [...document.images].every(image => image.complete)")
    assert page.evaluate("() => [...document.querySelectorAll('#changed img')]"
                         ".every(image => image.naturalWidth > 0)")
    shoot(page, screenshots, "06-review-diff")
    if expected.transitions:
        name, count = next(iter(expected.transitions.items()))
        chips.first.click()
        page.wait_for_url(lambda url: "transition=" in url)
        assert page.locator(f'li.tile[data-transition="{name}"]').count() == count
        assert page.locator("li.tile").count() == count
    page.close()


def test_signing_out_and_in_with_a_lakefs_key_pair(
    browser: Any, stack: Stack, reviewed: ReviewedRepo, screenshots: Path
) -> None:
    key_id, secret = admin_keys(stack)
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    answer = page.goto(f"{stack.bridge_url}/review/{reviewed.name}/main")
    assert answer is not None and answer.status == 401  # the login form, as a 401
    page.fill('input[name="access_key_id"]', key_id)
    page.fill('input[name="secret_access_key"]', "not the secret")
    page.click('.login button[type="submit"]')
    assert page.locator(".alert").inner_text() == "lakeFS did not accept this access key pair."
    page.fill('input[name="access_key_id"]', key_id)
    page.fill('input[name="secret_access_key"]', secret)
    page.click('.login button[type="submit"]')
    page.wait_for_url(lambda url: url.endswith(f"/review/{reviewed.name}/main"))
    assert page.locator("li.tile").count() == len(reviewed.records)
    assert secret not in page.content()
    page.click(".signout button")
    page.wait_for_url(lambda url: url.endswith("/review/_login"))
    assert page.goto(f"{stack.bridge_url}/review/").status == 401
    shoot(page, screenshots, "07-review-signed-out")
    page.close()


# The run's Prefect artifact with its pictures is walked by the test helper `artifacts`
# adds here (test_a_runs_prefect_artifact_shows_its_pictures).
