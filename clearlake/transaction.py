"""Commit-through-a-temporary-branch transactions.

A lakeFS commit takes everything staged on a branch, so writing straight to a
user's branch would sweep up their uncommitted work. A `Transaction` stages its
writes on a temporary branch created from the branch's head, commits there and
squash-merges that commit back: the result is one atomic change, one commit in the
branch's history (whose only parent is the branch's previous head), and concurrent
commits to the branch are neither swept in nor lost (the merge is three-way).

lakeFS refuses to merge into a branch with uncommitted changes. The merge is
retried with exponential backoff for `merge_timeout_s`; after that `MergePending`
is raised and the committed temporary branch is kept, so the merge can be finished
later (`finish_pending`). Any other failure deletes the temporary branch: a failed
transaction leaves nothing on the branch.

A temporary branch opened inside a Prefect flow run carries that run's id in its
name, so `reconcile` can ask Prefect whether its owner still runs before touching
it. If the branch is deleted anyway, the transaction raises `TransactionLost`.
"""

from __future__ import annotations

import secrets
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType

from clearlake.errors import DirtyBranchError, NotFoundError
from clearlake.lakefs import BackgroundUploads, LakeFS
from clearlake.settings import settings

TEMP_BRANCH_PREFIX = "clearlake-tx-"


class TransactionLost(NotFoundError):
    """The temporary branch was deleted before the transaction finished: nothing was applied.

    Attributes:
        temp_branch: the temporary branch that is gone.
    """

    def __init__(self, message: str, *, temp_branch: str, repository: str, ref: str) -> None:
        self.temp_branch = temp_branch
        super().__init__(message, repository=repository, ref=ref)


class MergePending(DirtyBranchError):
    """The transaction committed, but its branch stayed dirty for the whole retry window.

    Attributes:
        temp_branch: the kept temporary branch holding the committed change.
    """

    def __init__(self, message: str, *, temp_branch: str, repository: str, ref: str) -> None:
        self.temp_branch = temp_branch
        super().__init__(message, repository=repository, ref=ref)


def current_flow_run() -> str | None:
    """The id of the Prefect flow run this code runs in, None outside one."""
    if "prefect" in sys.modules:  # no flow run without Prefect imported: spare others its import
        from prefect.runtime import flow_run

        run_id = flow_run.id
    else:
        run_id = settings().flow_run_id
    try:
        return str(uuid.UUID(run_id)) if run_id else None
    except ValueError:
        return None


def temp_branch_name(owner: str | None = None) -> str:
    """A new temporary branch name: creation time, a random token, then `owner` (a Prefect
    flow run id) if given."""
    name = f"{TEMP_BRANCH_PREFIX}{int(time.time())}-{secrets.token_hex(4)}"
    return f"{name}-{uuid.UUID(owner)}" if owner else name


def temp_branch_owner(name: str) -> str | None:
    """The flow run id in a temporary branch's name, None if it has none."""
    if not name.startswith(TEMP_BRANCH_PREFIX):
        return None
    parts = name.removeprefix(TEMP_BRANCH_PREFIX).split("-", 2)
    try:
        return str(uuid.UUID(parts[2])) if len(parts) == 3 else None
    except ValueError:
        return None


def temp_branch_created_at(name: str) -> float | None:
    """When a temporary branch was created (from its name), None if not one of ours."""
    if not name.startswith(TEMP_BRANCH_PREFIX):
        return None
    stamp = name.removeprefix(TEMP_BRANCH_PREFIX).split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else None


def merge_with_retry(
    lakefs: LakeFS,
    repository: str,
    source: str,
    branch: str,
    message: str,
    metadata: dict[str, str],
    timeout_s: float,
    *,
    strategy: str | None = None,
) -> str:
    """Squash-merge `source` into `branch` (one commit on `branch`), waiting out uncommitted
    changes for up to `timeout_s`.

    Raises:
        DirtyBranchError: `branch` still had uncommitted changes when time ran out.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return lakefs.merge(repository, source, branch, message, metadata,
                                strategy=strategy, squash=True)
        except DirtyBranchError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Transaction:
    """Writes to `branch` staged on a temporary branch and applied by one merge.

    Use as a context manager; call `commit` before leaving it, or nothing is applied.

    Args:
        lakefs: the lakeFS client.
        repository: the repository.
        branch: the branch to change.
        merge_timeout_s: how long to retry a merge refused because `branch` is dirty.
        strategy: lakeFS's merge strategy for conflicts ('source-wins', 'dest-wins');
            None fails the merge on a conflict.
    """

    def __init__(
        self,
        lakefs: LakeFS,
        repository: str,
        branch: str,
        *,
        merge_timeout_s: float = 60.0,
        strategy: str | None = None,
    ) -> None:
        self.lakefs = lakefs
        self.repository = repository
        self.branch = branch
        self.merge_timeout_s = merge_timeout_s
        self.strategy = strategy
        # Named after the flow run that opens it: reconcile never deletes a live run's branch.
        self.temp_branch = temp_branch_name(current_flow_run())
        # Seconds of each step: creating the branch, waiting for queued uploads after the
        # last was queued, the commit, the merge (with its retries). A run reports them.
        self.seconds: dict[str, float] = {}
        self._keep_temp_branch = False
        self._uploads = BackgroundUploads(lakefs, repository, self.temp_branch)

    def __enter__(self) -> Transaction:
        with self._timed("branch"):
            self.lakefs.create_branch(self.repository, self.temp_branch, self.branch)
        return self

    @contextmanager
    def _on_temp_branch(self) -> Iterator[None]:
        """Turn a not-found into `TransactionLost` when it is the temporary branch that is gone."""
        try:
            yield
        except TransactionLost:
            raise
        except NotFoundError as error:
            try:
                self.lakefs.head(self.repository, self.temp_branch)
            except NotFoundError:
                raise TransactionLost(
                    f"temporary branch {self.temp_branch} was deleted before the transaction "
                    f"finished; nothing was applied to {self.branch}",
                    temp_branch=self.temp_branch, repository=self.repository, ref=self.branch,
                ) from error
            raise  # something else is missing (the branch itself, say)

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(time.perf_counter() - started, 3)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._uploads.__exit__(exc_type, exc, tb)
        if not self._keep_temp_branch:
            self.lakefs.delete_branch(self.repository, self.temp_branch)

    def upload(self, path: str, data: bytes) -> None:
        """Stage `data` at `path`."""
        with self._on_temp_branch():
            self.lakefs.upload_object(self.repository, self.temp_branch, path, data)

    def upload_in_background(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Queue (path, bytes) items to stage while the caller goes on; `commit` waits for them."""
        self._uploads.add(items)

    def delete(self, paths: list[str]) -> None:
        """Stage the deletion of `paths`."""
        if paths:
            with self._on_temp_branch():
                self.lakefs.delete_objects(self.repository, self.temp_branch, paths)

    def commit(self, message: str, metadata: dict[str, str] | None = None) -> str:
        """Commit the staged changes (once queued uploads are done) and merge them into the
        branch; return the merge commit.

        The commit and the merge carry the same metadata, so the change is recognisable
        on the branch whichever of the two a reader looks at.

        Raises:
            MergePending: the branch stayed dirty for `merge_timeout_s`; the committed
                temporary branch is kept for a later `finish_pending`.
            TransactionLost: the temporary branch was deleted first; nothing was applied.
        """
        metadata = metadata or {}
        with self._on_temp_branch():
            with self._timed("uploads"):
                self._uploads.wait()
            with self._timed("commit"):
                self.lakefs.commit(self.repository, self.temp_branch, message, metadata,
                                   allow_empty=True)
            try:
                with self._timed("merge"):
                    return merge_with_retry(
                        self.lakefs,
                        self.repository,
                        self.temp_branch,
                        self.branch,
                        message,
                        metadata,
                        self.merge_timeout_s,
                        strategy=self.strategy,
                    )
            except DirtyBranchError as error:
                self._keep_temp_branch = True
                raise MergePending(
                    f"{self.branch} kept uncommitted changes for {self.merge_timeout_s:.0f} s; "
                    f"the change is committed on {self.temp_branch} and will be merged later",
                    temp_branch=self.temp_branch,
                    repository=self.repository,
                    ref=self.branch,
                ) from error


def finish_pending(
    lakefs: LakeFS, repository: str, temp_branch: str, branch: str, timeout_s: float = 60.0
) -> str:
    """Merge a kept temporary branch into `branch` and delete it; return the merge commit."""
    commit = lakefs.get_commit(repository, temp_branch)
    merged = merge_with_retry(
        lakefs,
        repository,
        temp_branch,
        branch,
        commit.message,
        dict(commit.metadata or {}),
        timeout_s,
    )
    lakefs.delete_branch(repository, temp_branch)
    return merged


def commit_changed_files(
    lakefs: LakeFS, repository: str, branch: str, files: dict[str, bytes], message: str
) -> str | None:
    """Commit those of `files` whose content differs on `branch`, atomically; None if none do."""
    changed = {}
    for path, data in files.items():
        if lakefs.get_object_or_none(repository, branch, path) != data:
            changed[path] = data
    if not changed:
        return None
    with Transaction(lakefs, repository, branch) as tx:
        for path, data in changed.items():
            tx.upload(path, data)
        return tx.commit(message)
