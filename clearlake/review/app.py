"""The review pages' routes, mounted by the bridge under `/review`.

    /review/                       repositories
    /review/REPO                   its branches
    /review/REPO/REF               thumbnails of the ref's results: filter, sort, pages
    /review/REPO/REF/image?path=P  one image: metrics, probabilities, lineage, label history
    /review/REPO/REF/thumb?path=P  its thumbnail (JPEG, or a placeholder naming the outcome)
    /review/REPO/FROM...TO         the quality diff between two refs
    /review/_login, _logout, _static/review.css

Every page needs a session (`auth`); only the login form and the stylesheet are
served to anyone. Names in URLs are checked against lakeFS's naming rules and image
paths against traversal before anything is asked of lakeFS (400 otherwise). Pages
are rendered by Jinja2 with autoescaping, and sent with a Content-Security-Policy
that allows no script at all.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from clearlake.bridge import REPOSITORY_ID, BadRequest
from clearlake.errors import (
    LakeFSError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from clearlake.lakefs import LakeFS
from clearlake.pipeline import NEVER_INPUTS, record_path
from clearlake.provenance import verified_record
from clearlake.review.auth import SESSION_COOKIE, SESSION_TTL_S, Session, Sessions
from clearlake.review.diffs import KINDS as DIFF_KINDS
from clearlake.review.diffs import DiffCache, cards, transition
from clearlake.review.results import PAGE_SIZE, Query, ResultsIndex, counts, select
from clearlake.review.results import sortable_columns as sort_choices
from clearlake.review.thumbnails import SIZES, Thumbnail, ThumbnailCache, placeholder

# A lakeFS ref: a branch or tag name, or a commit id, with optional ~N / ^N steps back.
REF = re.compile(r"[0-9A-Za-z_][-0-9A-Za-z_.]*(?:[~^][0-9]*)*")
DIFF_SEPARATOR = "..."
MAX_PATH_CHARS = 1024
MAX_FORM_BYTES = 16 * 1024
COMMIT_ID = re.compile(r"[0-9a-f]{64}")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: browsers then send `Origin: null` with the login form's POST.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
LABEL_CLASS = re.compile(r"[a-z0-9_-]{1,32}")

logger = logging.getLogger("clearlake.review")


class _RedactTokens(logging.Filter):
    """Keeps login tokens out of uvicorn's access log (they travel in a query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("token=" in str(a) for a in record.args):
            record.args = tuple(re.sub(r"token=[^&\s]*", "token=[redacted]", a)
                                if isinstance(a, str) else a for a in record.args)
        return True


# -- checking what a URL carries -------------------------------------------------------------


def checked_repository(value: str) -> str:
    """A repository name lakeFS could have made (400 otherwise)."""
    if not REPOSITORY_ID.fullmatch(value):
        raise BadRequest(400, "not a valid lakeFS repository name")
    return value


def checked_ref(value: str) -> str:
    """A branch, tag or commit id (400 otherwise; `..` never passes)."""
    if not REF.fullmatch(value) or ".." in value or len(value) > 256:
        raise BadRequest(400, "not a valid lakeFS ref")
    return value


def checked_path(value: str, *, prefix: bool = False) -> str:
    """An image path (or a prefix of one) that cannot climb out of anything (400 otherwise).

    Refused: control characters, backslashes, a leading `/`, empty, `.` or `..`
    segments (a prefix may end with `/`), and clearlake's own folders.
    """
    if not value:
        if prefix:
            return value
        raise BadRequest(400, "no image path given")
    if len(value) > MAX_PATH_CHARS:
        raise BadRequest(400, "image path too long")
    if "\\" in value or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise BadRequest(400, "image path with a backslash or a control character")
    segments = value.split("/")
    if prefix and value.endswith("/"):
        segments = segments[:-1]
    if value.startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise BadRequest(400, "image path with an empty, '.' or '..' segment")
    if value.startswith(NEVER_INPUTS):
        raise BadRequest(400, "clearlake's own files are not images")
    return value


def ref_url(repository: str, ref: str, view: str = "", **params: Any) -> str:
    """The review URL of a ref (or one of its views), with query parameters."""
    url = f"/review/{urllib.parse.quote(repository)}/{urllib.parse.quote(ref, safe='~.')}"
    if view:
        url += f"/{view}"
    wanted = {k: v for k, v in params.items() if v not in ("", None, False, 0)}
    return f"{url}?{urllib.parse.urlencode(wanted)}" if wanted else url


def ref_name(ref: str) -> str:
    """A ref as a person reads it: a commit id shortened to 12 characters."""
    return ref[:12] if COMMIT_ID.fullmatch(ref) else ref


def label_class(label: str | None) -> str:
    """A CSS class for a label (labels are model classes: anything a model was taught)."""
    return f"label-{label}" if label and LABEL_CLASS.fullmatch(label) else "label-other"


# -- the app -----------------------------------------------------------------------------------


@dataclass
class ReviewConfig:
    """What the review pages need from the bridge.

    Attributes:
        lakefs: the bridge's own lakeFS client (token logins read with it).
        key: the stack's signing key (records, markers, tokens and cookies).
        cache_dir: where thumbnails are cached (under the stack's state directory).
        lakefs_ui: the lakeFS web UI's base URL, for links.
        prefect_ui: the Prefect UI's base URL, for links to flow runs ("" for none).
        connect: a lakeFS client for a key pair (the login form's check).
    """

    lakefs: LakeFS
    key: bytes
    cache_dir: Path
    lakefs_ui: str
    prefect_ui: str = ""
    connect: Callable[[str, str], LakeFS] | None = field(default=None, repr=False)


class ReviewApp:
    """The review pages: sessions, the results index and the thumbnail cache."""

    def __init__(self, config: ReviewConfig) -> None:
        self.config = config
        self.sessions = Sessions(config.key)
        self.results = ResultsIndex(config.key)
        self.diffs = DiffCache(config.key)
        self.thumbnails = ThumbnailCache(config.cache_dir / "thumbnails")
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("clearlake.review", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined)
        self.templates.globals.update(ref_url=ref_url, label_class=label_class,
                                      short=lambda text: (text or "")[:12], ref_name=ref_name)
        self.templates.filters["utc"] = lambda seconds: datetime.fromtimestamp(
            seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
        self.stylesheet = resources.files("clearlake.review").joinpath(
            "static/review.css").read_bytes()
        logging.getLogger("uvicorn.access").addFilter(_RedactTokens())

    def routes(self) -> list[BaseRoute]:
        """The routes to mount: everything under `/review`."""
        return [Mount("/review", routes=[
            Route("/_static/review.css", self.stylesheet_css, methods=["GET"]),
            Route("/_login", self.login_form, methods=["GET"]),
            Route("/_login", self.login, methods=["POST"]),
            Route("/_logout", self.logout, methods=["POST"]),
            Route("/", self.home, methods=["GET"]),
            Route("/{repository}", self.repository, methods=["GET"]),
            Route("/{repository}/{ref}", self.ref_page, methods=["GET"]),
            Route("/{repository}/{ref}/image", self.image_page, methods=["GET"]),
            Route("/{repository}/{ref}/thumb", self.thumb, methods=["GET"]),
        ])]

    # -- rendering --------------------------------------------------------------------------
    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        body = self.templates.get_template(template).render(**context)
        return HTMLResponse(body, status_code=status,
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    def error(self, status: int, title: str, message: str, session: Session | None = None
              ) -> HTMLResponse:
        return self.page("error.html", status, title=title, message=message, session=session)

    def unauthorized(self, request: Request, message: str = "") -> HTMLResponse:
        """401 with the login form: where the visitor was going is kept for after."""
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = self.page("login.html", 401, next=wanted, message=message)
        response.headers["WWW-Authenticate"] = 'Session realm="clearlake review"'
        return response

    def lakefs_error(self, error: LakeFSError, session: Session) -> HTMLResponse:
        if isinstance(error, NotFoundError):
            return self.error(404, "Not found", str(error), session)
        if isinstance(error, PermissionDeniedError):
            return self.error(403, "Not allowed", "lakeFS does not let this login read "
                              "that.", session)
        if isinstance(error, UnavailableError):
            return self.error(503, "lakeFS is unavailable", str(error), session)
        return self.error(502, "lakeFS error", str(error), session)

    def _guarded(self, request: Request, handler: Callable[[Session], Response]) -> Response:
        """Run `handler` for a signed-in session, turning refusals into pages."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return self.unauthorized(request)
        try:
            repository = request.path_params.get("repository")
            if repository is not None:
                checked_repository(repository)
                if not session.may_see(repository):
                    return self.error(403, "Not allowed", "This login is for repository "
                                      f"{session.repository!r} only.", session)
            return handler(session)
        except BadRequest as error:
            return self.error(error.status, "Bad request", str(error), session)
        except LakeFSError as error:
            return self.lakefs_error(error, session)

    # -- authentication ---------------------------------------------------------------------
    async def stylesheet_css(self, request: Request) -> Response:
        return Response(self.stylesheet, media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    async def login_form(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return self.page("login.html", next=_safe_next(request.query_params.get("next")),
                             message="")
        grant = self.sessions.redeem(token)
        if grant is None:
            response = self.page("login.html", 401, next=_safe_next(None),
                                 message="This login link has expired or was used already: "
                                         "run `clearlake review` again, or sign in with a "
                                         "lakeFS access key.")
            response.headers["WWW-Authenticate"] = 'Session realm="clearlake review"'
            return response
        cookie = self.sessions.create("token", self.config.lakefs, grant.repository)
        return self._signed_in(request, cookie, grant.path)

    async def login(self, request: Request) -> Response:
        if not _same_origin(request):
            return self.error(403, "Refused", "A sign-in from another site.")
        try:
            fields = await _form(request)
        except BadRequest as error:
            return self.error(error.status, "Bad request", str(error))
        wanted = _safe_next(fields.get("next"))
        key_id = fields.get("access_key_id", "").strip()
        secret = fields.get("secret_access_key", "")
        if not key_id or not secret:
            return self.unauthorized_to(wanted, "Enter a lakeFS access key id and secret key.")
        try:
            client, user = await run_in_threadpool(self._check_keys, key_id, secret)
        except PermissionDeniedError:
            logger.info("review sign-in refused by lakeFS for access key id %s", key_id[:24])
            return self.unauthorized_to(wanted, "lakeFS did not accept this access key pair.")
        except LakeFSError as error:
            return self.error(503, "lakeFS is unavailable", str(error))
        logger.info("review sign-in: lakeFS user %s", user)
        return self._signed_in(request, self.sessions.create(user, client), wanted)

    def unauthorized_to(self, wanted: str, message: str) -> HTMLResponse:
        response = self.page("login.html", 401, next=wanted, message=message)
        response.headers["WWW-Authenticate"] = 'Session realm="clearlake review"'
        return response

    def _check_keys(self, key_id: str, secret: str) -> tuple[LakeFS, str]:
        connect = self.config.connect or (
            lambda k, s: LakeFS.connect(self.config.lakefs.settings.endpoint, k, s))
        client = connect(key_id, secret)
        return client, client.current_user()

    def _signed_in(self, request: Request, cookie: str, target: str) -> Response:
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_TTL_S, path="/review",
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/review/_login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/review")
        return response

    # -- pages ------------------------------------------------------------------------------
    def home(self, request: Request) -> Response:
        def render(session: Session) -> Response:
            names = ([session.repository] if session.repository
                     else session.lakefs.list_repositories())
            return self.page("home.html", session=session, repositories=names)

        return self._guarded(request, render)

    def repository(self, request: Request) -> Response:
        repository = request.path_params["repository"]

        def render(session: Session) -> Response:
            self._require_repository(session, repository)
            branches = session.lakefs.list_branches(repository)
            branches = [(b, c) for b, c in branches if not b.startswith("clearlake-tx-")]
            return self.page("repository.html", session=session, repository=repository,
                             branches=branches)

        return self._guarded(request, render)

    def _require_repository(self, session: Session, repository: str) -> None:
        if not session.lakefs.repository_exists(repository):
            raise NotFoundError(f"There is no repository named {repository!r} in lakeFS.")

    def _resolve(self, session: Session, repository: str, ref: str) -> str:
        """The commit id of `ref`; a clear 404 naming whichever does not exist."""
        self._require_repository(session, repository)
        try:
            return session.lakefs.get_commit(repository, ref).id
        except NotFoundError:
            raise NotFoundError(f"Repository {repository!r} has no branch, tag or commit "
                                f"named {ref!r}.") from None

    def ref_page(self, request: Request) -> Response:
        repository, ref = request.path_params["repository"], request.path_params["ref"]
        if DIFF_SEPARATOR in ref:
            return self.diff_page(request)

        def render(session: Session) -> Response:
            checked_ref(ref)
            query = _query(request)
            self._resolve(session, repository, ref)
            results = self.results.results(session.lakefs, repository, ref)
            context: dict[str, Any] = {
                "session": session, "repository": repository, "ref": ref, "results": results,
                "query": query, "lakefs_ui": self.config.lakefs_ui,
                "prefect_ui": self.config.prefect_ui, "page_size": PAGE_SIZE,
            }
            if results.index is None:
                return self.page("grid.html", rows=[], total=0, tally=None, sorts=[],
                                 **context)
            rows, total = select(results.index, query)
            return self.page("grid.html", rows=rows, total=total, tally=counts(results.index),
                             sorts=sort_choices(results.index), **context)

        return self._guarded(request, render)

    def image_page(self, request: Request) -> Response:
        from clearlake.lineage import lineage

        repository, ref = request.path_params["repository"], request.path_params["ref"]

        def render(session: Session) -> Response:
            checked_ref(ref)
            path = checked_path(request.query_params.get("path", ""))
            commit = self._resolve(session, repository, ref)
            try:
                info = session.lakefs.stat_object(repository, commit, path)
            except NotFoundError:
                raise NotFoundError(f"There is no image {path!r} at {ref!r} in repository "
                                    f"{repository!r}.") from None
            try:
                found = lineage(session.lakefs, repository, path, commit, key=self.config.key)
                record, history, missing = found.record, found.history, ""
            except NotFoundError as error:
                record, history, missing = None, [], str(error)
            return self.page("image.html", session=session, repository=repository, ref=ref,
                             commit=commit, path=path, info=info, record=record,
                             history=history, missing=missing, lakefs_ui=self.config.lakefs_ui,
                             prefect_ui=self.config.prefect_ui)

        return self._guarded(request, render)

    def thumb(self, request: Request) -> Response:
        repository, ref = request.path_params["repository"], request.path_params["ref"]

        def render(session: Session) -> Response:
            checked_ref(ref)
            path = checked_path(request.query_params.get("path", ""))
            size = request.query_params.get("size", str(SIZES[0]))
            if size not in {str(s) for s in SIZES}:
                raise BadRequest(400, f"thumbnail sizes are {SIZES}")
            thumbnail = self._thumbnail(session, repository, ref, path, int(size))
            immutable = COMMIT_ID.fullmatch(ref) is not None
            return Response(thumbnail.data, media_type=thumbnail.media_type, headers={
                "Cache-Control": "private, max-age=86400" if immutable else "private, no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

        return self._guarded(request, render)

    def _thumbnail(self, session: Session, repository: str, ref: str, path: str,
                   size: int) -> Thumbnail:
        """A verified record's outcome decides: not decodable → its placeholder; else the
        cached thumbnail of its SHA-256, made from the image's bytes on first use."""
        lakefs = session.lakefs
        try:
            stored = lakefs.get_object(repository, ref, record_path(path))
            record = verified_record(stored, self.config.key, path=path)
        except NotFoundError:
            record = None
        if record is not None and record.get("outcome") != "ok":
            return placeholder(str(record["outcome"]), str(record.get("reason") or ""))
        if record is not None and (cached := self.thumbnails.get(record["sha256"], size)):
            return cached
        try:
            data = lakefs.get_object(repository, ref, path)
        except NotFoundError:
            return placeholder("missing", "no such image at this ref")
        return self.thumbnails.make(data, size)

    def diff_page(self, request: Request) -> Response:
        repository, ref = request.path_params["repository"], request.path_params["ref"]

        def render(session: Session) -> Response:
            from_ref, _, to_ref = ref.partition(DIFF_SEPARATOR)
            checked_ref(from_ref)
            checked_ref(to_ref)
            from_commit = self._resolve(session, repository, from_ref)
            to_commit = self._resolve(session, repository, to_ref)
            diff = self.diffs.get(session.lakefs, repository, from_ref, to_ref, from_commit,
                                  to_commit)
            params = request.query_params
            only = params.get("transition", "")[:200]
            offset = params.get("offset", "0")
            shown_kind = params.get("show", "")
            sections = [cards(diff, kind, only=only if kind in ("changed", "relabelled") else "",
                              offset=int(offset) if kind == shown_kind and offset.isdigit()
                              and len(offset) < 10 else 0)
                        for kind in DIFF_KINDS
                        if not only or kind in ("changed", "relabelled")]
            return self.page("diff.html", session=session, repository=repository, ref=ref,
                             from_ref=from_ref, to_ref=to_ref, diff=diff, sections=sections,
                             only=only, transition=transition, lakefs_ui=self.config.lakefs_ui)

        return self._guarded(request, render)


# -- request helpers ---------------------------------------------------------------------------


def _query(request: Request) -> Query:
    params = request.query_params
    offset = params.get("offset", "0")
    return Query(
        label=params.get("label", "")[:64],
        outcome=params.get("outcome", "")[:64],
        prefix=checked_path(params.get("prefix", ""), prefix=True),
        sort=params.get("sort", "p_good")[:128],
        descending=params.get("order") == "desc",
        offset=int(offset) if offset.isdigit() and len(offset) < 10 else 0,
    )


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a review page of this site, never elsewhere."""
    if value and value.startswith("/review/") and not value.startswith("/review//") \
            and "\\" not in value and not any(ord(c) < 0x20 for c in value):
        return value
    return "/review/"


def _same_origin(request: Request) -> bool:
    """False for a form posted from another site (a browser says where it posts from)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the login form; nothing bigger is accepted)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest(413, "form too large")
    fields = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def create_review_app(lakefs: LakeFS, key: bytes, home: Path, prefect_api: str = "") -> ReviewApp:
    """The review pages for the bridge: thumbnails under `<home>/review/`."""
    return ReviewApp(ReviewConfig(
        lakefs=lakefs, key=key, cache_dir=home / "review",
        lakefs_ui=lakefs.settings.endpoint,
        prefect_ui=prefect_api.rstrip("/").removesuffix("/api") if prefect_api else ""))
