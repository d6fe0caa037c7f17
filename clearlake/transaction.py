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
later (`finish_pending`). A pre-merge hook that cannot be reached (the quality gate's
bridge down) refused nothing: the merge is retried for a few seconds, then left
pending the same way. A hook that refuses is a refusal (`HookRejectedError`).

lakeFS or its object store unavailable (a 5xx, a refused connection: lakeFS could
not load the action files, write a range) is waited out in every step — creating
the branch, committing, merging, deleting the branch — with exponential backoff for
`unavailable_timeout_s` (two minutes by default). A merge whose answer was lost is
recognised on the branch by its metadata, not applied twice. Any other failure
deletes the temporary branch: a failed transaction leaves nothing on the branch.

A temporary branch opened inside a Prefect flow run carries that run's id in its
name, so `reconcile` can ask Prefect whether its owner still runs before touching
it. If the branch is deleted anyway, the transaction raises `TransactionLost`.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

from clearlake.errors import (
    DirtyBranchError,
    HookUnreachableError,
    NotFoundError,
    UnavailableError,
)
from clearlake.lakefs import BackgroundUploads, LakeFS
from clearlake.settings import settings

TEMP_BRANCH_PREFIX = "clearlake-tx-"
# How long each step waits out lakeFS or its object store being unavailable (the issue's
# 30-s S3 outage, a lakeFS restart), and an unreachable pre-merge hook before the merge is
# left pending: the bridge is back in seconds or not soon.
UNAVAILABLE_TIMEOUT_S = 120.0
HOOK_UNREACHABLE_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 15.0
MERGE_LOOKBACK = 20  # commits of the branch searched for a merge whose answer was lost

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TransactionLost(NotFoundError):
    """The temporary branch was deleted before the transaction finished: nothing was applied.

    Attributes:
        temp_branch: the temporary branch that is gone.
    """

    def __init__(self, message: str, *, temp_branch: str, repository: str, ref: str) -> None:
        self.temp_branch = temp_branch
        super().__init__(message, repository=repository, ref=ref)


class MergePending(DirtyBranchError):
    """The transaction committed, but the merge could not happen now: its branch stayed
    dirty for the whole retry window, or its pre-merge hook (the gate) could not be reached.

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


def while_unavailable(
    action: Callable[[], T], timeout_s: float = UNAVAILABLE_TIMEOUT_S, *,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> T:
    """`action()`, tried again with exponential backoff (1 s, 2 s, … at most
    MAX_BACKOFF_S) while it raises `UnavailableError`, for up to `timeout_s`.

    Raises:
        UnavailableError: still unavailable when time ran out.
    """
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    deadline = clock() + timeout_s
    delay = 1.0
    while True:
        try:
            return action()
        except UnavailableError as error:
            if clock() + delay > deadline:
                raise
            logger.warning("%s; trying again in %.0f s", error, delay)
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


def merged_already(
    lakefs: LakeFS, repository: str, branch: str, metadata: dict[str, str]
) -> str | None:
    """The commit among `branch`'s latest that carries all of `metadata`, None if none does:
    a merge lakeFS applied though its answer was lost (clearlake's metadata names its run;
    lakeFS adds keys of its own, such as `.lakefs.merge.strategy`)."""
    if not metadata:
        return None
    for count, commit in enumerate(lakefs.log(repository, branch, first_parent=True)):
        if count >= MERGE_LOOKBACK:
            break
        if metadata.items() <= dict(commit.metadata or {}).items():
            return commit.id
    return None


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
    hook_timeout_s: float = HOOK_UNREACHABLE_TIMEOUT_S,
    unavailable_timeout_s: float = UNAVAILABLE_TIMEOUT_S,
) -> str:
    """Squash-merge `source` into `branch` (one commit on `branch`), waiting out uncommitted
    changes for up to `timeout_s`, an unreachable pre-merge hook for up to
    `hook_timeout_s`, and lakeFS being unavailable for up to `unavailable_timeout_s`.

    Raises:
        DirtyBranchError: `branch` still had uncommitted changes when time ran out.
        HookUnreachableError: the pre-merge hook still could not be reached.
        UnavailableError: lakeFS (or its object store) still unavailable.
    """
    started = time.monotonic()
    delay = 0.2
    answer_lost = False
    while True:
        try:
            if answer_lost and (done := merged_already(lakefs, repository, branch, metadata)):
                return done
            return lakefs.merge(repository, source, branch, message, metadata,
                                strategy=strategy, squash=True)
        except (DirtyBranchError, HookUnreachableError, UnavailableError) as error:
            answer_lost = answer_lost or isinstance(error, UnavailableError)
            window = (timeout_s if isinstance(error, DirtyBranchError)
                      else hook_timeout_s if isinstance(error, HookUnreachableError)
                      else unavailable_timeout_s)
            if time.monotonic() + delay > started + window:
                raise
            if not isinstance(error, DirtyBranchError):
                logger.warning("%s; trying again in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


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
        unavailable_timeout_s: how long each step waits out lakeFS or its object store
            being unavailable.
    """

    def __init__(
        self,
        lakefs: LakeFS,
        repository: str,
        branch: str,
        *,
        merge_timeout_s: float = 60.0,
        strategy: str | None = None,
        unavailable_timeout_s: float = UNAVAILABLE_TIMEOUT_S,
    ) -> None:
        self.lakefs = lakefs
        self.repository = repository
        self.branch = branch
        self.merge_timeout_s = merge_timeout_s
        self.strategy = strategy
        self.unavailable_timeout_s = unavailable_timeout_s
        # Named after the flow run that opens it: reconcile never deletes a live run's branch.
        self.temp_branch = temp_branch_name(current_flow_run())
        # Seconds of each step: creating the branch, waiting for queued uploads after the
        # last was queued, the commit, the merge (with its retries). A run reports them.
        self.seconds: dict[str, float] = {}
        self._keep_temp_branch = False
        self._uploads = BackgroundUploads(lakefs, repository, self.temp_branch)

    def __enter__(self) -> Transaction:
        with self._timed("branch"):
            self._patiently(self._create_branch)
        return self

    def _create_branch(self) -> None:
        try:
            self.lakefs.create_branch(self.repository, self.temp_branch, self.branch)
        except UnavailableError:
            # lakeFS may have created it before failing (say, on its post-create hooks):
            # if so it is ours, and the next try would find it exists.
            if self._temp_branch_exists():
                return
            raise

    def _temp_branch_exists(self) -> bool:
        try:
            self.lakefs.head(self.repository, self.temp_branch)
        except NotFoundError:
            return False
        return True

    def _patiently(self, action: Callable[[], T]) -> T:
        return while_unavailable(action, self.unavailable_timeout_s)

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
        if self._keep_temp_branch:
            return
        try:
            self._patiently(lambda: self.lakefs.delete_branch(self.repository, self.temp_branch))
        except UnavailableError as error:
            if exc is None:
                raise
            # The transaction's own error says what went wrong; the branch, named after a
            # run that has ended, is reconcile's to delete.
            logger.warning("temporary branch %s left behind: %s", self.temp_branch, error)

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
                # Tried again when its answer is lost: an empty second commit changes nothing.
                self._patiently(lambda: self.lakefs.commit(
                    self.repository, self.temp_branch, message, metadata, allow_empty=True))
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
                        unavailable_timeout_s=self.unavailable_timeout_s,
                    )
            except (DirtyBranchError, HookUnreachableError) as error:
                self._keep_temp_branch = True
                why = (f"its pre-merge hook could not be reached ({error})"
                       if isinstance(error, HookUnreachableError) else
                       f"{self.branch} kept uncommitted changes for {self.merge_timeout_s:.0f} s")
                raise MergePending(
                    f"{why}; the change is committed on {self.temp_branch} and will be "
                    "merged later",
                    temp_branch=self.temp_branch,
                    repository=self.repository,
                    ref=self.branch,
                ) from error


def finish_pending(
    lakefs: LakeFS, repository: str, temp_branch: str, branch: str, timeout_s: float = 60.0
) -> str:
    """Merge a kept temporary branch into `branch` and delete it; return the merge commit.

    Raises:
        DirtyBranchError: `branch` is still dirty.
        HookUnreachableError: its pre-merge hook still cannot be reached.
        UnavailableError: lakeFS still unavailable.
    """
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
