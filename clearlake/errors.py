"""The few errors clearlake raises: lakeFS trouble, the stack, a configuration.

Every lakeFS call goes through `clearlake.lakefs`, which turns SDK exceptions into
`LakeFSError`s, each naming the repository, ref and path involved.
"""

from __future__ import annotations


class ClearlakeError(Exception):
    """Base of every error clearlake raises on purpose."""


class LakeFSError(ClearlakeError):
    """A lakeFS call failed.

    Attributes:
        repository: the repository involved, if any.
        ref: the branch, tag or commit involved, if any.
        path: the object path involved, if any.
        status: the HTTP status lakeFS answered with, if it answered.
    """

    def __init__(
        self,
        message: str,
        *,
        repository: str | None = None,
        ref: str | None = None,
        path: str | None = None,
        status: int | None = None,
    ) -> None:
        self.repository = repository
        self.ref = ref
        self.path = path
        self.status = status
        where = ", ".join(
            f"{name} {value!r}"
            for name, value in (("repository", repository), ("ref", ref), ("path", path))
            if value
        )
        super().__init__(f"{message} ({where})" if where else message)


class NotFoundError(LakeFSError):
    """The repository, ref or object does not exist."""


class PermissionDeniedError(LakeFSError):
    """The credentials are wrong, or not allowed to do this."""


class ConflictError(LakeFSError):
    """The operation conflicts with the current state (exists already, merge conflict)."""


class DirtyBranchError(ConflictError):
    """lakeFS refused to merge into a branch that has uncommitted changes."""


class HookRejectedError(LakeFSError):
    """A pre-commit or pre-merge hook refused the operation (HTTP 412).

    Attributes:
        run_id: the lakeFS action run id whose log holds the hook's reason, when known.
    """

    def __init__(self, message: str, *, run_id: str | None = None, **where: str | None) -> None:
        self.run_id = run_id
        super().__init__(message, status=412, **where)


class HookUnreachableError(HookRejectedError):
    """A pre-commit or pre-merge hook got no answer: its server could not be reached, timed
    out, or answered with a server error. Nothing refused the operation; it can be tried
    again once the hook's server is back (for clearlake's gate: the bridge)."""


class UnavailableError(LakeFSError):
    """lakeFS could not be reached, or answered with a server error."""


class StackError(ClearlakeError):
    """The local stack could not be installed, started or stopped."""


class ConfigurationError(ClearlakeError):
    """A parameter, setting or block that cannot be used as given."""
