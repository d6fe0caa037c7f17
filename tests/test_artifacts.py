"""A run's report in Prefect: its charts and markdown (no server), and in a real browser."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from uuid import UUID

import cv2
import numpy as np
import pytest

from clearlake import report
from clearlake.cli import demo
from clearlake.lakefs import LakeFS
from clearlake.provenance import latest_results, signing_key
from clearlake.stack.services import Stack
from tests.pipeline_support import commit_images, photo, unique_seed

SVG = "{http://www.w3.org/2000/svg}"
BROWSER_TIMEOUT_MS = 300_000


def bars(svg: str) -> list[dict[str, str]]:
    """The attributes of an SVG chart's bars (every rect but the background card)."""
    return [rect.attrib for rect in ET.fromstring(svg).iter(f"{SVG}rect")][1:]


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


def record(path: str, label: str | None, p_good: float | None, outcome: str = "ok",
           size: int = 1000) -> dict[str, Any]:
    probabilities = None if p_good is None else {"good": p_good, "blurry": 1 - p_good}
    return {"path": path, "label": label, "outcome": outcome, "size": size,
            "probabilities": probabilities}


# -- charts and markdown, no server ------------------------------------------------------------


def test_label_counts_put_labels_first_then_outcomes_without_a_label() -> None:
    records = [record("a", "blurry", 0.1), record("b", "good", 0.9), record("c", "good", 0.8),
               record("d", None, None, "corrupt"), record("e", "moire", 0.2),
               record("f", None, None, "failed"), record("g", None, None, "failed")]
    assert list(report.label_counts(records).items()) == [
        ("good", 2), ("blurry", 1), ("moire", 1), ("failed", 2), ("corrupt", 1)]


def test_label_chart_draws_one_bar_per_label_scaled_to_the_largest() -> None:
    svg = report.label_chart_svg({"good": 3, "blurry": 1, "corrupt": 1}, "Labels <run>")
    assert [(b["width"], b["fill"], b["y"]) for b in bars(svg)] == [
        ("200", "#2e7d32", "32"), ("67", "#ef6c00", "54"), ("67", "#757575", "76")]
    assert texts(svg) == ["Labels <run>", "good", "3", "blurry", "1", "corrupt", "1"]
    assert ET.fromstring(svg).attrib["height"] == str(30 + 3 * 22 + 8)


def test_p_good_histogram_bins_over_zero_to_one() -> None:
    assert report.histogram([0.0, 0.05, 0.15, 0.95, 1.0, 0.5]) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    svg = report.p_good_chart_svg([0.0, 0.05, 0.15, 0.95, 1.0, 0.5], "P(good), 6 images")
    assert [(b["x"], b["y"], b["height"]) for b in bars(svg)] == [
        ("42", "40", "100"), ("72", "90", "50"), ("192", "90", "50"), ("312", "40", "100")]
    assert texts(svg) == ["P(good), 6 images", "2", "1", "1", "2", "0", "0.5", "1"]


def test_thumbnails_are_small_jpegs_of_the_decoded_pixels() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    image[:, 200:] = (0, 0, 255)  # right half red
    thumbnail = report.thumbnail_jpeg(cv2.imencode(".png", image)[1].tobytes())
    assert thumbnail is not None and thumbnail[:3] == b"\xff\xd8\xff"
    pixels = cv2.imdecode(np.frombuffer(thumbnail, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (64, 128, 3)
    assert pixels[32, 100].tolist() == pytest.approx([0, 0, 254], abs=3)
    small = cv2.imencode(".png", np.full((20, 30), 128, np.uint8))[1].tobytes()
    assert cv2.imdecode(np.frombuffer(report.thumbnail_jpeg(small) or b"", np.uint8),
                        cv2.IMREAD_UNCHANGED).shape == (20, 30)  # never enlarged
    assert report.thumbnail_jpeg(b"not an image") is None


def test_links_name_the_review_pages_and_the_object_viewer_without_credentials() -> None:
    links = report.RunLinks("http://127.0.0.1:8765/", "http://admin:s3cret@127.0.0.1:8000",
                            "photos", "main")
    assert links.review == "http://127.0.0.1:8765/review/photos/main"
    assert links.results_table == ("http://127.0.0.1:8000/repositories/photos/objects"
                                   "?ref=main&path=_clearlake/tables/main/")
    assert links.image("a b/(c)#1.jpg") == (
        "http://127.0.0.1:8765/review/photos/main/image?path=a%20b/%28c%29%231.jpg")
    assert links.diff("abc", "def") == "http://127.0.0.1:8765/review/photos/abc...def"
    assert links.commit("abc") == "http://127.0.0.1:8000/repositories/photos/commits/abc"
    assert report.public_url("https://u:p@example.org:8443/x/?token=t#f") == (
        "https://example.org:8443/x")
    assert report.prefect_artifact_url("http://127.0.0.1:4200/api", "1234") == (
        "http://127.0.0.1:4200/artifacts/artifact/1234")
    assert report.report_key("Photos_1", "feature-x") == "report-photos-1-feature-x"


def test_markdown_shows_paths_literally() -> None:
    assert report.md_text("a_b|*c*![x](http://t/p.png)") == (
        r"a\_b\|\*c\*\!\[x\]\(http://t/p\.png\)")


def test_report_markdown() -> None:
    records = [record("images/ok.jpg", "good", 0.9), record("images/b|ad*.jpg", "blurry", 0.25),
               record("images/huge.jpg", "blurry", 0.1, size=200 << 20),
               record("images/broken.jpg", None, None, "corrupt")]
    jpeg = b"\xff\xd8\xff fake jpeg bytes"
    thumbnails = {"images/ok.jpg": report.Thumbnail(jpeg),
                  "images/b|ad*.jpg": report.Thumbnail(None, "does not decode"),
                  "images/huge.jpg": report.Thumbnail(None, "not read: 200 MiB")}
    summary = {"status": "merged", "source_commit": "a" * 64, "results_commit": "b" * 64,
               "pending_branch": None,
               "counts": {"computed": 3, "reused": 1, "failed": 1, "removed": 2, "relabelled": 0}}
    links = report.RunLinks("http://127.0.0.1:8765", "http://127.0.0.1:8000", "photos", "main")
    merge = report.MergeDiff("c" * 64, "a" * 64, "b" * 64, ["good: 1 → 2", "with ``` inside"])
    markdown = report.render_report(summary, records, links, thumbnails, merge)
    lines = markdown.split("\n")

    labels_svg = report.label_chart_svg({"blurry": 2, "good": 1, "corrupt": 1},
                                        "Labels, this run")
    p_good_svg = report.p_good_chart_svg([0.9, 0.25, 0.1], "P(good), 3 images")
    review = "http://127.0.0.1:8765/review/photos/main"
    assert lines[:12] == [
        "# clearlake: photos/main",
        "",
        "**merged**: source commit [aaaaaaaaaaaa](http://127.0.0.1:8000/repositories/photos/"
        f"commits/{'a' * 64}), results commit [bbbbbbbbbbbb](http://127.0.0.1:8000/"
        f"repositories/photos/commits/{'b' * 64}).",
        "",
        "4 images labelled in this run: 3 measured now, 1 reused from the metrics store, "
        "0 relabelled (of which 1 could not be measured: see their outcome); 2 removed.",
        "",
        f"[Review the images]({review}) (asks for a login) · [Results table in lakeFS]"
        "(http://127.0.0.1:8000/repositories/photos/objects?ref=main&path=_clearlake/tables/"
        "main/) (each part opens with a DuckDB query)",
        "",
        "## Labels and P(good)",
        "",
        f"![labels](data:image/svg+xml;base64,{base64.b64encode(labels_svg.encode()).decode()}) "
        f"![P(good)](data:image/svg+xml;base64,{base64.b64encode(p_good_svg.encode()).decode()})",
        "",
    ]
    assert lines[12:19] == [
        "## Least likely to be good",
        "",
        "| image | path | label | P(good) | |",
        "| --- | --- | --- | --- | --- |",
        f"| *not read: 200 MiB* | images/huge\\.jpg | blurry | 0.100 | [review]({review}/image?"
        "path=images/huge.jpg) |",
        f"| *does not decode* | images/b\\|ad\\*\\.jpg | blurry | 0.250 | [review]({review}/"
        "image?path=images/b%7Cad%2A.jpg) |",
        f"| ![thumbnail](data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}) | "
        f"images/ok\\.jpg | good | 0.900 | [review]({review}/image?path=images/ok.jpg) |",
    ]
    assert lines[19:] == [
        "",
        "## Quality diff of the merge: `cccccccccccc` → `aaaaaaaaaaaa`",
        "",
        "From the merge's first parent to the merge (its labels as of `bbbbbbbbbbbb`). "
        f"[Review the diff](http://127.0.0.1:8765/review/photos/{'c' * 64}...{'b' * 64})",
        "",
        "````text",
        "good: 1 → 2",
        "with ``` inside",
        "````",
        "",
    ]


def test_a_pending_run_says_where_its_results_wait() -> None:
    summary = {"status": "pending", "source_commit": "a" * 64, "results_commit": None,
               "pending_branch": "clearlake-tmp-1",
               "counts": {"computed": 0, "reused": 0, "failed": 0, "removed": 1, "relabelled": 0}}
    links = report.RunLinks("http://b", "http://l", "r", "main")
    markdown = report.render_report(summary, [], links, {})
    assert ("results **pending** on `clearlake\\-tmp\\-1` (reconcile applies them)."
            in markdown)
    assert "Least likely" not in markdown and "P(good)](" not in markdown


# -- the report of a real run, in the Prefect UI -----------------------------------------------


@pytest.mark.slow
def test_thumbnails_read_through_presigned_urls_are_those_lakefs_serves(
    lakefs: LakeFS, repo: str
) -> None:
    seed = unique_seed()
    images = {f"images/{i}.jpg": photo(seed + i, 240) for i in range(3)}
    commit_images(lakefs, repo, images)
    records = [{"path": p, "size": len(b)} for p, b in images.items()]
    records.append({"path": "images/gone.jpg", "size": 10})
    presigned = report.read_thumbnails(lakefs, repo, "main", records, presigned=True)
    assert list(presigned) == [r["path"] for r in records]  # in the records' order
    assert presigned == report.read_thumbnails(lakefs, repo, "main", records)
    assert all(presigned[p].jpeg for p in images)
    assert presigned["images/gone.jpg"] == report.Thumbnail(None, "not read: NotFoundError")


@pytest.mark.slow
def test_a_runs_report_shows_its_pictures_in_the_prefect_ui(
    stack: Stack, lakefs: LakeFS, repo: str, classify: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.sync_api import sync_playwright

    seed = unique_seed()
    images = {f"images/good/{i}.jpg": photo(seed + i, 240) for i in range(4)}
    images |= {f"images/blurred/{i}.jpg": photo(seed + 10 + i, 240, blur=5.0) for i in range(6)}
    images["images/broken.jpg"] = b"not a jpeg"
    commit_images(lakefs, repo, images)
    summary = classify(repo)
    assert summary["status"] == "merged"
    assert summary["report_reads"] == report.MAX_THUMBNAILS  # said, so benchmarks count them
    _, marker = latest_results(lakefs, repo, "main", signing_key())
    artifact_id = report.run_report_id(marker.run_id, repo, "main")
    assert artifact_id is not None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            # Bounds against a hang only: the UI's bundle loads slowly on a loaded machine.
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
            page.goto(report.prefect_artifact_url(stack.prefect_api_url, artifact_id),
                      wait_until="domcontentloaded")
            pictures = page.locator("article.markdown-renderer img")
            pictures.nth(2 + report.MAX_THUMBNAILS - 1).wait_for()
            page.wait_for_function(  # every picture loaded, decoded or broken
                "[...document.querySelectorAll('article.markdown-renderer img')]"
                ".every(i => i.complete)")
            shown = pictures.evaluate_all(
                "images => images.map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
            hrefs = page.locator("article.markdown-renderer a").evaluate_all(
                "links => links.map(a => a.href)")
            page.screenshot(path=tmp_path / "artifact.png", full_page=True)
            html = page.content()
        finally:
            browser.close()
    # Two charts, then the thumbnails of the 8 images least likely to be good (of the ten
    # that decoded), each at most 128 px on its longest side.
    assert shown[0][:2] == ["labels", 360] and shown[0][2] > 30
    assert shown[1] == ["P(good)", 360, 168]
    assert [alt for alt, _, _ in shown[2:]] == ["thumbnail"] * report.MAX_THUMBNAILS
    assert all(max(w, h) == report.THUMBNAIL_PX for _, w, h in shown[2:])
    links = report.RunLinks(report.bridge_url(), lakefs.settings.endpoint, repo, "main")
    assert links.review in hrefs and links.results_table in hrefs
    assert sum(h.startswith(f"{links.review}/image?path=images/") for h in hrefs) == 8
    secret = lakefs.settings.secret_access_key.get_secret_value()
    assert secret not in html

    # The demo's closing links: this report, the review page, the table in lakeFS.
    capsys.readouterr()
    demo.show_links(repo, "main", marker.run_id)
    printed = capsys.readouterr().out
    url = report.prefect_artifact_url(stack.prefect_api_url, artifact_id)
    assert f"the run's report       {url}\n" in printed
    assert f"the images, to review  {links.review}\n" in printed
    assert f"the results table      {links.results_table}\n" in printed
    assert f"access key id {lakefs.settings.access_key_id};" in printed
    assert str(stack.home / "secrets.json") in printed and secret not in printed


def published_report(run_id: str, repository: str, branch: str) -> str:
    """The markdown of the report a run published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    artifact_id = report.run_report_id(run_id, repository, branch)
    assert artifact_id is not None
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[UUID(artifact_id)])))
    return artifact.data


@pytest.mark.slow
def test_the_report_of_a_merge_shows_the_quality_diff_it_brought(
    lakefs: LakeFS, repo: str, classify: Any
) -> None:
    seed = unique_seed()
    commit_images(lakefs, repo, {f"images/{i}.jpg": photo(seed + i) for i in range(4)})
    classify(repo)
    key = signing_key()
    first_results, first = latest_results(lakefs, repo, "main", key)
    assert "Quality diff" not in published_report(first.run_id, repo, "main")

    lakefs.create_branch(repo, "feature", "main")
    commit_images(lakefs, repo, {f"images/new/{i}.jpg": photo(seed + 10 + i, blur=6.0)
                                 for i in range(3)}, branch="feature")
    merge = lakefs.merge(repo, "feature", "main", "bring three new images")
    assert lakefs.get_commit(repo, merge).parents[0] == first_results
    summary = classify(repo)
    assert summary["source_commit"] == merge and summary["counts"]["computed"] == 3

    markdown = published_report(latest_results(lakefs, repo, "main", key)[1].run_id, repo,
                                "main")
    section = markdown[markdown.index("## Quality diff of the merge"):].split("\n")
    assert section[0] == f"## Quality diff of the merge: `{first_results[:12]}` → `{merge[:12]}`"
    assert section[2].startswith(
        f"From the merge's first parent to the merge (its labels as of "
        f"`{summary['results_commit'][:12]}`).")
    assert section[5] == (f"{repo}: {first_results} ({first_results[:12]}) → "
                          f"{summary['results_commit']} ({summary['results_commit'][:12]})")
    assert section[6] == ("images: 4→7 (3 added, 0 removed, 0 changed, "
                          "0 relabelled with the same bytes)")
