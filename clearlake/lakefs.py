"""The one place clearlake talks to lakeFS.

`LakeFS` wraps the generated `lakefs_sdk` client with the few operations clearlake
needs, and `_translate` turns every SDK or transport exception into one of the
errors of `clearlake.errors`, naming the repository, ref and path involved.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import lakefs_sdk
import urllib3
from lakefs_sdk.exceptions import ApiException
from pydantic import SecretStr

from clearlake.config import LakeFSSettings, lakefs_settings
from clearlake.errors import (
    ConfigurationError,
    ConflictError,
    DirtyBranchError,
    HookRejectedError,
    HookUnreachableError,
    LakeFSError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

PAGE_SIZE = 1000
# Finding which of many paths exist (`LakeFS.read_existing`): one lookup costs lakeFS and
# the client as much as listing 120-210 entries (`python -m bench.lakefs_requests`), so a
# listing page is worth its cost while it answers for at least one path per this many.
ENTRIES_PER_LOOKUP = 100
FIRST_WALK_PAGE = 2 * ENTRIES_PER_LOOKUP  # small: in a sparse listing it is the only page


def _lakefs_message(error: ApiException) -> str:
    """The human message lakeFS put in an error body, else the HTTP reason."""
    try:
        return json.loads(error.body or "{}").get("message") or str(error.reason)
    except (ValueError, AttributeError):
        return str(error.body or error.reason)


# How lakeFS words a hook's failure (pkg/actions/webhook.go, service.go): a webhook that
# answered non-2xx is "webhook request failed (status code: N)"; one that never answered
# carries Go's transport error ("dial tcp …: connect: connection refused", a deadline).
_HOOK_STATUS = re.compile(r"webhook request failed \(status code: (-?\d+)\)")
_HOOK_TRANSPORT_FAILURES = (
    "connection refused", "connection reset", "dial tcp", "no such host", "i/o timeout",
    "context deadline exceeded", "Client.Timeout", "broken pipe", "EOF", "server misbehaving",
)


def hook_went_unanswered(message: str) -> bool:
    """True when lakeFS's 412 says its hooks could not be reached or failed on their side
    (a 5xx), and none of them refused: the operation may succeed once they are back.

    Any hook that answered with a non-5xx status refused; a failure of another kind (a
    malformed action file, say) is not "unanswered" either.
    """
    statuses = [int(code) for code in _HOOK_STATUS.findall(message)]
    if any(status < 500 for status in statuses):
        return False
    return bool(statuses) or any(marker in message for marker in _HOOK_TRANSPORT_FAILURES)


@contextmanager
def _translate(
    action: str, repository: str | None = None, ref: str | None = None, path: str | None = None
) -> Iterator[None]:
    """Run a lakeFS call, raising clearlake's errors instead of the SDK's."""
    where = {"repository": repository, "ref": ref, "path": path}
    try:
        yield
    except ApiException as error:
        status = error.status or 0
        message = f"{action}: {_lakefs_message(error)}"
        if status in (401, 403):
            raise PermissionDeniedError(message, status=status, **where) from error
        if status == 404:
            raise NotFoundError(message, status=status, **where) from error
        if status == 412:
            run_id = re.search(r"run[_ ]id[\"': ]+([A-Za-z0-9]+)", error.body or "")
            kind = HookUnreachableError if hook_went_unanswered(message) else HookRejectedError
            raise kind(message, run_id=run_id and run_id.group(1), **where) from error
        if status == 400 and "dirty branch" in message:
            raise DirtyBranchError(message, status=status, **where) from error
        if status == 409:
            raise ConflictError(message, status=status, **where) from error
        if status >= 500 or status == 429 or status == 0:
            raise UnavailableError(message, status=status, **where) from error
        raise LakeFSError(message, status=status, **where) from error
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as error:
        raise UnavailableError(f"{action}: lakeFS is unreachable ({error})", **where) from error


class _ObjectRequests:
    """Single-object reads and uploads over `http.client`, a keep-alive connection per thread
    and server (lakeFS, and the object store that presigned URLs point at).

    A run reads every new image and uploads three small documents per image: the
    generated client spends 1.4–2.2 × the client CPU of a plain request on each
    (`python -m bench.lakefs_requests`). Errors come back as the SDK's
    `ApiException`, so `_translate` types them like any other call's.
    """

    TIMEOUT_S = 300.0

    def __init__(self, settings: LakeFSSettings) -> None:
        endpoint = urllib.parse.urlsplit(settings.endpoint)
        self._https = endpoint.scheme == "https"
        self._netloc = endpoint.netloc
        self._base = f"{endpoint.path.rstrip('/')}/api/v1/repositories"
        credentials = f"{settings.access_key_id}:{settings.secret_access_key.get_secret_value()}"
        self._authorization = f"Basic {base64.b64encode(credentials.encode()).decode()}"
        self._local = threading.local()

    def get_presigned(self, url: str) -> bytes:
        """The bytes at a presigned URL: straight from the object store, no lakeFS."""
        parts = urllib.parse.urlsplit(url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        return self._retried(parts.scheme == "https", parts.netloc, "GET", target, None, {})

    def get(self, repository: str, ref: str, path: str) -> bytes:
        return self._request("GET", f"{_quote(repository)}/refs/{_quote(ref)}/objects", path)

    def upload(self, repository: str, branch: str, path: str, data: bytes) -> dict:
        body = self._request("POST", f"{_quote(repository)}/branches/{_quote(branch)}/objects",
                             path, data, {"Content-Type": "application/octet-stream"})
        return json.loads(body)

    def _request(
        self, method: str, resource: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        url = f"{self._base}/{resource}?path={_quote(path)}"
        headers = {"Authorization": self._authorization, **(headers or {})}
        return self._retried(self._https, self._netloc, method, url, body, headers)

    def _retried(
        self, https: bool, netloc: str, method: str, url: str, body: bytes | None,
        headers: dict[str, str],
    ) -> bytes:
        try:
            return self._send(https, netloc, method, url, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # A kept-alive connection the server had closed: once more on a fresh one.
            return self._send(https, netloc, method, url, body, headers)

    def _send(
        self, https: bool, netloc: str, method: str, url: str, body: bytes | None,
        headers: dict[str, str],
    ) -> bytes:
        connection = self._connection(https, netloc)
        try:
            connection.request(method, url, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # in an unknown state: the next request opens a new one
            del self._local.connections[(https, netloc)]
            raise
        if response.status >= 300:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = _error_text(data)
            raise error
        return data

    def _connection(self, https: bool, netloc: str) -> http.client.HTTPConnection:
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        connection = connections.get((https, netloc))
        if connection is None:
            if https:
                connection = http.client.HTTPSConnection(
                    netloc, timeout=self.TIMEOUT_S, context=ssl.create_default_context())
            else:
                connection = http.client.HTTPConnection(netloc, timeout=self.TIMEOUT_S)
            connections[(https, netloc)] = connection
        return connection


def _error_text(body: bytes) -> str:
    """An error body as text: lakeFS's JSON as it is, an S3 XML error as 'Code: Message'."""
    text = body.decode(errors="replace")
    code, message = (re.search(f"<{tag}>(.*?)</{tag}>", text, re.S) for tag in ("Code", "Message"))
    if code is None:
        return text
    return json.dumps({"message": f"{code.group(1)}: {message.group(1) if message else ''}"})


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@dataclass(frozen=True)
class ObjectInfo:
    """One object as lakeFS lists or diffs it.

    Attributes:
        path: the object's path in the repository.
        checksum: lakeFS's checksum (an MD5 or a multipart ETag; not a content key).
        size: size in bytes.
        change: for diffs, 'added', 'changed' or 'removed'; None for listings.
    """

    path: str
    checksum: str
    size: int
    change: str | None = None


class LakeFS:
    """A lakeFS server, through its API.

    Args:
        settings: endpoint and credentials; by default from the environment or the
            local stack (see `clearlake.config.lakefs_settings`).
    """

    def __init__(self, settings: LakeFSSettings | None = None) -> None:
        self.settings = settings or lakefs_settings()
        configuration = lakefs_sdk.Configuration(
            host=f"{self.settings.endpoint}/api/v1",
            username=self.settings.access_key_id,
            password=self.settings.secret_access_key.get_secret_value(),
        )
        configuration.retries = 2
        self.client = lakefs_sdk.ApiClient(configuration)
        self.repositories = lakefs_sdk.RepositoriesApi(self.client)
        self.branches = lakefs_sdk.BranchesApi(self.client)
        self.commits = lakefs_sdk.CommitsApi(self.client)
        self.objects = lakefs_sdk.ObjectsApi(self.client)
        self.refs = lakefs_sdk.RefsApi(self.client)
        self.actions = lakefs_sdk.ActionsApi(self.client)
        self.config = lakefs_sdk.ConfigApi(self.client)
        self._object_requests = _ObjectRequests(self.settings)

    @classmethod
    def connect(
        cls, endpoint: str, access_key_id: str, secret_access_key: str | SecretStr
    ) -> LakeFS:
        """A client for an explicit endpoint and credentials."""
        secret = (
            secret_access_key
            if isinstance(secret_access_key, SecretStr)
            else SecretStr(secret_access_key)
        )
        return cls(LakeFSSettings(endpoint.rstrip("/"), access_key_id, secret))

    def __repr__(self) -> str:
        return f"LakeFS({self.settings.endpoint!r})"

    def current_user(self) -> str:
        """The id of the user these credentials belong to (lakeFS checks them).

        Raises:
            PermissionDeniedError: lakeFS does not accept the key pair.
        """
        with _translate("get current user"):
            return lakefs_sdk.AuthApi(self.client).get_current_user().user.id

    # -- repositories --------------------------------------------------------------------
    def repository_exists(self, repository: str) -> bool:
        """True when `repository` exists (permission errors still raise)."""
        try:
            with _translate("get repository", repository):
                self.repositories.get_repository(repository)
        except NotFoundError:
            return False
        return True

    def storage_config(self) -> lakefs_sdk.StorageConfig:
        """The server's blockstore: its type, namespace rules, presigning and import support."""
        with _translate("get storage config"):
            return self.config.get_config().storage_config

    def storage_namespace(self, repository: str) -> str:
        """Where a new `repository` keeps its data: the configured namespace prefix (the
        settings' `storage_namespace`, from `CLEARLAKE_STORAGE_NAMESPACE` or a block), else
        the server's `default_namespace_prefix`, followed by the repository's name.

        Raises:
            ConfigurationError: neither is set.
        """
        prefix = self.settings.storage_namespace
        if not prefix:
            storage = self.storage_config()
            prefix = storage.default_namespace_prefix
            if not prefix:
                raise ConfigurationError(
                    f"no storage namespace for repository {repository!r}: the lakeFS server at "
                    f"{self.settings.endpoint} (blockstore {storage.blockstore_type}) suggests "
                    f"none. Set CLEARLAKE_STORAGE_NAMESPACE to a prefix such as "
                    f"{storage.blockstore_namespace_example!r}, or pass one explicitly.")
        return f"{prefix if prefix.endswith('/') else prefix + '/'}{repository}"

    def create_repository(
        self, repository: str, storage_namespace: str | None = None, default_branch: str = "main"
    ) -> bool:
        """Create `repository` unless it exists; return True when it was created.

        Args:
            repository: the name.
            storage_namespace: where lakeFS keeps its data; None means
                `storage_namespace(repository)`.
            default_branch: its first branch.

        Raises:
            ConfigurationError: lakeFS refused the namespace (it names the namespace and
                the blockstore type).
        """
        if self.repository_exists(repository):
            return False
        namespace = storage_namespace or self.storage_namespace(repository)
        creation = lakefs_sdk.RepositoryCreation(
            name=repository, storage_namespace=namespace, default_branch=default_branch
        )
        try:
            with _translate("create repository", repository):
                self.repositories.create_repository(creation)
        except LakeFSError as error:
            if error.status != 400 or isinstance(error, DirtyBranchError):
                raise
            blockstore = self.storage_config().blockstore_type
            raise ConfigurationError(
                f"lakeFS refused storage namespace {namespace!r} for repository "
                f"{repository!r} on its {blockstore!r} blockstore: {error}. The namespace must "
                f"suit that blockstore, its bucket must exist, and lakeFS's blockstore "
                f"credentials must be able to write there; set CLEARLAKE_STORAGE_NAMESPACE "
                f"(or pass a namespace) to one that does.") from error
        return True

    def list_repositories(self) -> list[str]:
        """Names of every repository."""
        pages = _paged(lambda after: self.repositories.list_repositories(
            after=after, amount=PAGE_SIZE), "list repositories")
        return [r.id for r in pages]

    def delete_repository(self, repository: str) -> None:
        """Delete `repository` (its stored objects stay in the blockstore)."""
        with _translate("delete repository", repository):
            self.repositories.delete_repository(repository, force=True)

    # -- branches and commits ------------------------------------------------------------
    def create_branch(self, repository: str, branch: str, source: str) -> str:
        """Create `branch` from ref `source`; return its head commit id."""
        with _translate("create branch", repository, f"{branch} (from {source})"):
            return self.branches.create_branch(
                repository, lakefs_sdk.BranchCreation(name=branch, source=source)
            )

    def delete_branch(self, repository: str, branch: str, *, missing_ok: bool = True) -> None:
        """Delete `branch`; a branch that is already gone is fine unless `missing_ok` is False."""
        try:
            with _translate("delete branch", repository, branch):
                self.branches.delete_branch(repository, branch)
        except NotFoundError:
            if not missing_ok:
                raise

    def list_branches(self, repository: str, prefix: str = "") -> list[tuple[str, str]]:
        """(name, head commit id) of every branch whose name starts with `prefix`."""
        pages = _paged(lambda after: self.branches.list_branches(
            repository, prefix=prefix, after=after, amount=PAGE_SIZE),
            "list branches", repository)
        return [(ref.id, ref.commit_id) for ref in pages]

    def head(self, repository: str, branch: str) -> str:
        """The commit id at the head of `branch`."""
        with _translate("get branch", repository, branch):
            return self.branches.get_branch(repository, branch).commit_id

    def get_commit(self, repository: str, ref: str) -> lakefs_sdk.Commit:
        """The commit `ref` points at (branch, tag or commit id)."""
        with _translate("get commit", repository, ref):
            return self.commits.get_commit(repository, ref)

    def has_uncommitted_changes(self, repository: str, branch: str) -> bool:
        """True when `branch` has staged changes (lakeFS will refuse to merge into it)."""
        with _translate("diff branch", repository, branch):
            return bool(self.branches.diff_branch(repository, branch, amount=1).results)

    def commit(
        self,
        repository: str,
        branch: str,
        message: str,
        metadata: dict[str, str] | None = None,
        *,
        allow_empty: bool = False,
    ) -> str:
        """Commit everything staged on `branch`; return the new commit id."""
        creation = lakefs_sdk.CommitCreation(
            message=message, metadata=metadata or {}, allow_empty=allow_empty
        )
        with _translate("commit", repository, branch):
            return self.commits.commit(repository, branch, creation).id

    def merge(
        self,
        repository: str,
        source: str,
        destination: str,
        message: str = "",
        metadata: dict[str, str] | None = None,
        *,
        strategy: str | None = None,
        squash: bool = False,
    ) -> str:
        """Merge ref `source` into branch `destination`; return the resulting commit id.

        Args:
            strategy: None to fail on conflicts; 'source-wins' or 'dest-wins' to resolve them.
            squash: one commit on `destination` whose only parent is its head, instead of a
                merge commit that also keeps `source`'s commits in the history.

        Raises:
            DirtyBranchError: `destination` has uncommitted changes.
            ConflictError: both sides changed the same path.
            HookRejectedError: a pre-merge hook refused the merge (`HookUnreachableError`:
                it could not be reached, and refused nothing).
        """
        # allow_empty: a commit that changes no image still advances clearlake's marker.
        merge = lakefs_sdk.Merge(message=message or None, metadata=metadata or {},
                                 strategy=strategy, allow_empty=True, squash_merge=squash)
        with _translate("merge", repository, f"{source} into {destination}"):
            result = self.refs.merge_into_branch(repository, source, destination, merge=merge)
        return result.reference

    def merge_base(self, repository: str, left: str, right: str) -> str | None:
        """The best common ancestor of two refs, None when they share no history."""
        try:
            with _translate("find merge base", repository, f"{left}...{right}"):
                return self.refs.find_merge_base(repository, left, right).base_commit_id
        except NotFoundError:
            return None

    def is_ancestor(self, repository: str, ancestor: str, descendant: str) -> bool:
        """True when commit `ancestor` is `descendant` or one of its ancestors."""
        return self.merge_base(repository, ancestor, descendant) == self.get_commit(
            repository, ancestor
        ).id

    def log(
        self,
        repository: str,
        ref: str,
        *,
        first_parent: bool = False,
        objects: list[str] | None = None,
        prefixes: list[str] | None = None,
    ) -> Iterator[lakefs_sdk.Commit]:
        """Commits reachable from `ref`, newest first, fetched page by page as consumed.

        Args:
            first_parent: follow only first parents at merges.
            objects: only commits that changed one of these paths.
            prefixes: only commits that changed something under one of these prefixes.
        """
        yield from _paged(lambda after: self.refs.log_commits(
            repository, ref, after=after, amount=100, first_parent=first_parent,
            objects=objects, prefixes=prefixes), "log", repository, ref)

    def hook_outputs(self, repository: str, run_id: str) -> list[tuple[str, str]]:
        """(hook id, log) of every hook of an action run: what each hook answered."""
        with _translate("list action run hooks", repository, run_id):
            hooks = self.actions.list_run_hooks(repository, run_id).results
        outputs = []
        for hook in hooks:
            with _translate("read hook output", repository, run_id):
                log = self.actions.get_run_hook_output(repository, run_id, hook.hook_run_id)
            outputs.append((hook.hook_id, bytes(log).decode(errors="replace")))
        return outputs

    # -- objects ---------------------------------------------------------------------------
    def get_object(self, repository: str, ref: str, path: str) -> bytes:
        """The bytes of `path` at `ref`."""
        with _translate("read object", repository, ref, path):
            return self._object_requests.get(repository, ref, path)

    def read_existing(
        self, repository: str, ref: str, paths: Iterable[str], *, threads: int = 4
    ) -> dict[str, bytes]:
        """The bytes of those of `paths` that exist at `ref`, in few requests.

        A missing object costs a request like any other, so instead of one GET per
        path this walks lakeFS's listing over the sorted paths: a page starting at
        the first unanswered path answers for every path up to its last entry. Keys
        named by hashes are spread evenly, so the first pages tell how dense the
        listing is; where it holds many entries per path sought (a store much larger
        than the lookup) the rest are read one by one, a 404 meaning absent. Either
        way only the paths found are read, on `threads` threads.
        """
        pending = sorted(set(paths))
        if len(pending) > 1:
            listed, unanswered = self._walk_listing(repository, ref, pending)
            pending = sorted([*listed, *unanswered])
        return self.read_each(repository, ref, pending, threads=threads)

    def presigned_urls(
        self, repository: str, ref: str, paths: Iterable[str], *, threads: int = 4
    ) -> dict[str, str]:
        """Presigned URLs of those of `paths` that exist at `ref`, in few lakeFS requests.

        A listing page with `presign=true` carries a URL per entry, so the listing is
        walked as in `read_existing`; a path it leaves unanswered (a sparse lookup in
        a dense folder) is presigned on its own, on `threads` threads, still without its
        bytes passing through lakeFS.

        Raises:
            LakeFSError: the blockstore cannot presign (lakeFS's local one), among others.
        """
        listed, unanswered = self._walk_listing(repository, ref, sorted(set(paths)),
                                                presign=True)

        def presign_if_exists(path: str) -> tuple[str, str | None]:
            try:
                return path, self.presign(repository, ref, path)
            except NotFoundError:
                return path, None

        with ThreadPoolExecutor(max_workers=threads) as pool:
            listed.update((path, url) for path, url in pool.map(presign_if_exists, unanswered)
                          if url is not None)
        return listed

    def presign(self, repository: str, ref: str, path: str) -> str:
        """A presigned URL of `path` at `ref` (valid for lakeFS's configured expiry)."""
        with _translate("presign object", repository, ref, path):
            return self.objects.stat_object(repository, ref, path, presign=True).physical_address

    def read_presigned(self, url: str, repository: str, ref: str, path: str) -> bytes:
        """The bytes at a presigned URL of `path`, read from the object store itself.

        Raises:
            PermissionDeniedError: the store refused the URL (expired, among others).
        """
        with _translate("read presigned object", repository, ref, path):
            return self._object_requests.get_presigned(url)

    def read_each(
        self, repository: str, ref: str, paths: Iterable[str], *, threads: int = 4
    ) -> dict[str, bytes]:
        """The bytes of those of `paths` that exist, one GET each on `threads` threads: for
        paths a listing has just named (`read_existing` finds which exist first)."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            found = pool.map(lambda path: (path, self.get_object_or_none(repository, ref, path)),
                             paths)
            return {path: data for path, data in found if data is not None}

    def _walk_listing(
        self, repository: str, ref: str, pending: list[str], *, presign: bool = False
    ) -> tuple[dict[str, str], list[str]]:
        """Listing pages walked over `pending` (sorted): the physical address (a presigned
        URL with `presign`) of each path that exists, and the paths the walk left
        unanswered because the listing was too dense to be worth it."""
        prefix = os.path.commonprefix(pending)  # noqa: RUF071 (lakeFS prefixes are strings)
        existing: dict[str, str] = {}
        amount = FIRST_WALK_PAGE
        first = 0
        while first < len(pending):
            entries, more = self._list_entries(
                repository, ref, prefix, after=_just_before(pending[first]), amount=amount,
                presign=presign)
            answered = first
            while answered < len(pending) and (not more or pending[answered] <= entries[-1][0]):
                answered += 1
            listed = dict(entries)
            existing.update((p, listed[p]) for p in pending[first:answered] if p in listed)
            sparse = (answered - first) * ENTRIES_PER_LOOKUP < len(entries)
            # A page as long as twice what is left to find: enough where the paths sought
            # lie together, and never a thousand entries (each presigned) for a few.
            first = answered
            amount = min(PAGE_SIZE, max(FIRST_WALK_PAGE, 2 * (len(pending) - first)))
            if more and sparse:
                return existing, pending[first:]
        return existing, []

    def _list_entries(
        self, repository: str, ref: str, prefix: str, *, after: str, amount: int,
        presign: bool = False,
    ) -> tuple[list[tuple[str, str]], bool]:
        """One page of (path, physical address) under `prefix` after `after`, and whether
        more follow.

        Parsed from the raw JSON: the generated models cost the client ~7 × as much an
        entry (`python -m bench.lakefs_requests`)."""
        with _translate("list objects", repository, ref, prefix or None):
            response = self.objects.list_objects_with_http_info(
                repository, ref, prefix=prefix, after=after, amount=amount,
                user_metadata=False, presign=presign, _preload_content=False)
        page = json.loads(response.raw_data)
        entries = [(entry["path"], entry["physical_address"]) for entry in page["results"]]
        return entries, page["pagination"]["has_more"]

    def get_object_or_none(self, repository: str, ref: str, path: str) -> bytes | None:
        """The object's bytes, None if there is no object at `path` (or no `ref`)."""
        try:
            return self.get_object(repository, ref, path)
        except NotFoundError:
            return None

    def stat_object(self, repository: str, ref: str, path: str) -> ObjectInfo:
        """Checksum and size of `path` at `ref`."""
        with _translate("stat object", repository, ref, path):
            stats = self.objects.stat_object(repository, ref, path)
        return ObjectInfo(stats.path, stats.checksum, stats.size_bytes or 0)

    def upload_object(self, repository: str, branch: str, path: str, data: bytes) -> ObjectInfo:
        """Stage `data` at `path` on `branch` (uncommitted until a commit)."""
        with _translate("upload object", repository, branch, path):
            stats = self._object_requests.upload(repository, branch, path, bytes(data))
        return ObjectInfo(stats["path"], stats["checksum"], stats.get("size_bytes") or 0)

    def upload_many(
        self, repository: str, branch: str, items: Iterable[tuple[str, bytes]], workers: int = 8
    ) -> int:
        """Stage many objects concurrently (each upload is a round trip); return the count."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(lambda item: self.upload_object(repository, branch, *item), items)
            return sum(1 for _ in done)

    def delete_objects(self, repository: str, branch: str, paths: list[str]) -> None:
        """Stage the deletion of `paths` on `branch` (in pages lakeFS accepts)."""
        for start in range(0, len(paths), PAGE_SIZE):
            chunk = paths[start : start + PAGE_SIZE]
            with _translate("delete objects", repository, branch, chunk[0]):
                errors = self.objects.delete_objects(
                    repository, branch, lakefs_sdk.PathList(paths=chunk)
                ).errors
            if errors:
                first = errors[0]
                raise LakeFSError(
                    f"delete objects: {first.message}",
                    repository=repository,
                    ref=branch,
                    path=first.path,
                )

    def list_objects(
        self, repository: str, ref: str, prefix: str = "", *, delimiter: str = ""
    ) -> Iterator[ObjectInfo]:
        """Every object under `prefix` at `ref`, in path order, page by page. With a
        `delimiter`, folders below `prefix` come back once each, with change 'prefix'."""
        pages = _paged(lambda after: self.objects.list_objects(
            repository, ref, prefix=prefix, after=after, amount=PAGE_SIZE, delimiter=delimiter),
            "list objects", repository, ref, prefix or None)
        for stats in pages:
            if stats.path_type == "common_prefix":
                yield ObjectInfo(stats.path, "", 0, "prefix")
                continue
            yield ObjectInfo(stats.path, stats.checksum, stats.size_bytes or 0)

    def diff(
        self,
        repository: str,
        left: str,
        right: str,
        prefix: str = "",
        *,
        three_dot: bool = False,
        delimiter: str = "",
    ) -> Iterator[ObjectInfo]:
        """Objects that differ between `left` and `right`.

        By default two-dot: the two trees compared directly, which is what changed
        between exactly these commits (right even after a branch was reset). With
        `three_dot`, what `right` changed since its merge base with `left`: what a
        merge of `right` into `left` brings in. With a `delimiter`, changed folders
        below `prefix` come back once each, with change 'prefix'.
        """
        pages = _paged(lambda after: self.refs.diff_refs(
            repository, left, right, after=after, amount=PAGE_SIZE, prefix=prefix,
            delimiter=delimiter, type="three_dot" if three_dot else "two_dot",
            include_right_stats=True), "diff", repository, f"{left}..{right}", prefix or None)
        for d in pages:
            if d.path_type == "common_prefix":
                yield ObjectInfo(d.path, "", 0, "prefix")
                continue
            stats = d.right  # the object on the right side; None when removed
            yield ObjectInfo(d.path, stats.checksum if stats else "", d.size_bytes or 0, d.type)


def _paged(fetch: Callable[[str], Any], *context: str | None) -> Iterator[Any]:
    """The results of a paginated lakeFS listing, one page fetched as the last is consumed.

    Args:
        fetch: asks for the page after the given offset ("" for the first).
        context: what `_translate` names in an error (operation, repository, ref, path).
    """
    after = ""
    while True:
        with _translate(*context):
            page = fetch(after)
        yield from page.results
        if not page.pagination.has_more:
            return
        after = page.pagination.next_offset


def _just_before(path: str) -> str:
    """A listing's exclusive `after` for a page that starts at `path`: only keys that
    begin with the returned string sort between the two, and they do no harm."""
    return path[:-1] + chr(ord(path[-1]) - 1)


class BackgroundUploads:
    """Objects staged on one branch by a few threads while the caller goes on.

    Each upload is a round trip; queued here, they overlap with whatever the caller
    does next (a run keeps measuring while its results are uploaded). Use as a
    context manager: leaving it cancels what has not started.

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        branch: the branch the objects are staged on.
        workers: concurrent uploads.
    """

    def __init__(self, lakefs: LakeFS, repository: str, branch: str, workers: int = 8) -> None:
        self.lakefs = lakefs
        self.repository = repository
        self.branch = branch
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._queued: list[Future[ObjectInfo]] = []

    def add(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Queue uploads of (path, bytes) items; returns at once."""
        self._queued += [
            self._pool.submit(self.lakefs.upload_object, self.repository, self.branch, path, data)
            for path, data in items
        ]

    def wait(self) -> int:
        """Block until every queued upload is done; return how many; raise the first error."""
        queued, self._queued = self._queued, []
        for future in queued:
            future.result()
        return len(queued)

    def __enter__(self) -> BackgroundUploads:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
