"""A scripted Prometheus HTTP API for answers a real Prometheus will not give on demand.

Speaks Prometheus' `/api/v1/query` protocol (GET or form-encoded POST, `query` and
`time` parameters, the `{"status": "success", "data": {"resultType": "vector", ...}}`
envelope written as compact JSON like Prometheus' own encoder, HTTP 400 `bad_data` for a
missing query) plus `format_query` and `buildinfo`, but answers each query with whatever
result the test scripted: garbage values, malformed elements, 10^5 series. Everything a
real Prometheus can produce is tested against the real one (conftest.py); this server is
for the answers of a broken or hostile one.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.threaded import ThreadedServer


def element(labels: Any, value: Any, at: float = 1_700_000_000.0) -> dict[str, Any]:
    """One instant-vector element exactly as given (no validation: garbage is the point)."""
    return {"metric": labels, "value": [at, value]}


def vector_body(
    result: list[Any], pretty: bool = False, warnings: list[str] | None = None
) -> bytes:
    envelope: dict[str, Any] = {
        "status": "success",
        "data": {"resultType": "vector", "result": result},
    }
    if warnings is not None:  # Prometheus adds them after `data`, e.g. for a partial answer
        envelope["warnings"] = warnings
    if pretty:
        return json.dumps(envelope, indent=2).encode()
    return json.dumps(envelope, separators=(",", ":")).encode()


@dataclass
class FakePrometheus(ThreadedServer):
    """`answer(body, when)` scripts the body for queries containing `when` (the most recent
    matching script wins); unscripted queries get an empty vector."""

    queries: list[str] = field(default_factory=list)
    _scripts: list[tuple[str, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def answer(
        self,
        result: list[Any] | bytes,
        when: str = "",
        pretty: bool = False,
        warnings: list[str] | None = None,
    ) -> None:
        body = result if isinstance(result, bytes) else vector_body(result, pretty, warnings)
        with self._lock:
            self._scripts.insert(0, (when, body))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/api/v1/query", self._query)
        app.router.add_route("*", "/api/v1/format_query", self._format_query)
        app.router.add_get("/api/v1/status/buildinfo", self._buildinfo)
        return app

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _query(self, request: web.Request) -> web.Response:
        query = (await self._params(request)).get("query", "")
        if not query.strip():
            return _error(400, "bad_data", 'invalid parameter "query": no expression found')
        with self._lock:
            self.queries.append(query)
            body = next((b for when, b in self._scripts if when in query), vector_body([]))
        return web.Response(body=body, content_type="application/json")

    async def _format_query(self, request: web.Request) -> web.Response:
        query = (await self._params(request)).get("query", "")
        if not query.strip():
            return _error(400, "bad_data", 'invalid parameter "query": no expression found')
        return web.json_response({"status": "success", "data": query})

    async def _buildinfo(self, request: web.Request) -> web.Response:
        data = {"version": "2.45.3", "revision": "fake", "branch": "HEAD", "goVersion": "go1.21"}
        return web.json_response({"status": "success", "data": data})


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"status": "error", "errorType": kind, "error": message}
    return web.json_response(body, status=status)
