"""lakeFS over the stack's S3 server: namespaces from configuration, and presigned reads."""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from collections.abc import Iterator

import pytest

from clearlake import pipeline
from clearlake.errors import ClearlakeError, ConfigurationError, PermissionDeniedError
from clearlake.lakefs import LakeFS
from clearlake.metrics_store import MetricsStore
from clearlake.stack import seaweedfs
from clearlake.stack.services import Stack
from tests.pipeline_support import (
    CountingLakeFS,
    commit_images,
    photo,
    unique_seed,
    wait_until,
)


@pytest.mark.slow
def test_the_stack_runs_lakefs_over_its_own_s3_server(stack: Stack, lakefs: LakeFS) -> None:
    storage = lakefs.storage_config()
    assert (storage.blockstore_type, storage.pre_sign_support) == ("s3", True)
    assert storage.default_namespace_prefix == f"s3://{seaweedfs.BUCKET}/"
    assert lakefs.storage_namespace("photos") == f"s3://{seaweedfs.BUCKET}/photos"


@pytest.mark.slow
def test_new_repositories_take_their_namespace_from_the_setting(
    stack: Stack, lakefs: LakeFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARLAKE_STORAGE_NAMESPACE", f"s3://{seaweedfs.BUCKET}/team")
    from clearlake.config import lakefs_settings

    configured = LakeFS(lakefs_settings(stack.home))
    name = f"test-{secrets.token_hex(4)}"
    assert configured.create_repository(name)
    try:
        namespace = configured.repositories.get_repository(name).storage_namespace
        assert namespace == f"s3://{seaweedfs.BUCKET}/team/{name}"
    finally:
        configured.delete_repository(name)


@pytest.mark.slow
def test_a_namespace_lakefs_refuses_names_itself_and_the_blockstore(lakefs: LakeFS) -> None:
    name = f"test-{secrets.token_hex(4)}"
    with pytest.raises(ConfigurationError) as refused:
        lakefs.create_repository(name, f"local://{name}")
    assert f"local://{name}" in str(refused.value) and "'s3' blockstore" in str(refused.value)
    assert not lakefs.repository_exists(name)


class _RefusedURLs(CountingLakeFS):
    """Hands out URLs the object store refuses, as it does once they have expired; with
    `always`, fresh ones too."""

    def __init__(self, lakefs: LakeFS, *, always: bool = False) -> None:
        super().__init__(lakefs)
        self.always = always

    def presigned_urls(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return {path: _spoilt(url) for path, url in super().presigned_urls(*args, **kwargs).items()}

    def presign(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        url = super().presign(*args, **kwargs)
        return _spoilt(url) if self.always else url


def _spoilt(url: str) -> str:
    """`url` with its signature changed: the store answers 403, as for an expired one."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    query["X-Amz-Signature"] = ["0" * 64]
    return parts._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()


def _images(lakefs: LakeFS, repo: str, commit: str) -> list[pipeline.Datum]:
    """The committed images, as a run plans them."""
    return [pipeline.Datum(o.path, o.checksum, o.size)
            for o in lakefs.list_objects(repo, commit, "images/")]


@pytest.fixture
def committed(lakefs: LakeFS, repo: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    seed = unique_seed()
    images = {f"images/{i:03d}.jpg": photo(seed + i) for i in range(40)}
    images.update({f"other/{i:04d}.txt": b"x" for i in range(600)})  # a dense neighbour
    yield commit_images(lakefs, repo, images), images


@pytest.mark.slow
def test_a_batch_gets_its_urls_from_one_listing_page_and_bytes_from_the_store(
    stack: Stack, lakefs: LakeFS, repo: str, committed: tuple[str, dict[str, bytes]]
) -> None:
    commit, images = committed
    counting = CountingLakeFS(lakefs)
    wanted = sorted(p for p in images if p.startswith("images/"))
    urls = counting.presigned_urls(repo, commit, wanted)
    assert sorted(urls) == wanted
    assert (counting.pages, counting.presigns) == (1, 0)
    assert all(url.startswith(f"{stack.s3_endpoint}/") for url in urls.values())
    assert counting.read_presigned(urls[wanted[0]], repo, commit, wanted[0]) == images[wanted[0]]

    # 300 neighbours: pages sized to what is left to find, not a thousand URLs for 100.
    counting.pages = counting.entries = 0
    neighbours = [f"other/{i:04d}.txt" for i in range(300)]
    assert sorted(counting.presigned_urls(repo, commit, neighbours)) == neighbours
    assert (counting.pages, counting.entries, counting.presigns) == (2, 400, 0)

    # One image among many others: one wasted page, then it is presigned on its own.
    counting.pages = 0
    lone = counting.presigned_urls(repo, commit, ["other/0000.txt", "other/0599.txt"])
    assert set(lone) == {"other/0000.txt", "other/0599.txt"}
    assert (counting.pages, counting.presigns) == (1, 1)


@pytest.mark.slow
def test_measure_batch_reads_presigned_and_never_through_lakefs(
    lakefs: LakeFS, repo: str, committed: tuple[str, dict[str, bytes]]
) -> None:
    commit, images = committed
    counting = CountingLakeFS(lakefs)
    datums = _images(lakefs, repo, commit)[:10]
    measured = pipeline.measure_batch(counting, MetricsStore(lakefs), repo, commit, datums,
                                      "run-presigned", presigned=True)
    assert [m.origin for m in measured] == ["computed"] * 10
    assert {m.path: m.analysis.sha256 for m in measured} == {
        d.path: hashlib.sha256(images[d.path]).hexdigest() for d in datums}
    assert counting.object_reads == 0  # not one image byte through lakeFS's object API
    assert counting.presigns == 0


@pytest.mark.slow
def test_a_refused_url_is_presigned_again_once(
    lakefs: LakeFS, repo: str, committed: tuple[str, dict[str, bytes]]
) -> None:
    commit, _ = committed
    datums = _images(lakefs, repo, commit)[10:14]
    refused = _RefusedURLs(lakefs)
    with pytest.raises(PermissionDeniedError):
        url = next(iter(refused.presigned_urls(repo, commit, [datums[0].path]).values()))
        refused.read_presigned(url, repo, commit, datums[0].path)
    measured = pipeline.measure_batch(refused, MetricsStore(lakefs), repo, commit, datums,
                                      "run-refreshed", presigned=True)
    assert [m.origin for m in measured] == ["computed"] * 4
    assert refused.presigns == 4  # once each, after the refusal


@pytest.mark.slow
def test_an_image_the_store_keeps_refusing_is_a_typed_failure_retried_later(
    lakefs: LakeFS, repo: str, committed: tuple[str, dict[str, bytes]]
) -> None:
    commit, _ = committed
    datums = _images(lakefs, repo, commit)[14:17]
    refused = _RefusedURLs(lakefs, always=True)
    measured = pipeline.measure_batch(refused, MetricsStore(lakefs), repo, commit, datums,
                                      "run-refused", presigned=True)
    assert [(m.origin, m.analysis.outcome) for m in measured] == [("failed", "failed")] * 3
    assert all("object store" in m.analysis.reason and "SignatureDoesNotMatch"
               in m.analysis.reason for m in measured)
    assert refused.presigns == 3  # one fresh URL each, no more
    # Nothing of a failure is remembered as a measurement.
    assert pipeline.store_documents(measured) == {}


@pytest.mark.slow
def test_a_bucket_that_does_not_exist_is_a_clear_error(lakefs: LakeFS) -> None:
    name = f"test-{secrets.token_hex(4)}"
    with pytest.raises(ConfigurationError) as refused:
        lakefs.create_repository(name, f"s3://no-such-bucket-{name}/{name}")
    assert f"s3://no-such-bucket-{name}/{name}" in str(refused.value)
    assert not lakefs.repository_exists(name)


def _serves(lakefs: LakeFS, repo: str, commit: str, path: str) -> bool:
    """Whether the object store answers a presigned read of `path` now."""
    try:
        url = lakefs.presigned_urls(repo, commit, [path])[path]
        lakefs.read_presigned(url, repo, commit, path)
    except ClearlakeError:
        return False
    return True


@pytest.mark.slow
def test_the_s3_server_down_mid_run_gives_typed_failures_and_nothing_else(
    stack: Stack, lakefs: LakeFS, repo: str, committed: tuple[str, dict[str, bytes]]
) -> None:
    commit, _ = committed
    datums = _images(lakefs, repo, commit)[20:24]
    s3_pid = next(s.pid for s in stack.status() if s.name == "s3")
    stack._stop(s3_pid)
    try:
        measured = pipeline.measure_batch(lakefs, MetricsStore(lakefs), repo, commit, datums,
                                          "run-s3-down", presigned=True)
    finally:
        stack.up(report=lambda line: None, deploy=False)  # only the S3 server was stopped
    assert [(m.origin, m.analysis.outcome) for m in measured] == [("failed", "failed")] * 4
    assert all("could not read the image from the object store" in m.analysis.reason
               for m in measured)
    # Back up, the same images read and measure, once the restarted server serves reads.
    # In one full suite all four failed just after `stack.up` returned; the cause is not
    # known (alone it passes, and a restarted `weed mini` serves reads as soon as it is
    # healthy, its volume server already registered). A run in that moment records typed
    # failures, retried by the next run.
    wait_until(lambda: _serves(lakefs, repo, commit, datums[0].path), timeout_s=60)
    again = pipeline.measure_batch(lakefs, MetricsStore(lakefs), repo, commit, datums,
                                   "run-s3-back", presigned=True)
    assert [m.origin for m in again] == ["computed"] * 4
