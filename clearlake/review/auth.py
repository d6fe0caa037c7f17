"""Who may see the review pages: a session from a lakeFS key pair, or from a login token.

Two ways in, both ending in a session cookie (random id + HMAC, HttpOnly,
SameSite=Strict, path `/review`):

* the login form takes a lakeFS access key pair and asks lakeFS whose it is
  (`LakeFS.current_user`); the session then reads lakeFS with those keys, so a user
  sees only what lakeFS lets them see;
* `clearlake review` prints a URL with a login token: signed, valid 10 minutes,
  usable once, limited to one repository. Whoever can sign one holds the stack's
  signing key already; its session reads with the bridge's own credentials.

The keys that sign tokens and cookies are derived from the stack's signing key for
this one purpose (HMAC with a label), so neither is a secret used anywhere else, and
neither can pass for a record's or a marker's signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clearlake.lakefs import LakeFS

SESSION_COOKIE = "clearlake_review"
SESSION_TTL_S = 12 * 3600
TOKEN_TTL_S = 600
MAX_SESSIONS = 1000


def derived_key(key: bytes, purpose: str) -> bytes:
    """A key for one purpose of the review pages, from the stack's signing key."""
    return hmac.new(key, f"clearlake-review-{purpose}-v1".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LoginToken:
    """What a login token grants: one repository, then a redirect to `path`."""

    repository: str
    path: str
    expires: int
    nonce: str


def make_token(key: bytes, repository: str, path: str, *, ttl_s: int = TOKEN_TTL_S,
               now: float | None = None) -> str:
    """A login token for `repository` that lands on `path` (a `/review/…` path)."""
    payload = {"r": repository, "p": path, "e": int((now or time.time()) + ttl_s),
               "n": secrets.token_urlsafe(12)}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signature = _b64(hmac.new(derived_key(key, "token"), body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def read_token(key: bytes, token: str, *, now: float | None = None) -> LoginToken | None:
    """The token's grant if it is signed with `key` and unexpired, else None."""
    body, _, signature = token.partition(".")
    expected = _b64(hmac.new(derived_key(key, "token"), body.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(expected, signature):
        return None
    try:
        payload = json.loads(_unb64(body))
        grant = LoginToken(str(payload["r"]), str(payload["p"]), int(payload["e"]),
                           str(payload["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    if grant.expires < (now or time.time()) or not grant.path.startswith("/review/"):
        return None
    return grant


@dataclass
class Session:
    """A signed-in browser.

    Attributes:
        user: the lakeFS user id, or 'token' for a token login.
        lakefs: the client the pages read lakeFS with (the user's own keys, or the
            bridge's for a token login).
        repository: the one repository a token login may see; None for a key pair.
        expires: when the session ends (epoch seconds).
    """

    user: str
    lakefs: LakeFS
    repository: str | None
    expires: float

    def may_see(self, repository: str) -> bool:
        """True when this session may look at `repository` (lakeFS decides the rest)."""
        return self.repository is None or self.repository == repository


class Sessions:
    """The bridge's sessions, in memory (a restart signs everyone out), and spent tokens.

    Args:
        key: the stack's signing key (cookie and token keys derive from it).
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._cookie_key = derived_key(key, "session")
        self.key = key
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._spent: dict[str, int] = {}  # token nonce → expiry: each token logs in once
        self._lock = threading.Lock()

    def _sign(self, session_id: str) -> str:
        return _b64(hmac.new(self._cookie_key, session_id.encode(), hashlib.sha256).digest())

    def create(self, user: str, lakefs: LakeFS, repository: str | None = None) -> str:
        """Start a session; return the cookie value."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_expired(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes first
                del self._sessions[min(self._sessions, key=lambda s: self._sessions[s].expires)]
            self._sessions[session_id] = Session(user, lakefs, repository, now + SESSION_TTL_S)
        return f"{session_id}.{self._sign(session_id)}"

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, else None."""
        session_id, _, signature = (cookie or "").partition(".")
        if not signature or not hmac.compare_digest(self._sign(session_id), signature):
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires < self._clock():
                self._sessions.pop(session_id, None)
                return None
            return session

    def end(self, cookie: str | None) -> None:
        """Sign out the session a cookie names (if any)."""
        session_id, _, signature = (cookie or "").partition(".")
        if signature and hmac.compare_digest(self._sign(session_id), signature):
            with self._lock:
                self._sessions.pop(session_id, None)

    def redeem(self, token: str) -> LoginToken | None:
        """The grant of a valid token not used before (then spent), else None."""
        now = self._clock()
        grant = read_token(self.key, token, now=now)
        if grant is None:
            return None
        with self._lock:
            self._forget_expired(now)
            if grant.nonce in self._spent:
                return None
            self._spent[grant.nonce] = grant.expires
        return grant

    def _forget_expired(self, now: float) -> None:
        for session_id in [s for s, v in self._sessions.items() if v.expires < now]:
            del self._sessions[session_id]
        for nonce in [n for n, e in self._spent.items() if e < now]:
            del self._spent[nonce]
