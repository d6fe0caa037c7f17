"""The webhook bridge: lakeFS action webhooks in, Prefect events out; and the quality gate.

Prefect's own webhooks exist only in Prefect Cloud, so this small ASGI app (served
by uvicorn on loopback, started by `clearlake stack up`) does the translation:

* `POST /lakefs/events` takes lakeFS's post-commit, post-merge, post-revert and
  post-cherry-pick webhooks and
  emits one Prefect event per repository+commit (a stable event id), which the
  `classify-commit` deployment's trigger turns into a flow run. It answers 2xx only
  once the Prefect server accepted the event; if Prefect is down it answers 503,
  so the failed hook shows in lakeFS and `reconcile` catches up later.
* `POST /lakefs/gate` answers the pre-merge hook of protected branches.
* `GET /healthz`.
* `/review/…`: the review pages (`clearlake.review`), behind a login.

lakeFS authenticates with a shared secret header, compared in constant time. The
secret never appears in logs, events or responses. Even an authenticated sender gets
only names lakeFS itself would make past the bridge (400 otherwise), and only commits
lakeFS knows become events: nothing of a payload reaches Prefect's templates unchecked.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clearlake.config import StackSecrets, prefect_api_url, state_dir
from clearlake.errors import ConfigurationError, LakeFSError, NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.provenance import ResultsMarker, signing_key, verified_marker
from clearlake.settings import settings
from clearlake.transaction import TEMP_BRANCH_PREFIX

SECRET_HEADER = "X-Clearlake-Secret"
# lakeFS (v1.84.0) bounds neither commit messages nor commit metadata, and its webhook
# body carries both verbatim (pkg/actions/event.go), so no limit fits every commit. 16 MiB
# is far beyond what people write (500 KB messages and 72 KB of metadata must pass) and
# still cheap to hold; a bigger body is refused (413) and `reconcile` covers its commit.
# Bodies are read only after the secret matched.
MAX_BODY_BYTES = 16 * 2**20
EVENT_NAME = "clearlake.lakefs.commit"
# The lakeFS events that move a branch to a new commit, in the order the action lists them.
FORWARDED_EVENT_TYPES = ("post-commit", "post-merge", "post-revert", "post-cherry-pick")
# Event ids derive from repository + commit, so a redelivered webhook is the same event.
EVENT_NAMESPACE = uuid.UUID("6f0d6a55-64c4-4cf1-9b1c-5e1f3c0c1a7e")
# lakeFS's own naming rules (v1.84.0: pkg/validator/validate.go for repositories and
# branches, pkg/graveler/ref/resolve_ref.go for commit ids). Go's \w is ASCII-only, hence
# the spelled-out class; matched with fullmatch, as Python's $ also matches before a "\n".
REPOSITORY_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
BRANCH_ID = re.compile(r"[0-9A-Za-z_][-0-9A-Za-z_]*")
COMMIT_ID = re.compile(r"[0-9a-fA-F]{1,64}")

logger = logging.getLogger("clearlake.bridge")


class BadRequest(Exception):
    """A request the bridge refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def event_id(repository: str, commit_id: str) -> str:
    """The stable Prefect event id of a commit."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{repository}/{commit_id}"))


def resource_id(repository: str, branch: str) -> str:
    """The Prefect resource an event is about: one lakeFS branch."""
    return f"lakefs.repository.{repository}.branch.{branch}"


def prefect_event(payload: dict[str, Any]) -> dict[str, Any]:
    """The Prefect event for a lakeFS webhook payload of a forwarded event type."""
    repository, branch = payload["repository_id"], payload["branch_id"]
    commit_id = payload["commit_id"]
    return {
        "id": event_id(repository, commit_id),
        "occurred": payload.get("event_time") or datetime.now(UTC).isoformat(),
        "event": EVENT_NAME,
        "resource": {
            "prefect.resource.id": resource_id(repository, branch),
            "prefect.resource.name": f"{repository}/{branch}",
            "lakefs.repository": repository,
            "lakefs.branch": branch,
        },
        "payload": {
            "repository": repository,
            "branch": branch,
            "commit_id": commit_id,
            "event_type": payload["event_type"],
            "committer": payload.get("committer", ""),
            "source_ref": payload.get("source_ref", ""),
        },
    }


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, refusing what is too big, not JSON or malformed."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise BadRequest(415, "expected Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():  # also bounds bodies sent without a length
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(400, f"body is not valid JSON: {error}") from error
    except RecursionError as error:  # lakeFS's payload is two levels deep
        raise BadRequest(400, "body is nested too deeply") from error
    if not isinstance(document, dict):
        raise BadRequest(400, "body must be a JSON object")
    return document


def require_fields(payload: dict[str, Any], *names: str) -> None:
    """Refuse a payload missing one of `names` (or with a non-string value)."""
    missing = [n for n in names if not isinstance(payload.get(n), str) or not payload[n]]
    if missing:
        raise BadRequest(400, f"payload lacks {', '.join(missing)}")


def check_payload(payload: dict[str, Any]) -> None:
    """Refuse (400) what lakeFS itself would never send: names outside its naming rules,
    fields of the wrong type, an unreadable time. Values are not echoed back.
    """
    names = (("repository_id", REPOSITORY_ID, "repository id"),
             ("branch_id", BRANCH_ID, "branch id"),
             ("commit_id", COMMIT_ID, "commit id"),
             # lakeFS sends a commit id here; a branch name (a replay by hand) has the
             # same character set, a commit id included.
             ("source_ref", BRANCH_ID, "commit id or branch name"))
    for name, pattern, what in names:
        value = payload.get(name)
        if value is None or value == "":
            continue  # require_fields decides which must be there
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise BadRequest(400, f"{name} is not a valid lakeFS {what}")
    for name in ("event_time", "committer", "commit_message"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise BadRequest(400, f"{name} must be a string")
    if payload.get("event_time"):
        try:
            datetime.fromisoformat(payload["event_time"])
        except ValueError as error:
            raise BadRequest(400, "event_time is not an RFC 3339 time") from error
    metadata = payload.get("commit_metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise BadRequest(400, "commit_metadata must be an object of strings")


class Bridge:
    """The bridge's state: its secrets and where Prefect is.

    Args:
        webhook_secret: the secret lakeFS sends in `X-Clearlake-Secret`.
        key: the HMAC key that recognises clearlake's own results commits.
        prefect_api: the Prefect API URL events are posted to.
    """

    def __init__(self, webhook_secret: str, key: bytes, prefect_api: str) -> None:
        self._secret = webhook_secret.encode()
        self._key = key
        self.prefect_api = prefect_api.rstrip("/")
        self.http = httpx.AsyncClient(timeout=10.0)
        self.lakefs: LakeFS | None = None  # create_app sets it; else made on first use

    def authenticate(self, request: Request) -> None:
        """Constant-time check of the shared secret (401 otherwise)."""
        offered = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(offered, self._secret):
            raise BadRequest(401, f"missing or wrong {SECRET_HEADER}")

    def commit_exists(self, repository: str, commit_id: str) -> bool:
        """True when lakeFS has `commit_id` in `repository`; False when either is missing.

        Raises:
            LakeFSError: lakeFS could not say (unreachable, credentials refused).
        """
        if self.lakefs is None:
            self.lakefs = LakeFS()
        try:
            self.lakefs.get_commit(repository, commit_id)
        except NotFoundError:
            return False
        return True

    def is_clearlake_commit(self, payload: dict[str, Any]) -> bool:
        """True for clearlake's own results commits and temporary branches.

        A validly signed marker is not enough: copied onto a user's commit it would hide
        that commit, so the commit itself is checked (`provenance.verified_marker`).
        """
        if payload["branch_id"].startswith(TEMP_BRANCH_PREFIX):
            return True
        metadata = payload.get("commit_metadata") or {}
        if ResultsMarker.from_metadata(metadata, self._key) is None:
            return False
        if self.lakefs is None:
            self.lakefs = LakeFS()
        repository = payload["repository_id"]
        commit = self.lakefs.get_commit(repository, payload["commit_id"])
        return verified_marker(self.lakefs, repository, commit, self._key) is not None

    async def events(self, request: Request) -> Response:
        """Forward a webhook of a branch-moving event (FORWARDED_EVENT_TYPES) as a Prefect event."""
        try:
            self.authenticate(request)
            payload = await read_json(request)
            require_fields(payload, "event_type")
            if payload["event_type"] not in FORWARDED_EVENT_TYPES:
                return JSONResponse({"ignored": "event type not forwarded"}, status_code=202)
            require_fields(payload, "repository_id", "branch_id", "commit_id")
            check_payload(payload)
            event = prefect_event(payload)
        except BadRequest as error:
            return PlainTextResponse(str(error), status_code=error.status)
        repository, commit_id = payload["repository_id"], payload["commit_id"]
        try:
            known = await run_in_threadpool(self.commit_exists, repository, commit_id)
            own = known and await run_in_threadpool(self.is_clearlake_commit, payload)
        except LakeFSError as error:
            logger.warning("lakeFS could not confirm %s@%s: %s", repository, commit_id[:12], error)
            return PlainTextResponse("lakeFS could not confirm the commit; try again",
                                     status_code=503)
        if not known:
            # 2xx, not 404: lakeFS only sends this for a repository deleted before its hook
            # ran, and a failed action run there is noise nobody can act on. Nothing runs.
            logger.warning("ignored %s@%s: lakeFS has no such repository or commit",
                           repository, commit_id[:12])
            return JSONResponse({"ignored": "lakeFS has no such repository or commit"},
                                status_code=202)
        if own:
            return JSONResponse({"ignored": "clearlake's own commit"}, status_code=202)
        try:
            response = await self.http.post(f"{self.prefect_api}/events", json=[event])
        except httpx.HTTPError as error:
            logger.warning("Prefect unreachable, event %s not emitted: %s", event["id"], error)
            return PlainTextResponse("Prefect is unreachable; try again", status_code=503)
        if response.status_code >= 300:
            logger.warning("Prefect refused event %s: HTTP %s", event["id"], response.status_code)
            return PlainTextResponse("Prefect refused the event", status_code=502)
        logger.info("emitted %s for %s@%s", event["id"], event["resource"]["prefect.resource.name"],
                    event["payload"]["commit_id"][:12])
        return JSONResponse({"event_id": event["id"]}, status_code=202)

    async def gate(self, request: Request) -> Response:
        """Answer lakeFS's pre-merge hook from the destination's policy."""
        from clearlake.gate import evaluate_merge

        try:
            self.authenticate(request)
            payload = await read_json(request)
            if payload.get("event_type") != "pre-merge":
                return JSONResponse({"ignored": "not a pre-merge hook"}, status_code=202)
            require_fields(payload, "repository_id", "branch_id", "source_ref")
            check_payload(payload)
        except BadRequest as error:
            return PlainTextResponse(str(error), status_code=error.status)
        verdict = await run_in_threadpool(
            evaluate_merge, payload["repository_id"], payload["source_ref"], payload["branch_id"],
            payload.get("commit_id") or "",
        )
        return PlainTextResponse(verdict.explain(), status_code=200 if verdict.allowed else 412)

    async def healthz(self, request: Request) -> Response:
        """Liveness."""
        return PlainTextResponse("ok")


def create_app() -> Starlette:
    """The bridge app, configured from the environment or the local stack.

    Raises:
        ConfigurationError: no webhook secret, signing key or lakeFS credentials (the
            error says where it looked); the bridge never makes secrets up.
    """
    secret = settings().webhook_secret
    if not secret:
        try:
            secret = StackSecrets.load(state_dir()).webhook_secret.get_secret_value()
        except ConfigurationError as error:
            raise ConfigurationError(
                f"no webhook secret (CLEARLAKE_WEBHOOK_SECRET is unset) and {error}") from None
    bridge = Bridge(secret, signing_key(), prefect_api_url())
    bridge.lakefs = LakeFS()
    from clearlake.review import create_review_app  # imports this module

    review = create_review_app(bridge.lakefs, signing_key(), state_dir(), bridge.prefect_api)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await bridge.http.aclose()

    return Starlette(
        routes=[
            Route("/lakefs/events", bridge.events, methods=["POST"]),
            Route("/lakefs/gate", bridge.gate, methods=["POST"]),
            Route("/healthz", bridge.healthz, methods=["GET"]),
            *review.routes(),
        ],
        lifespan=lifespan,
    )
