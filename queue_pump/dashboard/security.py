"""What keeps the dashboard's page its operator's: the response headers (a strict
Content-Security-Policy: scripts and styles from this server's static files only, no framing),
a Host check against DNS rebinding on loopback, the login (when a password is set), and CSRF
tokens on every form that acts.

A browser gets a random session cookie on its first visit (HttpOnly, SameSite=Strict). The CSRF
token of a form is an HMAC of that cookie under a key made at start-up, so a page of another
site can neither read it nor forge it; a POST without the right token, or with an Origin that is
not this server, is refused with 403. Logged-in sessions are kept in memory, at most
``MAX_SESSIONS`` (the oldest go first) and for ``SESSION_S`` each."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

SESSION_COOKIE = "qp_session"
CSRF_FIELD = "csrf_token"
MAX_SESSIONS = 1000
SESSION_S = 12 * 3600
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on POSTs,
    # and the Origin check below needs the real one.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class Guard:
    """The CSRF key, the password and the logged-in sessions of one dashboard process."""

    def __init__(self, password: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = secrets.token_bytes(32)
        self._password = password.encode()
        self._clock = clock
        self._sessions: OrderedDict[str, float] = OrderedDict()

    @property
    def needs_login(self) -> bool:
        return bool(self._password)

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session_id: str | None, token: str | None) -> bool:
        if not session_id or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session_id), token)

    def password_ok(self, given: str) -> bool:
        return bool(self._password) and hmac.compare_digest(self._password, given.encode())

    def log_in(self, session_id: str) -> None:
        self._sessions[session_id] = self._clock() + SESSION_S
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)

    def log_out(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def logged_in(self, session_id: str | None) -> bool:
        if not self.needs_login:
            return True
        until = self._sessions.get(session_id or "")
        if until is None:
            return False
        if until < self._clock():
            self._sessions.pop(session_id or "", None)
            return False
        return True


def host_allowed(host_header: str | None, bound_loopback: bool) -> bool:
    """On loopback, only loopback names: a page of another site whose name is made to resolve to
    127.0.0.1 (DNS rebinding) is not served. Elsewhere the login guards the page."""
    if not bound_loopback:
        return True
    if not host_header:
        return False
    host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost")


def same_origin(origin: str | None, host_header: str | None, scheme: str) -> bool:
    """A POST's Origin, when the browser sent one, must be this server."""
    if origin is None:
        return True  # old browsers omit it; the CSRF token still holds
    return origin == f"{scheme}://{host_header}"
