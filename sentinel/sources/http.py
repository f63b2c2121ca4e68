"""The HTTP plumbing Prometheus and Loki share: auth, bounded concurrency, timeouts,
retries with backoff, and translation of aiohttp failures into Sentinel's SourceErrors.

Both speak the same envelope (`{"status": "success", "data": ...}`); the differences
(Loki's plain-text 400 bodies, its tenant header) are parameters, not subclasses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from sentinel.config import HTTPSourceConfig
from sentinel.errors import BadQuery, BadResponse, SourceError, SourceTimeout, SourceUnavailable
from sentinel.health import DependencyHealth
from sentinel.redact import redact_text, redact_url
from sentinel.slicing import Slicer, Steps, finish
from sentinel.sources.base import check_series_count

RETRYABLE_STATUS = frozenset({502, 503, 504})
# Answers decoded and parsed at once (`_once`).
PARSING = 2

T = TypeVar("T")
# A reader of an answer's bytes (query, body, the full decode and parse to hand it to).
Scan = Callable[[str, bytes, Callable[[bytes], Steps[T]]], Steps[T]]


def _data(data: Any) -> Steps[Any]:
    """The parse of `request_json`: the data as it is, in no step."""
    yield from ()
    return data


class HTTPQueryClient:
    """One aiohttp session per backend; at most `max_in_flight` requests at a time."""

    def __init__(
        self,
        name: str,
        config: HTTPSourceConfig,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.base_url = config.url.rstrip("/")
        self.health = DependencyHealth(name=name, target=_redact_url(self.base_url))
        self._headers = {**config.headers, **(extra_headers or {})}
        if _loopback(self.base_url) and not any(
            k.lower() == "accept-encoding" for k in self._headers
        ):
            # Same host: gzip would cost both processes CPU (Prometheus compressing, us
            # inflating: 5-10 % of a cycle's CPU in a profile) to save no bandwidth. Remote
            # backends keep aiohttp's default (gzip), which saves real transfer time.
            self._headers["Accept-Encoding"] = "identity"
        if config.bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        self._auth = (
            aiohttp.BasicAuth(
                config.basic_auth.username, config.basic_auth.password.get_secret_value()
            )
            if config.basic_auth is not None
            else None
        )
        self._semaphore = asyncio.Semaphore(config.max_in_flight)
        self._parsing = asyncio.Semaphore(PARSING)
        self._session: aiohttp.ClientSession | None = None
        self.requests_total = 0

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.max_in_flight * 2)
            self._session = aiohttp.ClientSession(
                headers=self._headers, auth=self._auth, connector=connector
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request_json(
        self, path: str, params: dict[str, str], query: str, method: str = "POST"
    ) -> Any:
        """Send one API call with retries; return the `data` of a success envelope."""
        return await self.request(path, params, query, _data, method)

    async def request(
        self,
        path: str,
        params: dict[str, str],
        query: str,
        parse: Callable[[Any], Steps[T]],
        method: str = "POST",
        scan: Scan[T] | None = None,
    ) -> T:
        """Send one API call with retries; return `parse` of a success envelope's `data`.

        The parse runs right after the decode, on the event loop in slices
        (sentinel/slicing.py), consuming the decoded envelope as it goes: its elements'
        dicts, lists and value strings are dropped as soon as their samples are built (at
        10,000 series per answer, envelopes held whole made most of a cycle's peak
        memory). Not in a worker thread: a thread running Python takes the interpreter
        each time the loop thread gives it up for a system call (every socket read and
        write), so a gate answer written while a cycle parsed waited for it several
        times over. A parse that refuses the answer (a BadResponse) marks the backend
        unhealthy like any failed request.

        `scan`, when given, reads the answer from its bytes instead, handing it back to
        the decode and `parse` when it does not read it: sentinel/sources/compact_vector.py."""
        attempts = self.config.retries + 1
        started = time.monotonic()
        for attempt in range(attempts):
            try:
                data, answered = await self._once(path, params, query, method, parse, scan)
            except SourceUnavailable as exc:
                if attempt + 1 >= attempts:
                    self.health.record_failure(time.monotonic() - started, exc.detail)
                    raise
                await asyncio.sleep(_backoff(attempt))
            except SourceError as exc:
                # A bad query is the rule's fault, not the backend's: the backend is healthy.
                if isinstance(exc, BadQuery):
                    self.health.record_success(time.monotonic() - started)
                else:
                    self.health.record_failure(time.monotonic() - started, exc.detail)
                raise
            else:
                # The backend's latency: until its answer was read, not decoded and parsed
                # (Sentinel's own CPU, and its wait for the interpreter under load).
                self.health.record_success(answered - started)
                return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        path: str,
        params: dict[str, str],
        query: str,
        method: str,
        parse: Callable[[Any], Steps[T]],
        scan: Scan[T] | None,
    ) -> tuple[T, float]:
        """`parse` of the answer, and the monotonic time its body had been read."""
        url = f"{self.base_url}{path}"
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with self._semaphore:
            self.requests_total += 1
            try:
                session = self._get_session()
                if method == "POST":
                    ctx = session.post(url, data=params, timeout=timeout)
                else:
                    ctx = session.get(url, params=params, timeout=timeout)
                async with ctx as resp:
                    body = await resp.read()
                    status = resp.status
                answered = time.monotonic()
            except TimeoutError:
                raise SourceTimeout(
                    self.name, query, f"no answer within {self.config.timeout:g}s"
                ) from None
            except aiohttp.ClientError as exc:
                raise SourceUnavailable(self.name, query, _describe(exc)) from exc
        # The decode is one C call (~1 ms for a 1,000-service answer), a slice of its own
        # when it took one; the parse, a Python loop over every sample, yields between
        # slices (a `scan` cuts its own slices the same way). Two answers of this client
        # at a time: the others wait as bytes, not as decoded envelopes (~10x their size
        # in Python objects) while the parses share the loop.
        self._check_status(status, body, query)  # an error is retried without waiting
        del resp, ctx  # they hold the body too: only `body` (or the scan) keeps it

        def full(body: bytes) -> Steps[T]:
            return parse(self._payload(body, query))

        async with self._parsing:
            slicer = Slicer()
            check_series_count(self.name, query, body, self.config.max_series)  # before parsing
            steps = scan(query, body, full) if scan is not None else full(body)
            del body
            if slicer.due():  # a large answer's decode (not a scan's) is a slice of its own
                await slicer.pause()
            return await finish(steps, slicer), answered

    def _check_status(self, status: int, body: bytes, query: str) -> None:
        """A SourceError for an HTTP status other than 200."""
        if status in RETRYABLE_STATUS:
            raise SourceUnavailable(self.name, query, f"HTTP {status}: {_text(body)}")
        if status in (400, 422):
            raise BadQuery(self.name, query, _error_text(body))
        if status == 429:
            raise SourceUnavailable(self.name, query, "HTTP 429: rate limited")
        if status >= 300 and status != 200:
            raise BadResponse(self.name, query, f"HTTP {status}: {_text(body)}")

    def _payload(self, body: bytes, query: str) -> Any:
        """The `data` of a success envelope; a SourceError for anything else."""
        try:
            # orjson: a 1,000-service answer parses 3-5x faster than with json, which is
            # most of Sentinel's CPU per cycle.
            payload = orjson.loads(body)
        except ValueError:
            raise BadResponse(self.name, query, f"answer is not JSON: {_text(body)}") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            detail = payload.get("error", "unknown error") if isinstance(payload, dict) else body
            raise BadResponse(self.name, query, f"query failed: {detail!s:.300}")
        return payload.get("data")


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _backoff(attempt: int) -> float:
    # Full jitter keeps several Sentinels from retrying in lockstep against one Prometheus.
    return min(2.0, 0.2 * (2.0**attempt)) * (0.5 + random.random() / 2)


def _text(body: bytes) -> str:
    return redact_text(body.decode("utf-8", "replace").strip()[:300])


def _error_text(body: bytes) -> str:
    """Prometheus answers 400 with a JSON envelope, Loki with a plain-text body."""
    try:
        payload = json.loads(body)
    except ValueError:
        return _text(body)
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])[:500]
    return _text(body)


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    # Some aiohttp errors quote the URL (a redirect loop, an invalid URL); this text goes
    # to SLO reasons, gate answers and /health/detailed.
    return redact_text(f"{type(exc).__name__}: {exc}")


# notify/webhook.py and grafana.py import it from here.
_redact_url = redact_url
