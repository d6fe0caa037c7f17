"""Import an existing S3 prefix into a lakeFS branch (zero-copy), then let it be classified.

lakeFS's import (`ImportApi.import_start`) walks an object-store prefix with lakeFS's
own blockstore credentials and commits pointers to the objects, without copying
them, as one commit on the branch. It is atomic: it commits everything or nothing.
Two things about it shape this module:

* lakeFS imports only from storage its blockstore can read: the same kind of store
  (`s3://` on an S3 blockstore; none at all on the `local` blockstore, whose
  `import_support` is false), reachable with the blockstore's credentials.
* The import replaces everything under its destination on the branch: objects there
  that are not in the source disappear (`committedManager.Import` skips the
  destination prefix of the branch's tree). An empty or missing source prefix would
  therefore commit the removal of the destination. So the source is checked first,
  through a prefect-aws `S3Bucket` block (must exist and hold objects), and an
  occupied destination is refused unless the caller asks to replace it.

The import's commit is an ordinary commit: lakeFS runs the repository's pre-commit
and post-commit hooks for it (`Graveler.Import` in `pkg/graveler/graveler.go` of
lakeFS v1.84.0 calls `hooks.PreCommitHook` before adding the commit and
`hooks.PostCommitHook` after moving the branch), so clearlake's action tells the
bridge and the classification follows like for any commit. Should that hook fail
(bridge down), `emit_commit_event` sends the very event the bridge would have.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import lakefs_sdk

from clearlake.errors import (
    ClearlakeError,
    ConfigurationError,
    ConflictError,
    DirtyBranchError,
    HookRejectedError,
    LakeFSError,
    NotFoundError,
)
from clearlake.lakefs import LakeFS, _translate
from clearlake.layout import NEVER_INPUTS

if TYPE_CHECKING:
    from prefect_aws import S3Bucket

DEFAULT_DESTINATION = "images/"
DEFAULT_TIMEOUT_S = 3600.0
# A post-commit hook runs after the commit, and lakeFS records its run once the hook
# has answered; clearlake's hook times out after 30 s (clearlake.actions).
HOOK_WAIT_S = 45.0
REGION = "us-east-1"


class S3SourceError(ConfigurationError):
    """The S3 source cannot be imported: unreachable, refused, missing or empty.

    Attributes:
        uri: the `s3://bucket/prefix/` that was checked.
    """

    def __init__(self, message: str, *, uri: str) -> None:
        self.uri = uri
        super().__init__(message)


class ImportFailedError(LakeFSError):
    """lakeFS accepted the import but could not complete it; the branch is unchanged."""


@dataclass(frozen=True)
class S3Source:
    """An S3 prefix to import.

    Attributes:
        bucket: the bucket name.
        prefix: the key prefix, '' (the whole bucket) or ending with '/'.
    """

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Source:
        """`s3://bucket/some/prefix` (a trailing '/' is implied: a prefix is a folder).

        Raises:
            ConfigurationError: not an `s3://` URI with a bucket.
        """
        scheme, sep, rest = uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme != "s3" or not sep or not bucket:
            raise ConfigurationError(
                f"{uri!r} is not an S3 prefix: write s3://BUCKET/PREFIX/ (lakeFS imports "
                f"from the kind of store its blockstore is: s3:// for an S3 blockstore)")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    @property
    def uri(self) -> str:
        """The `s3://bucket/prefix/` lakeFS is asked to import."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class SourceSummary:
    """What an S3 prefix holds, as listed through its `S3Bucket` block.

    Attributes:
        objects: how many objects.
        size_bytes: their total size.
    """

    objects: int
    size_bytes: int


@dataclass(frozen=True)
class ImportResult:
    """A completed import.

    Attributes:
        repository: the repository.
        branch: the branch it was committed to.
        destination: the folder on the branch the objects went to.
        source: the `s3://` prefix imported.
        commit_id: the import's commit.
        objects: objects lakeFS ingested.
    """

    repository: str
    branch: str
    destination: str
    source: str
    commit_id: str
    objects: int


# -- the source, through prefect-aws ----------------------------------------------------------
def aws_credentials(
    access_key_id: str, secret_access_key: str, endpoint_url: str | None = None,
    region: str = REGION,
) -> Any:
    """A prefect-aws `AwsCredentials` block; path-style addressing for an S3-compatible store.

    Args:
        access_key_id: the access key id.
        secret_access_key: the secret key (kept as a `SecretStr`).
        endpoint_url: the store's endpoint; None means AWS S3 itself.
        region: the region to sign for.
    """
    from prefect_aws import AwsClientParameters, AwsCredentials
    from pydantic import SecretStr

    parameters = AwsClientParameters(
        endpoint_url=endpoint_url,
        config={"s3": {"addressing_style": "path"}} if endpoint_url else None,
    )
    return AwsCredentials(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=SecretStr(secret_access_key),
        region_name=region,
        aws_client_parameters=parameters,
    )


def source_bucket(
    source: S3Source,
    *,
    block_name: str | None = None,
    endpoint_url: str | None = None,
    home: Path | None = None,
) -> S3Bucket:
    """The prefect-aws `S3Bucket` (with `bucket_folder` = the prefix) to read `source` with.

    In order: a saved `S3Bucket` block by name (its bucket must be the source's); else
    `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (with `endpoint_url` or
    `AWS_ENDPOINT_URL`, and `AWS_REGION`); else the local stack's own S3 server and
    keys, when its blockstore is S3.

    Raises:
        ConfigurationError: no credentials, or a block for another bucket.
    """
    from prefect_aws import S3Bucket

    if block_name:
        block = S3Bucket.load(block_name)
        if block.bucket_name != source.bucket:
            raise ConfigurationError(
                f"S3Bucket block {block_name!r} is for bucket {block.bucket_name!r}, not "
                f"{source.bucket!r}: name a block for {source.bucket!r}, or import from "
                f"s3://{block.bucket_name}/…")
        return block.model_copy(update={"bucket_folder": source.prefix})
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or REGION
    if not (key_id and secret):
        key_id, secret, stack_endpoint = _stack_s3(home)
        endpoint = endpoint or stack_endpoint
        region = REGION
    credentials = aws_credentials(key_id, secret, endpoint, region)
    return S3Bucket(bucket_name=source.bucket, bucket_folder=source.prefix,
                    credentials=credentials)


def _stack_s3(home: Path | None) -> tuple[str, str, str]:
    """The local stack's S3 keys and endpoint (lakeFS's blockstore)."""
    from clearlake.config import StackSecrets, state_dir
    from clearlake.stack.services import Stack, recorded_profile

    home = home or state_dir()
    profile = recorded_profile(home)
    if profile is None or profile.blockstore != "s3" or not (home / "secrets.json").exists():
        raise ConfigurationError(
            f"no S3 credentials for the source: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL or --endpoint-url for an "
            f"S3-compatible store), or name a saved S3Bucket block; the local stack in "
            f"{home} has no S3 server of its own to default to")
    secrets = StackSecrets.load(home)
    return (secrets.s3_access_key_id, secrets.s3_secret_access_key.get_secret_value(),
            Stack(home=home).s3_endpoint)


def check_source(bucket: S3Bucket) -> SourceSummary:
    """Count the objects under the block's folder; refuse a source lakeFS must not import.

    Raises:
        S3SourceError: the store is unreachable, the credentials are refused, the
            bucket does not exist, or the prefix does not exist or is empty.
    """
    import botocore.exceptions

    uri = S3Source(bucket.bucket_name, bucket.bucket_folder).uri
    client = bucket.credentials.get_s3_client()
    endpoint = client.meta.endpoint_url
    objects = size = 0
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket.bucket_name, Prefix=bucket.bucket_folder)
        for page in pages:
            for entry in page.get("Contents", []):
                objects += 1
                size += int(entry.get("Size", 0))
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise S3SourceError(_client_error_text(code, error, uri, endpoint), uri=uri) from error
    except botocore.exceptions.NoCredentialsError as error:
        raise S3SourceError(f"no S3 credentials to list {uri}: set AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY, or name an S3Bucket block", uri=uri) from error
    except botocore.exceptions.BotoCoreError as error:
        raise S3SourceError(f"cannot list {uri} at {endpoint}: {error}", uri=uri) from error
    if objects == 0:
        raise S3SourceError(
            f"{uri}: prefix does not exist or is empty (at {endpoint}). Nothing to import; "
            f"lakeFS would only remove what the destination holds. Check the bucket and "
            f"prefix", uri=uri)
    return SourceSummary(objects, size)


def _client_error_text(code: str, error: Exception, uri: str, endpoint: str) -> str:
    if code == "NoSuchBucket":
        return (f"bucket {uri.split('/')[2]!r} does not exist at {endpoint}: check the "
                f"bucket name and the endpoint (--endpoint-url / AWS_ENDPOINT_URL)")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                "ExpiredToken", "AccessDenied", "403"):
        return (f"the S3 server at {endpoint} refused the credentials for {uri} ({code}): "
                f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the S3Bucket block's "
                f"credentials")
    return f"cannot list {uri} at {endpoint}: {error}"


# -- the import, through lakeFS -------------------------------------------------------------
def normalise_destination(destination: str) -> str:
    """The destination as a folder ('images/'); refuses the root and clearlake's own folders.

    Raises:
        ConfigurationError: '' or '/', a path with '..', or one that would replace
            `_clearlake/` or `_lakefs_actions/`.
    """
    parts = PurePosixPath(destination.strip("/")).parts if destination.strip("/") else ()
    if ".." in parts:
        raise ConfigurationError(f"destination {destination!r} must not contain '..'")
    folder = "/".join(p for p in parts if p not in ("", ".")) + "/"
    if folder == "/":
        raise ConfigurationError(
            "destination must be a folder such as images/: lakeFS's import replaces "
            "everything under its destination, and the branch root holds clearlake's "
            "results and lakeFS actions")
    for reserved in NEVER_INPUTS:
        if folder.startswith(reserved):
            raise ConfigurationError(
                f"destination {folder!r} is inside {reserved!r}, which clearlake manages: "
                f"choose another folder (e.g. images/)")
    return folder


def import_start(
    lakefs: LakeFS, repository: str, branch: str, source: S3Source, destination: str,
    message: str, metadata: dict[str, str] | None = None,
) -> str:
    """Ask lakeFS to import `source` under `destination` on `branch`; return the import id."""
    creation = lakefs_sdk.ImportCreation(
        paths=[lakefs_sdk.ImportLocation(type="common_prefix", path=source.uri,
                                         destination=destination)],
        commit=lakefs_sdk.CommitCreation(message=message, metadata=metadata or {}),
    )
    with _translate(f"import {source.uri}", repository, branch, destination):
        return lakefs_sdk.ImportApi(lakefs.client).import_start(repository, branch, creation).id


def import_status(
    lakefs: LakeFS, repository: str, branch: str, import_id: str
) -> lakefs_sdk.ImportStatus:
    """lakeFS's status of import `import_id`."""
    with _translate(f"import status {import_id}", repository, branch):
        return lakefs_sdk.ImportApi(lakefs.client).import_status(repository, branch, import_id)


def import_cancel(lakefs: LakeFS, repository: str, branch: str, import_id: str) -> None:
    """Cancel a running import (nothing is committed); one already finished stays."""
    try:
        with _translate(f"cancel import {import_id}", repository, branch):
            lakefs_sdk.ImportApi(lakefs.client).import_cancel(repository, branch, import_id)
    except (ConflictError, NotFoundError):
        pass  # finished (or forgotten) meanwhile


def check_target(
    lakefs: LakeFS, repository: str, branch: str, destination: str, *, replace: bool = False
) -> str:
    """Check that lakeFS can import into `destination` on `branch`; return the branch head.

    Raises:
        ConfigurationError: the lakeFS blockstore cannot import (e.g. `local`).
        NotFoundError: no such repository or branch.
        DirtyBranchError: the branch has uncommitted changes (lakeFS would refuse).
        ConflictError: the destination holds objects and `replace` is False.
    """
    storage = lakefs.storage_config()
    if not storage.import_support:
        raise ConfigurationError(
            f"the lakeFS server at {lakefs.settings.endpoint} cannot import: its "
            f"{storage.blockstore_type!r} blockstore does not support it. Import needs lakeFS "
            f"on S3 (the local stack's default: `clearlake stack up --blockstore s3` in a new "
            f"state directory); or upload the images instead (lakectl fs upload)")
    if storage.blockstore_type != "s3":
        raise ConfigurationError(
            f"the lakeFS server at {lakefs.settings.endpoint} keeps its data on "
            f"{storage.blockstore_type!r}, so it can import only from there, not from s3://")
    head = lakefs.head(repository, branch)
    if lakefs.has_uncommitted_changes(repository, branch):
        raise DirtyBranchError(
            "the branch has uncommitted changes and lakeFS imports only into a clean branch: "
            "commit or reset them first", repository=repository, ref=branch)
    if not replace and next(iter(lakefs.list_objects(repository, branch, destination)), None):
        raise ConflictError(
            f"{destination} already holds objects on the branch, and lakeFS's import "
            f"replaces everything under its destination: import into a new folder (--to), "
            f"or pass --replace to replace them", repository=repository, ref=branch,
            path=destination)
    return head


def import_prefix(
    lakefs: LakeFS,
    source: S3Source,
    repository: str,
    branch: str,
    destination: str = DEFAULT_DESTINATION,
    message: str | None = None,
    metadata: dict[str, str] | None = None,
    *,
    replace: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import `source` under `destination` on `branch` as one commit, and wait for it.

    The source is not checked here (`import_from_s3` checks it first): lakeFS reads it
    with its own blockstore credentials. If the import fails, times out or is
    interrupted, nothing is committed (a running import is cancelled).

    Args:
        lakefs: the lakeFS client.
        source: the S3 prefix.
        repository: the repository.
        branch: the branch the import is committed to.
        destination: the folder on the branch (replaced by the import).
        message: the commit message; default "Import <source> into <destination>".
        metadata: more commit metadata (the source is recorded as `clearlake.import.source`).
        replace: allow a destination that already holds objects.
        timeout_s: give up (and cancel) after this long.
        progress: called with the number of objects ingested so far, on each poll.

    Raises:
        ConfigurationError: bad destination, a lakeFS that cannot import, or a source
            inside a repository's storage namespace.
        ImportFailedError: lakeFS could not read the source or commit the import.
        HookRejectedError: a pre-commit hook refused the import's commit.
        LakeFSError: any other lakeFS trouble (see `check_target`).
    """
    destination = normalise_destination(destination)
    check_target(lakefs, repository, branch, destination, replace=replace)
    return _run_import(lakefs, source, repository, branch, destination, message, metadata,
                       timeout_s, progress)


def _run_import(
    lakefs: LakeFS, source: S3Source, repository: str, branch: str, destination: str,
    message: str | None, metadata: dict[str, str] | None, timeout_s: float,
    progress: Callable[[int], None] | None,
) -> ImportResult:
    message = message or f"Import {source.uri} into {destination}"
    metadata = {**(metadata or {}), "clearlake.import.source": source.uri}
    try:
        import_id = import_start(lakefs, repository, branch, source, destination, message,
                                 metadata)
    except LakeFSError as error:
        if error.status == 400 and "import source" in str(error):
            raise ConfigurationError(
                f"lakeFS refuses to import {source.uri}: it overlaps a repository's storage "
                f"namespace ({error}). Import from a prefix outside lakeFS's own data") from error
        raise
    deadline = time.monotonic() + timeout_s
    pause = 0.2
    running = True
    try:
        while True:
            status = import_status(lakefs, repository, branch, import_id)
            if progress is not None:
                progress(status.ingested_objects or 0)
            if status.error is not None:
                running = False
                raise _failure(status.error.message, source, repository, branch, destination)
            if status.completed and status.commit is not None:
                running = False
                return ImportResult(repository, branch, destination, source.uri,
                                    status.commit.id, status.ingested_objects or 0)
            if time.monotonic() > deadline:
                running = False
                import_cancel(lakefs, repository, branch, import_id)
                status = import_status(lakefs, repository, branch, import_id)
                if status.completed and status.commit is not None:  # finished meanwhile
                    return ImportResult(repository, branch, destination, source.uri,
                                        status.commit.id, status.ingested_objects or 0)
                raise ImportFailedError(
                    f"import of {source.uri} did not finish within {timeout_s:.0f} s and was "
                    f"cancelled; nothing was committed", repository=repository, ref=branch)
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)
    finally:
        if running:  # timed out, interrupted, or lakeFS unreachable while polling
            import_cancel(lakefs, repository, branch, import_id)


def _failure(
    message: str, source: S3Source, repository: str, branch: str, destination: str
) -> LakeFSError:
    where = {"repository": repository, "ref": branch, "path": destination}
    if "dirty branch" in message:
        return DirtyBranchError(
            f"import of {source.uri}: the branch got uncommitted changes meanwhile; "
            f"nothing was committed ({message})", **where)
    if "hook aborted" in message:
        return HookRejectedError(f"import of {source.uri}: a pre-commit hook refused the "
                                 f"import's commit ({message})", **where)
    hint = ""
    if "NoSuchBucket" in message:
        hint = (" lakeFS's blockstore sees no such bucket: lakeFS imports only from storage "
                "its own blockstore credentials and endpoint can read.")
    elif "AccessDenied" in message or "Forbidden" in message or "403" in message:
        hint = (" lakeFS's blockstore credentials may not read this bucket: lakeFS imports "
                "only from storage they can read.")
    return ImportFailedError(
        f"lakeFS could not import {source.uri}: {message}.{hint} Nothing was committed.",
        **where)


def import_from_s3(
    lakefs: LakeFS,
    bucket: S3Bucket,
    repository: str,
    branch: str,
    destination: str = DEFAULT_DESTINATION,
    message: str | None = None,
    *,
    replace: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> tuple[SourceSummary, ImportResult]:
    """Check the source through its `S3Bucket` block, then import it (see `import_prefix`).

    The source is `s3://{bucket.bucket_name}/{bucket.bucket_folder}/`; its object count
    is recorded in the commit's metadata (`clearlake.import.objects`).

    Raises:
        S3SourceError: the source is unreachable, refused, missing or empty.
        ClearlakeError: what `import_prefix` raises.
    """
    source = S3Source.parse(f"s3://{bucket.bucket_name}/{bucket.bucket_folder}")
    destination = normalise_destination(destination)
    check_target(lakefs, repository, branch, destination, replace=replace)  # before listing
    summary = check_source(bucket)
    result = _run_import(lakefs, source, repository, branch, destination, message,
                         {"clearlake.import.objects": str(summary.objects)}, timeout_s,
                         progress)
    return summary, result


# -- what follows the commit --------------------------------------------------------------------
def has_clearlake_actions(lakefs: LakeFS, repository: str, ref: str) -> bool:
    """True when clearlake's lakeFS action file is at `ref` (commits there are classified)."""
    from clearlake.actions import EVENTS_ACTION_PATH

    try:
        lakefs.stat_object(repository, ref, EVENTS_ACTION_PATH)
    except NotFoundError:
        return False
    return True


def post_commit_run(
    lakefs: LakeFS, repository: str, commit_id: str, wait_s: float = HOOK_WAIT_S
) -> lakefs_sdk.ActionRun | None:
    """lakeFS's post-commit action run for `commit_id`, waiting up to `wait_s` for it.

    lakeFS records a run once its hooks have answered; None when none shows up (no
    matching action, e.g. a branch the action does not watch).
    """
    deadline = time.monotonic() + wait_s
    while True:
        with _translate("list action runs", repository, commit_id):
            runs = lakefs.actions.list_repository_runs(repository, commit=commit_id,
                                                       amount=100).results
        done = [r for r in runs if r.event_type == "post-commit" and r.status != "running"]
        if done or time.monotonic() > deadline:
            return done[0] if done else None
        time.sleep(0.5)


def emit_commit_event(repository: str, branch: str, commit_id: str, committer: str = "") -> str:
    """Send Prefect the bridge's event for a commit (when lakeFS's hook could not).

    The event is the bridge's own (`clearlake.bridge.prefect_event`), with the same
    stable id per repository+commit; the Prefect server is `PREFECT_API_URL` or the
    local stack's. Returns the event id.

    Raises:
        ClearlakeError: Prefect is unreachable or refused the event.
    """
    import httpx

    from clearlake.bridge import prefect_event
    from clearlake.config import prefect_api_url

    event = prefect_event({
        "event_type": "post-commit", "repository_id": repository, "branch_id": branch,
        "commit_id": commit_id, "committer": committer, "source_ref": commit_id,
    })
    url = f"{prefect_api_url().rstrip('/')}/events"
    try:
        response = httpx.post(url, json=[event], timeout=10.0)
    except httpx.HTTPError as error:
        raise ClearlakeError(f"Prefect at {url} is unreachable ({error}): run "
                             f"`clearlake classify {repository} {branch}` later") from error
    if response.status_code >= 300:
        raise ClearlakeError(f"Prefect refused the event (HTTP {response.status_code}): run "
                             f"`clearlake classify {repository} {branch}`")
    return event["id"]
