"""`clearlake import`: an S3 prefix imported into a branch (zero-copy), then classified.

Images are put straight into the stack's own S3 server (lakeFS's blockstore) with
boto3, then imported by the CLI as a user runs it.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from clearlake.blocks import LakeFSCredentials, LakeFSRepository

from clearlake import layout
from clearlake.config import StackSecrets
from clearlake.errors import ConfigurationError, ConflictError, DirtyBranchError
from clearlake.importing import (
    ImportFailedError,
    S3Source,
    S3SourceError,
    check_source,
    import_from_s3,
    import_prefix,
    normalise_destination,
    source_bucket,
)
from clearlake.lakefs import LakeFS
from clearlake.stack import seaweedfs
from clearlake.stack.services import Stack, free_loopback_ports
from tests.pipeline_support import classify_runs, photo, run_cli, settled, unique_seed, wait_until

BUCKET = seaweedfs.BUCKET


# -- helpers -------------------------------------------------------------------------------
def s3_client(stack: Stack) -> Any:
    """boto3 on the stack's S3 server, with the stack's keys."""
    keys = StackSecrets.load(stack.home)
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=keys.s3_access_key_id,
                        aws_secret_access_key=keys.s3_secret_access_key.get_secret_value())


@pytest.fixture
def incoming(stack: Stack) -> Iterator[str]:
    """A fresh prefix of the stack's bucket (`incoming/<hex>/`), emptied afterwards."""
    prefix = f"incoming/{secrets.token_hex(4)}/"
    yield prefix
    client = s3_client(stack)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    if listed:
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]}
                                                                 for o in listed]})


def put_photos(stack: Stack, prefix: str, count: int) -> dict[str, bytes]:
    """Upload `count` distinct photographs under `prefix`; return them by file name."""
    seed = unique_seed()
    photos = {f"{i}.jpg": photo(seed + i) for i in range(count)}
    client = s3_client(stack)
    for name, data in photos.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}{name}", Body=data)
    return photos


def records_exist(lakefs: LakeFS, repo: str, paths: list[str]) -> bool:
    found = {o.path for o in lakefs.list_objects(repo, "main", layout.RECORDS_PREFIX)}
    return {layout.record_path(p) for p in paths} <= found


def branch_state(lakefs: LakeFS, repo: str, branch: str = "main") -> tuple[str, bool]:
    return lakefs.head(repo, branch), lakefs.has_uncommitted_changes(repo, branch)


# -- no servers ----------------------------------------------------------------------------
def test_sources_parse_as_prefixes() -> None:
    assert S3Source.parse("s3://photos/2026/raw").uri == "s3://photos/2026/raw/"
    assert S3Source.parse("s3://photos/2026/raw/") == S3Source("photos", "2026/raw/")
    assert S3Source.parse("s3://photos").uri == "s3://photos/"
    for bad in ("photos/raw", "gs://photos/raw", "s3:///raw", "/tmp/raw"):
        with pytest.raises(ConfigurationError, match="not an S3 prefix"):
            S3Source.parse(bad)


def test_destinations_are_folders_outside_clearlakes_own() -> None:
    assert normalise_destination("images") == "images/"
    assert normalise_destination("/images/2026/") == "images/2026/"
    for bad, reason in (("", "must be a folder"), ("/", "must be a folder"),
                        ("a/../b", r"'\.\.'"), ("_clearlake", "clearlake manages"),
                        ("_lakefs_actions/x", "clearlake manages")):
        with pytest.raises(ConfigurationError, match=reason):
            normalise_destination(bad)


# -- the stack -----------------------------------------------------------------------------
@pytest.mark.slow
def test_an_imported_prefix_is_committed_and_classified(
    stack: Stack, lakefs: LakeFS, watched_repo: str, incoming: str
) -> None:
    repo = watched_repo
    photos = put_photos(stack, incoming, 3)
    result = run_cli("import", f"s3://{BUCKET}/{incoming}", repo, "main", "--to", "images/",
                     "-m", "photos from the field", home=stack.home)
    assert "imported 3 objects" in result.stdout
    assert "post-commit hook told clearlake" in result.stdout  # lakeFS fired the hook
    # The run may have merged its results since: find the import on main's first parents.
    imported = next(c for c in lakefs.log(repo, "main", first_parent=True)
                    if c.message == "photos from the field")
    assert imported.metadata["clearlake.import.source"] == f"s3://{BUCKET}/{incoming}"
    assert imported.metadata["clearlake.import.objects"] == "3"
    paths = [f"images/{name}" for name in photos]
    assert [o.path for o in lakefs.list_objects(repo, imported.id, "images/")] == paths
    assert lakefs.get_object(repo, imported.id, paths[0]) == photos["0.jpg"]  # zero-copy read

    wait_until(lambda: records_exist(lakefs, repo, paths) and settled(lakefs, repo))
    runs = [r for r in classify_runs(repo) if r.parameters.get("commit") == imported.id]
    assert len(runs) == 1  # the hook's event only: the command sent no second one


@pytest.mark.slow
def test_when_the_hook_fails_the_command_sends_the_event_itself(
    stack: Stack, lakefs: LakeFS, watched_repo: str, incoming: str
) -> None:
    repo = watched_repo
    photos = put_photos(stack, incoming, 2)
    stack._stop(stack._running_pid("bridge"))
    try:
        result = run_cli("import", f"s3://{BUCKET}/{incoming}", repo, "main", home=stack.home)
    finally:
        stack.up(report=lambda line: None, deploy=False)
    assert "clearlake sent the event itself" in result.stdout
    wait_until(lambda: records_exist(lakefs, repo, [f"images/{n}" for n in photos]))


@pytest.mark.slow
def test_a_saved_s3bucket_block_names_the_source_store(
    stack: Stack, lakefs: LakeFS, repo: str, incoming: str
) -> None:
    put_photos(stack, incoming, 2)
    saved = source_bucket(S3Source.parse(f"s3://{BUCKET}/"), home=stack.home)
    name = f"test-source-{secrets.token_hex(4)}"
    saved.save(name)
    result = run_cli("import", f"s3://{BUCKET}/{incoming}", repo, "main", "--s3-bucket-block",
                     name, "--to", "field", home=stack.home, env={"AWS_ACCESS_KEY_ID": ""})
    assert "imported 2 objects" in result.stdout
    assert "no clearlake actions" in result.stdout  # a plain repository: says what to do
    assert [o.path for o in lakefs.list_objects(repo, "main", "field/")] == [
        "field/0.jpg", "field/1.jpg"]
    other = run_cli("import", f"s3://another-bucket/{incoming}", repo, "main",
                    "--s3-bucket-block", name, home=stack.home, check=False)
    assert other.returncode == 1
    assert f"is for bucket {BUCKET!r}, not 'another-bucket'" in other.stdout


@pytest.mark.slow
def test_a_prefix_that_does_not_exist_is_refused_and_nothing_committed(
    stack: Stack, lakefs: LakeFS, repo: str
) -> None:
    before = branch_state(lakefs, repo)
    missing = f"s3://{BUCKET}/incoming/missing-{secrets.token_hex(4)}/"
    result = run_cli("import", missing, repo, "main", home=stack.home, check=False)
    assert result.returncode == 1
    assert f"{missing}: prefix does not exist or is empty" in result.stdout.replace("\n", " ")
    assert branch_state(lakefs, repo) == before


@pytest.mark.slow
def test_a_bucket_that_does_not_exist_is_refused(
    stack: Stack, lakefs: LakeFS, repo: str
) -> None:
    before = branch_state(lakefs, repo)
    result = run_cli("import", "s3://no-such-bucket-here/photos/", repo, "main",
                     home=stack.home, check=False)
    assert result.returncode == 1
    assert "bucket 'no-such-bucket-here' does not exist" in result.stdout
    assert branch_state(lakefs, repo) == before


@pytest.mark.slow
def test_wrong_credentials_are_refused(
    stack: Stack, lakefs: LakeFS, repo: str, incoming: str
) -> None:
    put_photos(stack, incoming, 1)
    wrong = {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": "wrong",
             "AWS_ENDPOINT_URL": stack.s3_endpoint}
    result = run_cli("import", f"s3://{BUCKET}/{incoming}", repo, "main", home=stack.home,
                     env=wrong, check=False)
    assert result.returncode == 1
    assert "refused the credentials" in result.stdout
    assert "wrong" not in result.stdout.replace("wrong credentials", "")  # no secret echoed


@pytest.mark.slow
def test_a_failed_import_leaves_the_branch_unchanged(lakefs: LakeFS, repo: str) -> None:
    # lakeFS itself fails here (the source is not checked first): nothing is committed.
    before = branch_state(lakefs, repo)
    with pytest.raises(ImportFailedError, match=r"NoSuchBucket.*Nothing was committed"):
        import_prefix(lakefs, S3Source.parse("s3://no-such-bucket-here/photos/"), repo, "main")
    assert branch_state(lakefs, repo) == before


@pytest.mark.slow
def test_an_occupied_destination_is_replaced_only_when_asked(
    stack: Stack, lakefs: LakeFS, repo: str, incoming: str
) -> None:
    put_photos(stack, f"{incoming}first/", 2)
    put_photos(stack, f"{incoming}second/", 1)
    first = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}first/"), home=stack.home)
    second = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}second/"), home=stack.home)
    summary, result = import_from_s3(lakefs, first, repo, "main")
    assert (summary.objects, result.objects) == (2, 2)
    head = lakefs.head(repo, "main")
    with pytest.raises(ConflictError, match=r"already holds objects.*--replace"):
        import_from_s3(lakefs, second, repo, "main")
    assert lakefs.head(repo, "main") == head
    import_from_s3(lakefs, second, repo, "main", replace=True)
    assert [o.path for o in lakefs.list_objects(repo, "main", "images/")] == ["images/0.jpg"]


@pytest.mark.slow
def test_a_dirty_branch_is_refused(
    stack: Stack, lakefs: LakeFS, repo: str, incoming: str
) -> None:
    put_photos(stack, incoming, 1)
    lakefs.upload_object(repo, "main", "notes.txt", b"uncommitted")
    bucket = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}"), home=stack.home)
    with pytest.raises(DirtyBranchError, match="uncommitted changes"):
        import_from_s3(lakefs, bucket, repo, "main")


@pytest.mark.slow
def test_a_source_inside_a_repositorys_namespace_is_refused(lakefs: LakeFS, repo: str) -> None:
    namespace = lakefs.repositories.get_repository(repo).storage_namespace
    with pytest.raises(ConfigurationError, match="overlaps a repository's storage namespace"):
        import_prefix(lakefs, S3Source.parse(namespace), repo, "main")


@pytest.mark.slow
def test_the_source_is_counted_through_its_s3bucket_block(stack: Stack, incoming: str) -> None:
    photos = put_photos(stack, incoming, 3)
    bucket = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}"), home=stack.home)
    assert bucket.bucket_folder == incoming
    summary = check_source(bucket)
    assert (summary.objects, summary.size_bytes) == (3, sum(map(len, photos.values())))
    empty = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}nothing/"), home=stack.home)
    with pytest.raises(S3SourceError, match="prefix does not exist or is empty"):
        check_source(empty)


@pytest.fixture
def local_blockstore_lakefs(tmp_path: Path) -> Iterator[LakeFS]:
    """A lakeFS alone, on its local blockstore (which cannot import)."""
    local = Stack(home=tmp_path / "local", ports=free_loopback_ports(), blockstore="local")
    keys = StackSecrets.load_or_create(local.home)
    service = local._lakefs(keys)
    local._start(service)
    try:
        local._wait_healthy(service)
        yield LakeFS.connect(local.lakefs_url, keys.lakefs_access_key_id,
                             keys.lakefs_secret_access_key)
    finally:
        local.down(report=lambda line: None)


@pytest.mark.slow
def test_a_lakefs_that_cannot_import_says_so(
    stack: Stack, local_blockstore_lakefs: LakeFS, incoming: str
) -> None:
    lakefs = local_blockstore_lakefs
    lakefs.create_repository("photos")
    assert lakefs.storage_config().import_support is False
    put_photos(stack, incoming, 1)
    head = lakefs.head("photos", "main")
    bucket = source_bucket(S3Source.parse(f"s3://{BUCKET}/{incoming}"), home=stack.home)
    with pytest.raises(ConfigurationError, match="'local' blockstore does not support it"):
        import_from_s3(lakefs, bucket, "photos", "main")
    assert lakefs.head("photos", "main") == head


# -- LakeFSRepository.s3_bucket ------------------------------------------------------------
@pytest.mark.slow
def test_a_write_through_the_s3_gateway_bucket_is_classified_after_its_commit(
    lakefs: LakeFS, watched_repo: str
) -> None:
    repo = watched_repo
    credentials = LakeFSCredentials(endpoint_url=lakefs.settings.endpoint,
                                    access_key_id=lakefs.settings.access_key_id,
                                    secret_access_key=lakefs.settings.secret_access_key)
    bucket = LakeFSRepository(credentials=credentials, repository=repo, ref="main").s3_bucket()
    assert (bucket.bucket_name, bucket.bucket_folder) == (repo, "main")
    seed = unique_seed()
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "photo.jpg"
        local.write_bytes(photo(seed))
        assert bucket.upload_from_path(str(local), "gateway/uploaded.jpg") == (
            "main/gateway/uploaded.jpg")
    bucket.write_path("gateway/written.jpg", photo(seed + 1))
    assert bucket.read_path("gateway/written.jpg") == photo(seed + 1)
    lakefs.commit(repo, "main", "two photos through the S3 gateway")
    wait_until(lambda: records_exist(lakefs, repo, ["gateway/uploaded.jpg",
                                                    "gateway/written.jpg"]))
