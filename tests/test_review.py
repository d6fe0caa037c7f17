"""The review pages: login, refusals and escaping without servers; then against the stack."""

from __future__ import annotations

import hashlib
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from clearlake.lakefs import LakeFS
from clearlake.provenance import sign_record
from clearlake.review import ReviewApp, ReviewConfig
from clearlake.review.app import _RedactTokens, checked_path
from clearlake.review.auth import SESSION_COOKIE, Sessions, make_token, read_token
from clearlake.review.results import (
    UNVERIFIED,
    Query,
    build_index,
    counts,
    index_table,
    select,
    sortable_columns,
)
from clearlake.review.thumbnails import ThumbnailCache, placeholder, render
from clearlake.table import records_table, updated_table
from tests.pipeline_support import photo

KEY = b"k" * 32
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: a page that asks lakeFS gets 503


@pytest.fixture
def review(tmp_path: Path) -> ReviewApp:
    lakefs = LakeFS.connect(UNREACHABLE, "AKIAEXAMPLEEXAMPLE00", "not-the-real-secret")
    return ReviewApp(ReviewConfig(lakefs=lakefs, key=KEY, cache_dir=tmp_path,
                                  lakefs_ui=UNREACHABLE))


@pytest.fixture
def client(review: ReviewApp) -> Iterator[TestClient]:
    with TestClient(Starlette(routes=review.routes()), base_url="http://127.0.0.1") as c:
        yield c


def signed_in(client: TestClient, repository: str = "photos") -> TestClient:
    token = make_token(KEY, repository, f"/review/{repository}/main")
    answer = client.get("/review/_login", params={"token": token}, follow_redirects=False)
    assert answer.status_code == 303
    return client


# -- authentication ------------------------------------------------------------------------

REVIEW_URLS = ["/review/", "/review/photos", "/review/photos/main",
               "/review/photos/main/image?path=a.jpg", "/review/photos/main/thumb?path=a.jpg",
               "/review/photos/main...feature"]


@pytest.mark.parametrize("url", REVIEW_URLS)
def test_every_review_url_needs_a_login(client: TestClient, url: str) -> None:
    answer = client.get(url)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Session")
    assert 'name="secret_access_key"' in answer.text  # a browser gets the login form


@pytest.mark.parametrize("url", REVIEW_URLS)
def test_a_forged_or_unknown_session_cookie_is_refused(client: TestClient, url: str) -> None:
    cookie = Sessions(b"another key" * 3).create("admin", LakeFS.connect(UNREACHABLE, "a", "b"))
    for value in (cookie, "x.y", "", cookie.split(".")[0]):
        client.cookies.set(SESSION_COOKIE, value, path="/review")
        assert client.get(url).status_code == 401


def test_only_the_login_form_and_the_stylesheet_are_served_anonymously(
    client: TestClient
) -> None:
    assert client.get("/review/_login").status_code == 200
    css = client.get("/review/_static/review.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_a_login_token_signs_in_once_with_a_strict_httponly_cookie(client: TestClient) -> None:
    token = make_token(KEY, "photos", "/review/photos/main")
    first = client.get("/review/_login", params={"token": token}, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/review/photos/main"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
    assert token not in cookie
    again = client.__class__(client.app, base_url="http://127.0.0.1")
    assert again.get("/review/_login", params={"token": token},
                     follow_redirects=False).status_code == 401  # spent


def test_expired_tampered_and_foreign_tokens_are_refused(client: TestClient) -> None:
    expired = make_token(KEY, "photos", "/review/photos/main", now=time.time() - 3600)
    body, signature = make_token(KEY, "photos", "/review/photos/main").split(".")
    tampered = f"{body[:-2]}AA.{signature}"
    foreign = make_token(b"not the stack's key", "photos", "/review/photos/main")
    elsewhere = make_token(KEY, "photos", "https://evil.example/")
    for token in (expired, tampered, foreign, elsewhere, "", "garbage"):
        answer = client.get("/review/_login", params={"token": token}, follow_redirects=False)
        assert answer.status_code == 401, token
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_read_token_checks_signature_and_expiry() -> None:
    token = make_token(KEY, "photos", "/review/photos/main", ttl_s=600, now=1000.0)
    grant = read_token(KEY, token, now=1500.0)
    assert grant is not None and (grant.repository, grant.path, grant.expires) == (
        "photos", "/review/photos/main", 1600)
    assert read_token(KEY, token, now=1601.0) is None
    assert read_token(b"other", token, now=1500.0) is None


def test_a_token_login_sees_only_its_repository(client: TestClient) -> None:
    signed_in(client, "photos")
    assert client.get("/review/others/main").status_code == 403
    # Its own repository is asked of lakeFS (unreachable here: 503, not 401 or 403).
    assert client.get("/review/photos/main").status_code == 503


def test_a_login_form_posted_from_another_site_is_refused(client: TestClient) -> None:
    answer = client.post("/review/_login", data={"access_key_id": "a", "secret_access_key": "b"},
                         headers={"Origin": "http://evil.example"}, follow_redirects=False)
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_a_login_form_posted_from_this_site_is_checked_with_lakefs(client: TestClient) -> None:
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "null"},
                    {"Origin": "http://127.0.0.1"}, {}):
        answer = client.post("/review/_login", headers=headers,
                             data={"access_key_id": "a", "secret_access_key": "b"})
        assert answer.status_code == 503, headers  # lakeFS (unreachable here) was asked
    refused = client.post("/review/_login", headers={"Sec-Fetch-Site": "cross-site"},
                          data={"access_key_id": "a", "secret_access_key": "b"})
    assert refused.status_code == 403


def test_an_empty_login_is_401(client: TestClient) -> None:
    answer = client.post("/review/_login", data={"access_key_id": "", "secret_access_key": ""})
    assert answer.status_code == 401


def test_sign_out_ends_the_session(client: TestClient) -> None:
    signed_in(client)
    assert client.get("/review/photos/main").status_code == 503  # signed in: lakeFS is asked
    client.post("/review/_logout", follow_redirects=False)
    assert client.get("/review/photos/main").status_code == 401


def test_the_access_log_never_shows_a_login_token() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/review/_login?token=abc.def&x=1", "1.1",
                                303), None)
    _RedactTokens().filter(record)
    assert "abc.def" not in record.getMessage()
    assert "token=[redacted]&x=1" in record.getMessage()


# -- what a URL may carry --------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "../secrets.json", "images/../../etc/passwd", "/etc/passwd", "a//b.jpg", "a\\b.jpg",
    "a/./b.jpg", "a\x00b.jpg", "a\nb.jpg", "_clearlake/records/a.jpg.json",
    "_lakefs_actions/clearlake.yaml", "", "x" * 2000,
])
def test_path_traversal_is_refused_before_lakefs_is_asked(client: TestClient, path: str) -> None:
    signed_in(client)
    for view in ("image", "thumb"):
        answer = client.get(f"/review/photos/main/{view}", params={"path": path})
        assert answer.status_code == 400, (view, path)


@pytest.mark.parametrize("url", [
    "/review/photos/%2E%2E", "/review/photos/main..x", "/review/photos/%2E%2E/image?path=a",
    "/review/Bad_Repo/main",
    "/review/photos/main?prefix=../", "/review/photos/main?prefix=/etc",
    "/review/photos/a...b..c", "/review/photos/main/thumb?path=a.jpg&size=4096",
    "/review/photos/ma%0Ain",
])
def test_bad_names_in_urls_are_refused(client: TestClient, url: str) -> None:
    signed_in(client)
    assert client.get(url).status_code in (400, 404), url


def test_checked_path_keeps_ordinary_paths() -> None:
    for path in ("a.jpg", "images/2026/IMG 0001.JPG", "ünïcödé/ф.png", "a..b.jpg", "x%2F.jpg"):
        assert checked_path(path) == path
    assert checked_path("images/", prefix=True) == "images/"
    assert checked_path("", prefix=True) == ""


# -- the index: verified records only, filters, sort, pages -----------------------------------


def signed(path: str, label: str | None, p_good: float | None, outcome: str = "ok",
           blur: float = 1.0) -> dict[str, Any]:
    probabilities = None if p_good is None else {"good": p_good, "blurry": 1 - p_good}
    return sign_record({
        "path": path, "checksum": hashlib.md5(path.encode()).hexdigest(),
        "sha256": hashlib.sha256(path.encode()).hexdigest(), "size": 10, "width": 4,
        "height": 4, "outcome": outcome, "reason": "" if outcome == "ok" else "not an image",
        "metrics": {"blur": blur} if outcome == "ok" else {}, "label": label,
        "probabilities": probabilities, "model_id": "m", "analysis_version": "v",
        "source_commit": "c" * 64, "run_id": "r", "origin": "computed", "computed_at": {},
    }, KEY)


def table_bytes(records: list[dict[str, Any]]) -> bytes:
    return updated_table(None, records, [])


def test_the_index_trusts_only_signed_records_that_match_their_row() -> None:
    good = signed("a/good.jpg", "good", 0.9)
    blurry = signed("a/blurry.jpg", "blurry", 0.2, blur=0.1)
    corrupt = signed("b/corrupt.jpg", None, None, outcome="corrupt")
    forged = {**signed("b/forged.jpg", "blurry", 0.1), "label": "good"}  # signature broken
    index = build_index([table_bytes([good, blurry, corrupt, forged])], KEY)
    rows = {r["path"]: r for r in index.to_pylist()}
    assert rows["a/good.jpg"]["label"] == "good" and rows["a/good.jpg"]["verified"]
    assert rows["b/corrupt.jpg"]["outcome"] == "corrupt" and rows["b/corrupt.jpg"]["verified"]
    assert rows["b/forged.jpg"]["verified"] is False
    assert rows["b/forged.jpg"]["outcome"] == UNVERIFIED and rows["b/forged.jpg"]["label"] is None
    assert counts(index) == {"labels": {"blurry": 1, "good": 1},
                             "outcomes": {"ok": 2, "corrupt": 1, UNVERIFIED: 1}}
    # Another key signed none of them.
    assert not any(build_index([table_bytes([good])], b"other").column("verified").to_pylist())


def test_a_row_whose_columns_disagree_with_its_signed_record_is_unverified() -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = records_table([signed("a.jpg", "blurry", 0.1)])
    table = table.set_column(table.column_names.index("label"), "label",
                             pa.array(["good"], pa.string()))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    [row] = build_index([sink.getvalue()], KEY).to_pylist()
    assert row["verified"] is False and row["label"] is None


def index_of(n: int) -> Any:
    rows = []
    for i in range(n):
        label = "good" if i % 3 else "blurry"
        rows.append({"path": f"{'x' if i % 2 else 'y'}/{i:03d}.jpg", "verified": True,
                     "label": label, "outcome": "ok", "reason": "", "sha256": None,
                     "probabilities": {"good": i / n, "blurry": 1 - i / n},
                     "metrics": {"blur": float(n - i)}})
    rows.append({"path": "z/broken.jpg", "verified": True, "label": None, "outcome": "corrupt",
                 "reason": "r", "sha256": None, "probabilities": {}, "metrics": {}})
    return index_table(rows)


def test_select_filters_sorts_and_pages_without_overlap() -> None:
    index = index_of(100)
    assert sortable_columns(index) == ["p_blurry", "p_good", "blur", "path"]
    page, total = select(index, Query(sort="p_good", limit=5))
    assert total == 101
    assert [r["path"] for r in page] == ["y/000.jpg", "x/001.jpg", "y/002.jpg", "x/003.jpg",
                                         "y/004.jpg"]
    last, _ = select(index, Query(sort="p_good", offset=100, limit=5))
    assert [r["path"] for r in last] == ["z/broken.jpg"]  # no P(good): last
    seen = []
    for offset in range(0, 101, 48):
        rows, _ = select(index, Query(sort="blur", descending=True, offset=offset))
        seen += [r["path"] for r in rows]
    assert len(seen) == len(set(seen)) == 101
    blurry, total = select(index, Query(label="blurry", prefix="y/", limit=100))
    assert total == 17 and all(r["label"] == "blurry" and r["path"].startswith("y/")
                               for r in blurry)
    assert select(index, Query(outcome="corrupt"))[1] == 1
    assert select(index, Query(label="nothing"))[1] == 0
    assert select(index, Query(sort="not a column", limit=1))[0][0]["path"] == "x/001.jpg"


# -- thumbnails ------------------------------------------------------------------------------


def test_a_thumbnail_fits_256_pixels_and_is_cached_by_sha256(tmp_path: Path) -> None:
    data = photo(7, size=600)
    cache = ThumbnailCache(tmp_path)
    made = cache.make(data, 256)
    assert made.media_type == "image/jpeg"
    pixels = cv2.imdecode(np.frombuffer(made.data, np.uint8), cv2.IMREAD_COLOR)
    assert max(pixels.shape[:2]) == 256
    sha = hashlib.sha256(data).hexdigest()
    assert (tmp_path / sha[:2] / f"{sha}-256.jpg").read_bytes() == made.data
    assert cache.get(sha, 256) == made
    assert cache.get(sha, 1024) is None


def test_an_undecodable_image_gets_a_placeholder_naming_its_outcome(tmp_path: Path) -> None:
    made = ThumbnailCache(tmp_path).make(b"this is not an image", 256)
    assert made.media_type == "image/svg+xml" and b">corrupt<" in made.data
    assert list(tmp_path.iterdir()) == []  # placeholders are not cached
    assert b">too_large<" in placeholder("too_large", "<b>huge</b>").data
    assert b"<b>" not in placeholder("too_large", "<b>huge</b>").data
    assert render(photo(3, size=100), 256).media_type == "image/jpeg"  # never enlarged


# -- escaping --------------------------------------------------------------------------------


def test_user_controlled_text_is_escaped_in_pages(review: ReviewApp) -> None:
    from clearlake.review.results import RefResults

    evil = '<script>alert("x")</script>"><img src=x onerror=alert(1)>.jpg'
    index = index_table([{"path": evil, "verified": True, "label": "<b>bad</b>",
                          "outcome": "ok", "reason": "", "sha256": None,
                          "probabilities": {"good": 0.5}, "metrics": {}}])
    results = RefResults("photos", "main", "c" * 64, None, None, index)
    rows, total = select(index, Query())
    page = review.page("grid.html", rows=rows, total=total, tally=counts(index),
                       sorts=sortable_columns(index), repository="photos", ref="main",
                       results=results, query=Query(), lakefs_ui=UNREACHABLE, prefect_ui="",
                       page_size=48).body.decode()
    assert "<script>" not in page and "<b>bad</b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;bad&lt;/b&gt;" in page
    assert review.error(404, "Not found", evil).body.decode().count("<script>") == 0


def test_pages_allow_no_script(client: TestClient) -> None:
    answer = client.get("/review/_login")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "<script" not in answer.text


# -- against the stack -----------------------------------------------------------------------


def tiles(page: str) -> list[str]:
    """The paths of the thumbnails a grid page shows."""
    return re.findall(r'<li class="tile [^"]*"[^>]*>\s*<a href="[^"]*image\?path=([^"]+)"', page)


@pytest.mark.slow
def test_a_lakefs_key_pair_signs_in_and_a_wrong_one_is_401(stack: Any) -> None:
    from tests.review_support import admin_keys

    key_id, secret = admin_keys(stack)
    with httpx.Client(base_url=stack.bridge_url) as client:
        wrong = client.post("/review/_login", data={"access_key_id": key_id,
                                                     "secret_access_key": secret + "x"})
        assert wrong.status_code == 401 and "did not accept" in wrong.text
        assert client.get("/review/").status_code == 401
        right = client.post("/review/_login", data={"access_key_id": key_id,
                                                     "secret_access_key": secret,
                                                     "next": "/review/"}, follow_redirects=False)
        assert right.status_code == 303 and right.headers["location"] == "/review/"
        assert client.get("/review/").status_code == 200


@pytest.mark.slow
def test_the_grid_shows_every_verified_record_and_filters_by_label(
    stack: Any, reviewed: Any
) -> None:
    from tests.review_support import signed_in_client

    with signed_in_client(stack) as client:
        page = client.get(f"/review/{reviewed.name}/main")
        assert page.status_code == 200
        shown = [urllib.parse.unquote(p) for p in tiles(page.text)]
        assert sorted(shown) == sorted(reviewed.records)
        # Worst first: the order is P(good), ascending, images without one last.
        p_good = [reviewed.records[p]["probabilities"]["good"] for p in shown
                  if reviewed.records[p]["probabilities"]]
        assert p_good == sorted(p_good) and shown[-1] == "broken/corrupt.jpg"
        for label, count in reviewed.labels().items():
            filtered = client.get(f"/review/{reviewed.name}/main", params={"label": label})
            assert len(tiles(filtered.text)) == count, label
        corrupt = client.get(f"/review/{reviewed.name}/main", params={"outcome": "corrupt"})
        assert [urllib.parse.unquote(p) for p in tiles(corrupt.text)] == ["broken/corrupt.jpg"]
        under = client.get(f"/review/{reviewed.name}/main", params={"prefix": "broken/"})
        assert len(tiles(under.text)) == 1


@pytest.mark.slow
def test_thumbnails_are_cached_by_sha256_and_a_corrupt_image_shows_its_outcome(
    stack: Any, reviewed: Any
) -> None:
    from tests.review_support import signed_in_client

    path = "images/soft_00.jpg"
    sha = reviewed.records[path]["sha256"]
    with signed_in_client(stack) as client:
        thumb = client.get(f"/review/{reviewed.name}/{reviewed.second}/thumb",
                           params={"path": path})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        pixels = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
        assert max(pixels.shape[:2]) == 256
        cached = stack.home / "review" / "thumbnails" / sha[:2] / f"{sha}-256.jpg"
        assert cached.read_bytes() == thumb.content
        broken = client.get(f"/review/{reviewed.name}/main/thumb",
                            params={"path": "broken/corrupt.jpg"})
        assert broken.headers["content-type"] == "image/svg+xml"
        assert b">corrupt<" in broken.content


@pytest.mark.slow
def test_the_image_page_shows_metrics_probabilities_lineage_and_label_history(
    stack: Any, reviewed: Any
) -> None:
    from tests.review_support import signed_in_client

    path = reviewed.blurred[0]
    record = reviewed.records[path]
    with signed_in_client(stack) as client:
        page = client.get(f"/review/{reviewed.name}/main/image", params={"path": path}).text
    for metric in record["metrics"]:
        assert f"<th>{metric}</th>" in page
    assert record["sha256"] in page and record["model_id"] in page
    for name in record["probabilities"]:
        assert f"<tr><th>{name}</th><td><meter" in page
    history = page.split("Label history", 1)[1]
    assert history.count("<tr") == 1 + 2  # the header, then both runs' results
    assert f"<code>{record['checksum'][:12]}</code>" in history  # the image as it is now


@pytest.mark.slow
def test_a_missing_repository_or_ref_is_a_404_naming_it(stack: Any, reviewed: Any) -> None:
    from tests.review_support import signed_in_client

    with signed_in_client(stack) as client:
        gone = client.get("/review/no-such-repo/main")
        assert gone.status_code == 404 and "no-such-repo" in gone.text
        no_ref = client.get(f"/review/{reviewed.name}/no-such-branch")
        assert no_ref.status_code == 404 and "no-such-branch" in no_ref.text
        no_image = client.get(f"/review/{reviewed.name}/main/image",
                              params={"path": "images/none.jpg"})
        assert no_image.status_code == 404 and "images/none.jpg" in no_image.text


@pytest.mark.slow
def test_clearlake_review_prints_a_link_that_signs_in_once(stack: Any, reviewed: Any) -> None:
    from tests.pipeline_support import run_cli

    printed = run_cli("review", reviewed.name, "main", home=stack.home).stdout
    [url] = [line for line in printed.splitlines() if line.startswith("http")]
    assert url.startswith(f"{stack.bridge_url}/review/_login?token=")
    with httpx.Client() as client:
        page = client.get(url, follow_redirects=True)
        assert page.status_code == 200 and str(page.url).endswith(f"/review/{reviewed.name}/main")
        assert len(tiles(page.text)) == len(reviewed.records)
    with httpx.Client() as again:
        assert again.get(url).status_code == 401  # used once already
    missing = run_cli("review", "no-such-repo", home=stack.home, check=False)
    assert missing.returncode == 1 and "no-such-repo" in missing.stdout


@pytest.mark.slow
def test_no_secret_reaches_a_page_or_the_bridge_log(stack: Any, reviewed: Any) -> None:
    from clearlake.config import StackSecrets
    from tests.pipeline_support import run_cli
    from tests.review_support import signed_in_client

    secrets_ = StackSecrets.load(stack.home)
    hidden = [secrets_.lakefs_secret_access_key.get_secret_value(),
              secrets_.signing_key.get_secret_value(), secrets_.webhook_secret.get_secret_value()]
    url = run_cli("review", reviewed.name, home=stack.home).stdout.split()[-1]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
    with httpx.Client() as visitor:
        visitor.get(url)
    pages = []
    with signed_in_client(stack) as client:
        for view in ("/review/", f"/review/{reviewed.name}", f"/review/{reviewed.name}/main",
                     f"/review/{reviewed.name}/main/image?path=images/soft_00.jpg"):
            pages.append(client.get(view).text)
    log = stack.log_path("bridge").read_text()
    for secret in hidden:
        assert all(secret not in page for page in pages)
        assert secret not in log
    assert token not in log and "token=[redacted]" in log


# -- the quality diff page -------------------------------------------------------------------


def diff_record(label: str | None, sha: str, p_good: float | None = None,
                outcome: str = "ok") -> dict[str, Any]:
    return {"label": label, "outcome": outcome, "sha256": sha, "checksum": sha,
            "probabilities": {"good": p_good} if p_good is not None else None,
            "metrics": {"blur": p_good or 0.0}}


def test_diff_cards_page_through_one_kind_and_one_transition() -> None:
    from clearlake.quality_diff import compare
    from clearlake.review.diffs import cards, transition

    before = {f"{i:02d}.jpg": diff_record("good", f"s{i}", 0.9) for i in range(30)}
    after = {f"{i:02d}.jpg": diff_record("blurry" if i < 26 else "good", f"t{i}", 0.1)
             for i in range(30)}
    after["new.jpg"] = diff_record(None, "x", outcome="corrupt")
    diff = compare(before, after, repository="photos", from_ref="a", to_ref="b")
    first = cards(diff, "changed")
    assert (first.total, len(first.changes)) == (30, 24)
    rest = cards(diff, "changed", offset=24)
    assert [c.path for c in rest.changes] == [f"{i:02d}.jpg" for i in range(24, 30)]
    only = cards(diff, "changed", only="good→blurry", limit=100)
    assert only.total == 26 and {transition(c) for c in only.changes} == {"good→blurry"}
    [added] = cards(diff, "added").changes
    assert transition(added) == "∅→corrupt"


def test_the_diff_page_escapes_paths_and_shows_each_transition(review: ReviewApp) -> None:
    from clearlake.quality_diff import compare
    from clearlake.review.diffs import KINDS, cards, transition

    evil = "<img src=x onerror=alert(1)>.jpg"
    before = {evil: diff_record("good", "1", 0.9), "same.jpg": diff_record("good", "2", 0.8)}
    after = {evil: diff_record("blurry", "3", 0.2), "same.jpg": diff_record("moire", "2", 0.3)}
    diff = compare(before, after, repository="photos", from_ref="main", to_ref="next",
                   from_commit="a" * 64, to_commit="b" * 64)
    page = review.page("diff.html", repository="photos", ref="main...next", from_ref="main",
                       to_ref="next", diff=diff, sections=[cards(diff, k) for k in KINDS],
                       only="", transition=transition, lakefs_ui=UNREACHABLE).body.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert 'data-transition="good→blurry"' in page and 'data-transition="good→moire"' in page
    assert page.count('class="tile change') == 2
    # Before and after for new bytes; one picture for the same bytes relabelled.
    assert f"/review/photos/{'a' * 64}/thumb?path=same.jpg" in page
    assert f"/review/photos/{'b' * 64}/thumb?path=same.jpg" not in page


@pytest.mark.slow
def test_the_diff_page_shows_the_transitions_with_thumbnails(stack: Any, reviewed: Any) -> None:
    from clearlake.provenance import signing_key
    from clearlake.quality_diff import quality_diff
    from tests.review_support import signed_in_client

    expected = quality_diff(LakeFS(), reviewed.name, reviewed.first, "main", key=signing_key())
    assert sorted(c.path for c in expected.changed) == sorted(reviewed.blurred)
    with signed_in_client(stack) as client:
        page = client.get(f"/review/{reviewed.name}/{reviewed.first}...main")
        assert page.status_code == 200
        for name, count in expected.transitions.items():
            assert f"{name} <b>{count}</b>" in page.text
            assert page.text.count(f'data-transition="{name}"') == count
        changed = page.text.split('id="changed"', 1)[1].split("</section>", 1)[0]
        assert changed.count("/thumb?path=") == 2 * len(reviewed.blurred)  # before and after
        missing = client.get(f"/review/{reviewed.name}/{reviewed.first}...no-such-branch")
        assert missing.status_code == 404 and "no-such-branch" in missing.text
