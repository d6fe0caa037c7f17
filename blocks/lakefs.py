"""Prefect blocks for lakeFS: credentials, and a versioned storage block.

`LakeFSRepository` is Prefect file-system and deployment storage over a lakeFS
ref. Reading at a commit id returns that commit's bytes forever; writing goes
through a `clearlake.transaction.Transaction` (a temporary branch, committed and
merged back), so it never sweeps up anyone else's uncommitted work.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.core import Block
from prefect.filesystems import WritableDeploymentStorage, WritableFileSystem
from prefect.utilities.asyncutils import run_sync_in_worker_thread
from pydantic import Field, PrivateAttr, SecretStr

from clearlake.config import LakeFSSettings, lakefs_settings
from clearlake.errors import NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.stack.install import LAKEFS_VERSION
from clearlake.transaction import Transaction

# lakeFS's own logo, at the path it has in the pinned release's source.
LOGO_PATH = "webui/pub/logo192.png"
_LOGO = f"https://raw.githubusercontent.com/treeverse/lakeFS/{LAKEFS_VERSION}/{LOGO_PATH}"


class LakeFSCredentials(Block):
    """How to reach a lakeFS server: its endpoint and an access key.

    Example:
        ```python
        from clearlake.blocks import LakeFSCredentials

        credentials = LakeFSCredentials.load("BLOCK_NAME")
        lakefs = credentials.get_lakefs()
        ```
    """

    _block_type_name = "lakeFS Credentials"
    _logo_url = _LOGO
    _documentation_url = "https://docs.lakefs.io/reference/configuration.html"

    endpoint_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of the lakeFS server, without /api/v1.",
    )
    access_key_id: str = Field(description="The lakeFS access key id.")
    secret_access_key: SecretStr = Field(description="The lakeFS secret access key.")
    storage_namespace: str | None = Field(
        default=None,
        description="Prefix of new repositories' storage namespaces, e.g. "
                    "s3://team-bucket/lakefs/ (the repository's name is appended); unset, "
                    "what the lakeFS server suggests.",
    )

    @classmethod
    def from_environment(cls) -> LakeFSCredentials:
        """Credentials from `LAKEFS_*` environment variables, else the local stack's."""
        settings = lakefs_settings()
        return cls(
            endpoint_url=settings.endpoint,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            storage_namespace=settings.storage_namespace,
        )

    def get_lakefs(self) -> LakeFS:
        """A `clearlake.lakefs.LakeFS` client (every call's errors translated)."""
        return LakeFS(LakeFSSettings(self.endpoint_url.rstrip("/"), self.access_key_id,
                                     self.secret_access_key, self.storage_namespace))

    def get_client(self) -> Any:
        """A configured `lakefs_sdk.ApiClient`, for calls clearlake does not wrap."""
        return self.get_lakefs().client


class LakeFSRepository(WritableFileSystem, WritableDeploymentStorage):
    """Versioned storage over a lakeFS repository at a ref (branch, tag or commit id).

    Reads come from `ref`. Writes are staged on a temporary branch and applied to
    the branch `ref` by `commit(message, metadata)` as one merge; with `autocommit`
    each `write_path` is its own commit. If the branch has uncommitted changes
    (lakeFS then refuses merges) the merge is retried for `merge_timeout_s`, then
    `clearlake.transaction.MergePending` is raised with the committed temporary
    branch kept, so nothing is lost.

    Example:
        ```python
        from clearlake.blocks import LakeFSRepository

        storage = LakeFSRepository.load("BLOCK_NAME")
        storage.write_path("reports/today.json", b"{}")
        storage.commit("add today's report", {"source": "nightly"})
        ```
    """

    _block_type_name = "lakeFS Repository"
    _logo_url = _LOGO
    _documentation_url = "https://docs.lakefs.io/understand/model.html"

    credentials: LakeFSCredentials = Field(description="How to reach lakeFS.")
    repository: str = Field(description="The lakeFS repository name.")
    ref: str = Field(
        default="main",
        description="Branch, tag or commit id to read from; writes need a branch.",
    )
    prefix: str = Field(
        default="",
        description="Folder inside the repository that every path is relative to.",
    )
    autocommit: bool = Field(
        default=False,
        description="Commit and merge after every write_path (for use as result storage).",
    )
    merge_timeout_s: float = Field(
        default=60.0,
        description="Seconds to keep retrying a merge refused because the branch is dirty.",
    )

    _transaction: Transaction | None = PrivateAttr(default=None)

    # -- paths ---------------------------------------------------------------------------
    def _key(self, path: str | None) -> str:
        """`path` inside the repository, under `prefix`; never escaping it."""
        parts = PurePosixPath(self.prefix.strip("/"), (path or "").lstrip("/")).parts
        if ".." in parts:
            raise ValueError(f"path {path!r} leaves the prefix {self.prefix!r}")
        return "/".join(p for p in parts if p not in ("", "."))

    def _lakefs(self) -> LakeFS:
        return self.credentials.get_lakefs()

    def s3_bucket(self) -> Any:
        """A prefect-aws `S3Bucket` over lakeFS's S3 gateway, with keys under `ref`.

        The gateway is the lakeFS endpoint itself (path-style, region us-east-1); its
        bucket is the repository, its keys `<ref>/<path>`, so `bucket_folder` is `ref`
        (and `prefix`). It signs with the lakeFS access key pair. Unlike `write_path`,
        writes through it stage objects on the branch directly: commit them yourself.

        Example:
            ```python
            from clearlake.blocks import LakeFSRepository

            storage = LakeFSRepository.load("BLOCK_NAME")
            storage.s3_bucket().upload_from_path("photo.jpg", "incoming/photo.jpg")
            storage.credentials.get_lakefs().commit(storage.repository, storage.ref, "a photo")
            ```

        Returns:
            prefect_aws.S3Bucket: the bucket block (not saved).
        """
        from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

        credentials = AwsCredentials(
            aws_access_key_id=self.credentials.access_key_id,
            aws_secret_access_key=self.credentials.secret_access_key,
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(
                endpoint_url=self.credentials.endpoint_url,
                config={"s3": {"addressing_style": "path"}},
            ),
        )
        folder = "/".join(p for p in (self.ref, self.prefix.strip("/")) if p)
        return S3Bucket(bucket_name=self.repository, bucket_folder=folder,
                        credentials=credentials)

    def _read_ref(self) -> str:
        """Where reads come from: the open transaction's branch (read your writes), else ref."""
        return self._transaction.temp_branch if self._transaction else self.ref

    def _open_transaction(self) -> Transaction:
        if self._transaction is None:
            lakefs = self._lakefs()
            try:
                lakefs.head(self.repository, self.ref)
            except NotFoundError as error:
                raise ValueError(
                    f"ref {self.ref!r} of repository {self.repository!r} is not a branch; "
                    "only a branch can be written to"
                ) from error
            transaction = Transaction(
                lakefs, self.repository, self.ref, merge_timeout_s=self.merge_timeout_s
            )
            self._transaction = transaction.__enter__()
        return self._transaction

    # -- WritableFileSystem ----------------------------------------------------------------
    def _read(self, path: str) -> bytes:
        return self._lakefs().get_object(self.repository, self._read_ref(), self._key(path))

    async def aread_path(self, path: str) -> bytes:
        """Read the bytes of `path` at `ref` (or the open transaction)."""
        return await run_sync_in_worker_thread(self._read, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        """Read the bytes of `path` at `ref` (or the open transaction)."""
        return self._read(path)

    def _write(self, path: str, content: bytes) -> str:
        key = self._key(path)
        self._open_transaction().upload(key, content)
        if self.autocommit:
            self.commit(f"clearlake: write {key}")
        return key

    async def awrite_path(self, path: str, content: bytes) -> str:
        """Stage `content` at `path` (committed by `commit`, or at once with autocommit)."""
        return await run_sync_in_worker_thread(self._write, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        """Stage `content` at `path` (committed by `commit`, or at once with autocommit)."""
        return self._write(path, content)

    def commit(self, message: str, metadata: dict[str, str] | None = None) -> str | None:
        """Commit the staged writes and merge them into the branch; return the merge commit.

        Returns None when nothing was written.

        Raises:
            clearlake.transaction.MergePending: the branch stayed dirty too long.
        """
        transaction, self._transaction = self._transaction, None
        if transaction is None:
            return None
        try:
            return transaction.commit(message, metadata)
        finally:
            transaction.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the staged writes (deletes the temporary branch)."""
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            transaction.__exit__(None, None, None)

    # -- WritableDeploymentStorage -------------------------------------------------------------
    def _get_directory(self, from_path: str | None, local_path: str | None) -> int:
        lakefs = self._lakefs()
        root = self._key(from_path)
        destination = Path(local_path or ".")
        count = 0
        for info in lakefs.list_objects(self.repository, self._read_ref(), root):
            relative = PurePosixPath(info.path).relative_to(root) if root else info.path
            target = destination / str(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lakefs.get_object(self.repository, self._read_ref(), info.path))
            count += 1
        return count

    async def aget_directory(
        self, from_path: str | None = None, local_path: str | None = None
    ) -> None:
        """Copy every object under `from_path` at `ref` into `local_path`."""
        await run_sync_in_worker_thread(self._get_directory, from_path, local_path)

    @async_dispatch(aget_directory)
    def get_directory(self, from_path: str | None = None, local_path: str | None = None) -> None:
        """Copy every object under `from_path` at `ref` into `local_path`."""
        self._get_directory(from_path, local_path)

    def _put_directory(
        self, local_path: str | None, to_path: str | None, ignore_file: str | None
    ) -> int:
        source = Path(local_path or ".")
        ignored = _ignore_patterns(ignore_file)
        count = 0
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = file.relative_to(source).as_posix()
            if any(fnmatch.fnmatch(relative, pattern) for pattern in ignored):
                continue
            self._open_transaction().upload(
                self._key(f"{to_path or ''}/{relative}"), file.read_bytes()
            )
            count += 1
        if count:
            self.commit(f"clearlake: put {count} files from {source.name or source}")
        return count

    async def aput_directory(
        self,
        local_path: str | None = None,
        to_path: str | None = None,
        ignore_file: str | None = None,
    ) -> int:
        """Upload a local folder under `to_path` as one commit; return the file count."""
        return await run_sync_in_worker_thread(
            self._put_directory, local_path, to_path, ignore_file
        )

    @async_dispatch(aput_directory)
    def put_directory(
        self,
        local_path: str | None = None,
        to_path: str | None = None,
        ignore_file: str | None = None,
    ) -> int:
        """Upload a local folder under `to_path` as one commit; return the file count."""
        return self._put_directory(local_path, to_path, ignore_file)


def _ignore_patterns(ignore_file: str | None) -> list[str]:
    """Glob patterns from a .prefectignore-style file (comments and blanks skipped)."""
    if not ignore_file or not Path(ignore_file).exists():
        return []
    patterns = []
    for line in Path(ignore_file).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.rstrip("/") + ("/*" if line.endswith("/") else ""))
    return patterns
