"""Sign-in and CSRF protection for the status UI.

The UI follows the API's rules: what the API shows without a token (SLO results, alerts,
silences) the UI shows too; what needs the token (the gate and its audit trail, creating
and expiring silences) needs a signed-in session when `server.api_token` is set.

- Signing in posts the token once (a form field, never a URL). The answer is a session
  cookie `sentinel_session` (HttpOnly, SameSite=Strict, Secure over HTTPS, 12 h) holding
  an expiry and a nonce signed with a key derived from the token: no server-side session
  table, sessions survive a restart, and changing the token (SIGHUP) ends them all.
- Every form that changes something carries a CSRF token, HMAC(key, nonce), where the
  nonce is the session's, or, before sign-in and when no token is set, that of a
  `sentinel_csrf` cookie (SameSite=Strict). A POST whose token does not match, or whose
  `Origin` header names another host, is refused with 403. SameSite=Strict alone already
  keeps other sites' forms from carrying the cookies; the token covers browsers and
  proxies that do not honour it, and login CSRF (a form signing you in as someone else).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from sentinel.web.compare import same_secret

SESSION_COOKIE = "sentinel_session"
CSRF_COOKIE = "sentinel_csrf"
SESSION_SECONDS = 12 * 3600
# Without a token, forms are still CSRF-protected: a per-process key signs the nonces
# (a form rendered before a restart is refused once, with a message to reload).
_PROCESS_KEY = secrets.token_bytes(32)


def _key(token: str | None) -> bytes:
    if not token:
        return _PROCESS_KEY
    return hmac.new(
        token.encode("utf-8", "surrogatepass"), b"sentinel-ui-session-v1", "sha256"
    ).digest()


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Auth:
    """The auth state of one request: whether a token is configured, whether the browser
    holds a valid session, and the CSRF token its forms must carry."""

    required: bool
    signed_in: bool
    csrf: str
    new_nonce: str | None  # set when the response must send a fresh csrf cookie

    @property
    def allowed(self) -> bool:
        """May this browser use the token-protected pages and actions?"""
        return self.signed_in or not self.required


class UIAuth:
    def __init__(self, token: Callable[[], str | None], clock: Callable[[], float] = time.time):
        self._token = token
        self._clock = clock

    def _session_nonce(self, cookie: str | None, key: bytes) -> str | None:
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, signature = cookie.split(".")
        if not same_secret(signature, _sign(key, f"{expires}.{nonce}")):
            return None
        if not expires.isdigit() or int(expires) < self._clock():
            return None
        return nonce

    def check(self, request: web.Request) -> Auth:
        token = self._token()
        key = _key(token)
        nonce = self._session_nonce(request.cookies.get(SESSION_COOKIE), key) if token else None
        if nonce is not None:
            return Auth(True, True, _sign(key, f"csrf.{nonce}"), None)
        anon = request.cookies.get(CSRF_COOKIE, "")
        fresh = None
        if len(anon) != 32 or not anon.isalnum():
            anon = fresh = secrets.token_hex(16)
        return Auth(bool(token), False, _sign(key, f"csrf.{anon}"), fresh)

    def sign_in(self, response: web.StreamResponse, request: web.Request, given: str) -> bool:
        """Set the session cookie when `given` is the token; False otherwise."""
        token = self._token()
        if not token:
            return True
        if not same_secret(given, token):
            return False
        expires = int(self._clock()) + SESSION_SECONDS
        nonce = secrets.token_hex(16)
        value = f"{expires}.{nonce}.{_sign(_key(token), f'{expires}.{nonce}')}"
        _set_cookie(response, request, SESSION_COOKIE, value, SESSION_SECONDS)
        return True

    @staticmethod
    def sign_out(response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")

    @staticmethod
    def remember(response: web.StreamResponse, request: web.Request, auth: Auth) -> None:
        """Send the anonymous CSRF cookie the page's forms were signed with, if new."""
        if auth.new_nonce is not None:
            _set_cookie(response, request, CSRF_COOKIE, auth.new_nonce, None)


def _set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
    )


def same_origin(request: web.Request) -> bool:
    """A POST from another site is refused: its Origin (sent by every current browser on
    POST) must name this host. No Origin at all (an old browser, curl) falls back to the
    CSRF token alone."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no `//host`, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
