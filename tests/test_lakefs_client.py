"""The lakeFS module against a real lakeFS: typed errors, transactions, diffs."""

from __future__ import annotations

import pytest

from clearlake.errors import NotFoundError, PermissionDeniedError
from clearlake.lakefs import LakeFS
from clearlake.metrics_store import MetricsStore
from clearlake.transaction import MergePending, Transaction, finish_pending
from tests.pipeline_support import CountingLakeFS


@pytest.mark.slow
def test_missing_repository_is_not_found_and_named(lakefs: LakeFS) -> None:
    with pytest.raises(NotFoundError) as caught:
        lakefs.get_object("no-such-repo", "main", "a/b.jpg")
    assert "no-such-repo" in str(caught.value)
    assert "a/b.jpg" in str(caught.value)
    assert caught.value.repository == "no-such-repo"


@pytest.mark.slow
def test_bad_credentials_are_permission_denied(lakefs: LakeFS, repo: str) -> None:
    intruder = LakeFS.connect(lakefs.settings.endpoint, "AKIAIOSFODNN7EXAMPLE", "wrong")
    with pytest.raises(PermissionDeniedError) as caught:
        intruder.head(repo, "main")
    assert repo in str(caught.value)


@pytest.mark.slow
def test_object_requests_are_typed_and_keep_awkward_paths_intact(
    lakefs: LakeFS, repo: str
) -> None:
    intruder = LakeFS.connect(lakefs.settings.endpoint, "AKIAIOSFODNN7EXAMPLE", "wrong")
    with pytest.raises(PermissionDeniedError):
        intruder.upload_object(repo, "main", "x.json", b"{}")
    with pytest.raises(PermissionDeniedError):
        intruder.get_object(repo, "main", "x.json")
    with pytest.raises(NotFoundError) as caught:
        lakefs.get_object(repo, "main", "no/such object.jpg")
    assert caught.value.path == "no/such object.jpg"
    awkward = "odd names/a b+c?d=e&f#g%20h ünï.jpg"
    stats = lakefs.upload_object(repo, "main", awkward, b"bytes")
    assert (stats.path, stats.size) == (awkward, 5)
    assert lakefs.get_object(repo, "main", awkward) == b"bytes"
    assert lakefs.get_object(repo, "main", awkward) == b"bytes"  # the kept-alive connection


@pytest.mark.slow
def test_create_repository_twice_is_harmless(lakefs: LakeFS, repo: str) -> None:
    assert lakefs.create_repository(repo) is False


@pytest.mark.slow
def test_two_dot_diff_lists_only_the_change(lakefs: LakeFS, repo: str) -> None:
    lakefs.upload_object(repo, "main", "img/a.jpg", b"a")
    lakefs.upload_object(repo, "main", "img/b.jpg", b"b")
    first = lakefs.commit(repo, "main", "two images")
    lakefs.upload_object(repo, "main", "img/b.jpg", b"b2")
    lakefs.delete_objects(repo, "main", ["img/a.jpg"])
    lakefs.upload_object(repo, "main", "img/c.jpg", b"c")
    second = lakefs.commit(repo, "main", "change, delete, add")
    changes = {(d.path, d.change) for d in lakefs.diff(repo, first, second)}
    assert changes == {("img/a.jpg", "removed"), ("img/b.jpg", "changed"), ("img/c.jpg", "added")}


@pytest.mark.slow
def test_transaction_never_sweeps_up_uncommitted_work(lakefs: LakeFS, repo: str) -> None:
    lakefs.upload_object(repo, "main", "user/wip.txt", b"not yet committed")
    with (
        pytest.raises(MergePending) as caught,
        Transaction(lakefs, repo, "main", merge_timeout_s=1.0) as tx,
    ):
        tx.upload("_clearlake/result.json", b"{}")
        tx.commit("results", {"clearlake": "1"})
    pending = caught.value.temp_branch
    # Nothing reached main; the user's work is still staged, untouched.
    with pytest.raises(NotFoundError):
        lakefs.get_object(repo, "main", "_clearlake/result.json")
    assert lakefs.has_uncommitted_changes(repo, "main")

    lakefs.commit(repo, "main", "user commits their work")
    merged = finish_pending(lakefs, repo, pending, "main")
    assert lakefs.get_object(repo, merged, "_clearlake/result.json") == b"{}"
    assert lakefs.get_object(repo, merged, "user/wip.txt") == b"not yet committed"
    assert pending not in {name for name, _ in lakefs.list_branches(repo)}


@pytest.mark.slow
def test_failed_transaction_leaves_nothing(lakefs: LakeFS, repo: str) -> None:
    before = lakefs.head(repo, "main")
    with pytest.raises(RuntimeError), Transaction(lakefs, repo, "main") as tx:
        tx.upload("_clearlake/partial.json", b"{}")
        raise RuntimeError("the run died")
    assert lakefs.head(repo, "main") == before
    assert [name for name, _ in lakefs.list_branches(repo)] == ["main"]


@pytest.mark.slow
def test_uploads_queued_in_the_background_are_committed_or_left_nowhere(
    lakefs: LakeFS, repo: str
) -> None:
    with Transaction(lakefs, repo, "main") as tx:
        tx.upload_in_background((f"_clearlake/r/{i:02d}.json", b"{}") for i in range(40))
        merged = tx.commit("results")  # waits for every queued upload
    assert len(list(lakefs.list_objects(repo, merged, "_clearlake/r/"))) == 40
    assert set(tx.seconds) == {"branch", "uploads", "commit", "merge"}  # what a run reports

    before = lakefs.head(repo, "main")
    with pytest.raises(RuntimeError), Transaction(lakefs, repo, "main") as tx:
        tx.upload_in_background((f"_clearlake/s/{i:02d}.json", b"{}") for i in range(40))
        raise RuntimeError("the run died while measuring")
    assert lakefs.head(repo, "main") == before
    assert [name for name, _ in lakefs.list_branches(repo)] == ["main"]


@pytest.mark.slow
def test_a_store_write_makes_one_commit_and_nothing_when_empty(lakefs: LakeFS, repo: str) -> None:
    store = MetricsStore(lakefs, f"{repo}-store")
    with store.write() as writing:
        assert writing.commit("nothing new") is None
        assert writing.seconds == {}
    assert not lakefs.repository_exists(store.repository)  # not even created
    try:
        with store.write() as writing:
            writing.add({"a.json": b"1"})
            writing.add({"b.json": b"2"})
            merged = writing.commit("two entries")
        assert merged == lakefs.head(store.repository, "main")
        assert lakefs.get_object(store.repository, "main", "a.json") == b"1"
        assert lakefs.get_object(store.repository, "main", "b.json") == b"2"
        assert [name for name, _ in lakefs.list_branches(store.repository)] == ["main"]
    finally:
        lakefs.delete_repository(store.repository)


@pytest.mark.slow
def test_diff_pages_past_one_thousand_changes(lakefs: LakeFS, repo: str) -> None:
    before = lakefs.head(repo, "main")
    lakefs.upload_many(repo, "main", ((f"many/{i:05d}.jpg", b"x") for i in range(1005)))
    after = lakefs.commit(repo, "main", "more than a page of changes")
    assert len(list(lakefs.diff(repo, before, after))) == 1005
    folders = list(lakefs.diff(repo, before, after, delimiter="/"))
    assert [(f.path, f.change) for f in folders] == [("many/", "prefix")]


@pytest.mark.slow
def test_read_existing_lists_a_dense_lookup_and_reads_only_what_exists(
    lakefs: LakeFS, repo: str
) -> None:
    lakefs.upload_many(repo, "main", ((f"keys/{i:04d}.json", b"%d" % i) for i in range(0, 600, 2)))
    counting = CountingLakeFS(lakefs)
    sought = [f"keys/{i:04d}.json" for i in range(0, 600, 3)]  # every other one exists
    found = counting.read_existing(repo, "main", [*sought, "nowhere/else.json"])
    assert found == {f"keys/{i:04d}.json": b"%d" % i for i in range(0, 600, 6)}
    assert counting.object_reads == len(found)  # no request for any missing object
    assert counting.pages == 2  # 300 entries: a first small page, then the rest


@pytest.mark.slow
def test_read_existing_reads_one_by_one_where_listing_would_cost_more(
    lakefs: LakeFS, repo: str
) -> None:
    lakefs.upload_many(repo, "main", ((f"keys/{i:04d}.json", b"%d" % i) for i in range(1000)))
    counting = CountingLakeFS(lakefs)
    # The first page after 'keys/0000.jsonx' answers for it alone: 200 entries for one path.
    found = counting.read_existing(repo, "main", ["keys/0000.jsonx", "keys/0999.json"])
    assert found == {"keys/0999.json": b"999"}
    assert (counting.pages, counting.object_reads) == (1, 1)


@pytest.mark.slow
def test_a_store_that_does_not_exist_yet_knows_nothing(lakefs: LakeFS, repo: str) -> None:
    store = MetricsStore(lakefs, f"{repo}-nostore")
    assert store.sha256s_for([("abc", 1), ("def", 2)]) == {}
    assert store.documents(["00" * 32, "ff" * 32]) == {}
