"""HTTP API: thin handlers over the daemon's state (health, metrics, SLO results).

Later features register their own routes (gate, alerts, silences) via `extra_routes`.
Malformed HTTP (an oversized request line, a bad header) is logged as one short,
rate-limited line: unauthenticated clients must not be able to flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentinel import __version__, jsonenc
from sentinel.daemon.runner import Daemon
from sentinel.errors import StateStoreError
from sentinel.evaluate.slo import rfc3339
from sentinel.web.compare import same_secret

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", Daemon)


class WebPool:
    """Threads of their own for the answers that grow with the rule set: they need no
    token, and in the shared default pool a burst of them queued ahead of SLO evaluation,
    answer parsing and the leader's lease renewal. One thread for /api/v1/slos,
    /api/v1/alerts and the UI overview, at most `MAX_QUEUED` of them waiting (beyond, 503
    and Retry-After: a client that keeps asking cannot grow the queue); one for /metrics,
    so a scrape never waits behind them."""

    MAX_QUEUED = 8

    def __init__(self) -> None:
        self.answers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-web")
        self.metrics = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-metrics")
        self.queued = 0

    def shutdown(self) -> None:
        for pool in (self.answers, self.metrics):
            pool.shutdown(wait=False, cancel_futures=True)


WEB_POOL: web.AppKey[WebPool] = web.AppKey("web_pool", WebPool)
log = logging.getLogger("sentinel.web")

T = TypeVar("T")
JSON = "application/json"


async def off_loop(request: web.Request, work: Callable[[], T]) -> T:
    """`work()` in the web answers' own thread (see WebPool); 503 when too many wait."""
    pool = request.app[WEB_POOL]
    if pool.queued >= pool.MAX_QUEUED:
        raise web.HTTPServiceUnavailable(
            text=dumps({"error": f"busy: {pool.queued} large answers queued; retry shortly"}),
            content_type=JSON,
            headers={"Retry-After": "1"},
        )
    return await _in_pool(pool, work)


async def _in_pool(pool: WebPool, work: Callable[[], T]) -> T:
    pool.queued += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(pool.answers, work)
    finally:
        pool.queued -= 1


# A streamed answer is encoded and written this much at a time.
STREAM_CHUNK = 256 * 1024


async def stream_json(request: web.Request, parts: Iterator[str]) -> web.StreamResponse:
    """A JSON answer given as pieces of text, encoded in the web answers' thread a chunk at
    a time and written as each chunk is ready. At 10,000 services /api/v1/slos is 76 MB:
    joined, encoded and handed to the transport whole it held the event loop ~300 ms and
    twice its size in memory; in chunks the loop writes 256 KB at a time, waiting for the
    client to take each (a slow reader holds one chunk, not the whole answer). 503 as
    `off_loop` when too many answers wait, before anything is sent."""

    def chunks() -> Generator[bytes, None, None]:
        held: list[str] = []
        size = 0
        for part in parts:
            held.append(part)
            size += len(part)
            if size >= STREAM_CHUNK:
                yield "".join(held).encode()
                held, size = [], 0
        if held:
            yield "".join(held).encode()

    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    if request.method == "HEAD":
        # A streamed response writes whatever it is given, HEAD or not: a body after a HEAD's
        # headers is read as the next response on the connection. Nothing is encoded.
        await response.prepare(request)
        await response.write_eof()
        return response
    encoded = chunks()
    chunk = await off_loop(request, lambda: next(encoded, b""))
    pool = request.app[WEB_POOL]
    try:
        await response.prepare(request)
        while chunk:
            await response.write(chunk)
            # Admitted already: the rest of this answer is not refused midway.
            chunk = await _in_pool(pool, lambda: next(encoded, b""))
        await response.write_eof()
    except ConnectionError:
        # The client left (`curl | head`, a dashboard's timeout): routine, and anyone may
        # ask these answers without a token, so not a traceback per disconnect.
        log.debug(f"{request.path}: client left mid-answer")
    except Exception as exc:
        # Headers are sent: the status cannot change any more. The client gets a body cut
        # short (invalid JSON), and the log one line.
        log.error(f"{request.path}: answer cut short: {type(exc).__name__}: {exc}")
        if request.transport is not None:
            request.transport.close()
    finally:
        # A client that left: the thread stops encoding. Unless this handler was cancelled
        # while the thread runs the generator: it finishes that chunk, and the garbage
        # collector closes it (closing a running generator raises ValueError).
        with contextlib.suppress(ValueError):
            encoded.close()
    return response


# Request limits (SECURITY.md), pinned here rather than left to aiohttp's defaults so an
# upgrade cannot change them unnoticed. The largest legitimate request is a Slack button
# click (the message's blocks, form-encoded: ~150 KB at most); a longer request line, a
# longer header or more headers is refused with 400, a larger body with 413, each before
# a handler runs.
MAX_REQUEST_BODY = 1024 * 1024
MAX_REQUEST_LINE = MAX_HEADER_FIELD = 8190
MAX_HEADERS = 128
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def dumps(data: Any) -> str:
    return jsonenc.dumps(data)


def require_token(request: web.Request, body_token: str | None = None) -> None:
    """Bearer-token check for the gate and admin APIs (open when no token is configured).

    The scheme is case-insensitive (RFC 7235); `body_token` is a token a caller that
    cannot set headers sent in its body (Flagger's `metadata.token`)."""
    token = request.app[DAEMON].config.server.api_token
    if token is None or not token.get_secret_value():
        return
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    given = credentials.strip() if scheme.lower() == "bearer" else (body_token or "")
    if not same_secret(given, token.get_secret_value()):
        raise web.HTTPUnauthorized(
            text=dumps({"error": "missing or invalid bearer token"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="sentinel"'},
        )


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    reasons = request.app[DAEMON].readiness()
    if reasons:
        return json_response({"status": "not_ready", "reasons": reasons}, status=503)
    return json_response({"status": "ready"})


async def detailed(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    now = daemon.clock()
    checks = {name: src.health.as_json() for name, src in daemon.engine.sources.items()}
    for name, check in daemon.extra_health().items():
        checks[name] = check
    unhealthy = [
        n
        for n, c in checks.items()
        if c.get("status") == "unhealthy" and not c.get("informational")
    ]
    status = "healthy"
    if unhealthy or daemon.reload_status.status in ("failed", "partial"):
        status = "degraded"
    if daemon.readiness() and daemon.state.value != "running":
        status = "unhealthy"
    groups = {}
    for group in daemon.rules.groups:
        gs = daemon.group_status.get(group.name)
        groups[group.name] = {
            "file": group.file,
            "service": group.service,
            "interval_seconds": group.interval,
            "slos": len(group.slos),
            **(gs.as_json() if gs else {"last_evaluation_at": None}),
        }
    body = {
        "status": status,
        "timestamp": rfc3339(now),
        "uptime_seconds": round(now - daemon.started_at, 1),
        "version": __version__,
        "state": daemon.state.value,
        "checks": checks,
        "rules": {"fingerprint": daemon.rules.fingerprint, "slos": len(daemon.rules.slos)},
        "rule_groups": groups,
        "leader": daemon.leader_status(),
        "config": {
            "path": daemon.config_path,
            "last_reload": daemon.reload_status.as_json(),
        },
        "ready": not daemon.readiness(),
        "not_ready_reasons": daemon.readiness(),
    }
    return json_response(body)


async def metrics(request: web.Request) -> web.Response:
    # Rendered in a worker thread: at 1,000 services (~40,000 series) the text takes
    # ~0.5-1 s of CPU, which on the event loop held every gate request for that long at
    # each scrape. prometheus-client copies each metric's children under its lock, so the
    # loop may set gauges meanwhile.
    registry = request.app[DAEMON].metrics.registry
    pool = request.app[WEB_POOL].metrics
    payload = await asyncio.get_running_loop().run_in_executor(
        pool, lambda: generate_latest(registry)
    )
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def slos(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    service = request.query.get("service")
    status = request.query.get("status")
    if status is not None and status not in ("ok", "breach", "no_data"):
        raise web.HTTPBadRequest(
            text=dumps({"error": "status: expected ok, breach or no_data"}),
            content_type="application/json",
        )
    parts = daemon.latest_parts()  # this cycle's results: immutable, read by the thread below

    # Filtered and encoded in a worker thread, element by element, and written as it is
    # encoded: at 1,000 services x 3 SLOs this is 5.5 MB of JSON and held the event loop
    # (the gate, health checks) ~250 ms per request; at 10,000, 76 MB.
    return await stream_json(
        request,
        jsonenc.list_parts(
            r.to_json()
            for part in parts
            for r in part
            if (service is None or r.service == service) and (status is None or r.status == status)
        ),
    )


class BadRequestLogFilter(logging.Filter):
    """On aiohttp's server logger: a malformed request (HttpProcessingError: LineTooLong,
    BadStatusLine, InvalidHeader...) becomes one short line instead of a traceback, at
    most one per `interval` seconds; the next line says how many were suppressed."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self._next = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        message = " ".join(str(exc.message).split())[:120]
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        more = f" ({self.suppressed} more suppressed)" if self.suppressed else ""
        record.msg = "malformed HTTP request from %s: %s: %s%s"
        record.args = (peer, type(exc).__name__, message, more)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        self.suppressed = 0
        return True


def install_bad_request_filter() -> BadRequestLogFilter:
    """The one filter on `aiohttp.server` (idempotent: tests build many apps)."""
    logger = logging.getLogger("aiohttp.server")
    for existing in logger.filters:
        if isinstance(existing, BadRequestLogFilter):
            return existing
    installed = BadRequestLogFilter()
    logger.addFilter(installed)
    return installed


def store_unavailable(exc: StateStoreError) -> web.Response:
    """An answer that needs the state store while it cannot be read (a shared PostgreSQL
    that is down) is a 503 naming it, not a 500: the gate and health keep answering."""
    return json_response(
        {"error": f"state store unavailable: {exc}"},
        status=503,
        headers={"Retry-After": "5"},
    )


def answers_store_errors(handler: Handler) -> Handler:
    """Marks a handler that turns StateStoreError into `store_unavailable` itself (the
    gate: its hot path is not wrapped)."""
    handler.answers_store_errors = True  # type: ignore[attr-defined]
    return handler


def _store_errors_answered(route: web.RouteDef) -> web.RouteDef:
    """`route` with StateStoreError answered by `store_unavailable`. Per route rather than
    an app middleware: with any middleware, aiohttp wraps every request in two more
    layers, which cost the gate ~6 % of its throughput under load."""
    handler = route.handler
    if getattr(handler, "answers_store_errors", False):
        return route

    @functools.wraps(handler)
    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StateStoreError as exc:
            return store_unavailable(exc)

    return web.RouteDef(route.method, route.path, answered, route.kwargs)


def build_runner(app: web.Application) -> web.AppRunner:
    """The daemon's HTTP server: Sentinel's request limits, no access log, no signals."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        max_line_size=MAX_REQUEST_LINE,
        max_field_size=MAX_HEADER_FIELD,
        max_headers=MAX_HEADERS,
    )


def build_app(daemon: Daemon, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    install_bad_request_filter()
    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    app[DAEMON] = daemon
    app[WEB_POOL] = WebPool()

    async def stop_pool(app: web.Application) -> None:
        app[WEB_POOL].shutdown()

    app.on_cleanup.append(stop_pool)
    routes = [
        web.get("/health/live", live),
        web.get("/health/ready", ready),
        web.get("/health/detailed", detailed),
        web.get("/metrics", metrics),
        web.get("/api/v1/slos", slos),
        *(extra_routes or []),
    ]
    app.add_routes(
        [_store_errors_answered(r) if isinstance(r, web.RouteDef) else r for r in routes]
    )
    return app
