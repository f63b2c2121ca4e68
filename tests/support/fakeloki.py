"""A protocol-faithful Loki 2.9 test server (no Loki build installs on these machines).

Accepts pushes (`POST /loki/api/v1/push`, JSON form, 204), stores lines per tenant
(`X-Scope-OrgID`), and answers `/loki/api/v1/query` and `/query_range` for the LogQL
subset Sentinel emits (see `logql_subset`) in Loki's envelope: string sample values, a
`stats` object, `result: []` for an empty window, HTTP 400 with a plain-text body for
invalid LogQL. Faults (429 + Retry-After, 5xx, delays) are injected on demand.
The recorded real answers in ../shared/reference/loki-2.9.9-responses/ are the spec
(tests/test_fakeloki.py compares field by field).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from sentinel.offline.ruletest.logql_engine import (
    Entry,
    LogQLError,
    LogQuery,
    Vector,
    check_errors,
    evaluate,
    parse,
    run_pipeline,
)
from support.threaded import ThreadedServer

STATS_TEMPLATE: dict[str, Any] = {
    "summary": {
        "bytesProcessedPerSecond": 0,
        "linesProcessedPerSecond": 0,
        "totalBytesProcessed": 0,
        "totalLinesProcessed": 0,
        "execTime": 0.0,
        "queueTime": 0.0,
        "subqueries": 0,
        "totalEntriesReturned": 0,
        "splits": 0,
        "shards": 2,
        "totalPostFilterLines": 0,
        "totalStructuredMetadataBytesProcessed": 0,
    },
    "querier": {"store": {}},
    "ingester": {
        "totalReached": 2,
        "totalChunksMatched": 0,
        "totalBatches": 0,
        "totalLinesSent": 0,
        "store": {},
    },
    "cache": {},
}


def go_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64), which Loki uses for sample values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        from decimal import Decimal

        text = format(Decimal(text), "f")
    return text


def parse_time(raw: str) -> int:
    """Loki accepts nanoseconds, (fractional) seconds or RFC 3339."""
    if "T" in raw:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1e9)
    if "." not in raw and len(raw) > 12:
        return int(raw)
    return int(float(raw) * 1e9)


def ts_json(ns: int) -> float | int:
    seconds = ns / 1e9
    return int(seconds) if ns % 1_000_000_000 == 0 else seconds


@dataclass
class Fault:
    status: int
    retry_after: int | None = None
    delay: float = 0.0


@dataclass
class FakeLoki(ThreadedServer):
    require_tenant: bool = False
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dirty: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/loki/api/v1/push", self._push)
        app.router.add_route("*", "/loki/api/v1/query", self._query)
        app.router.add_route("*", "/loki/api/v1/query_range", self._query_range)
        app.router.add_get("/loki/api/v1/labels", self._labels)
        app.router.add_get("/ready", self._ready)
        return app

    # -- direct helpers for tests ------------------------------------------------------

    def push(
        self, stream: dict[str, str], lines: list[tuple[float, str]], tenant: str = "fake"
    ) -> None:
        with self._lock:
            bucket = self.entries.setdefault(tenant, [])
            bucket.extend(Entry(int(ts * 1e9), line, dict(stream)) for ts, line in lines)
            self._dirty[tenant] = True

    # -- HTTP ------------------------------------------------------------------------------

    def _tenant(self, request: web.Request) -> str:
        tenant = request.headers.get("X-Scope-OrgID")
        if tenant is None and self.require_tenant:
            raise web.HTTPUnauthorized(text="no org id\n")
        return tenant or "fake"

    async def _fault(self) -> web.Response | None:
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status == 429:
            return web.Response(
                status=429,
                text="Ingestion rate limit exceeded\n",
                headers={"Retry-After": str(fault.retry_after or 1)},
            )
        if fault.status >= 500:
            return web.Response(status=fault.status, text="internal server error\n")
        return None

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _labels(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        names = sorted({k for e in self.entries.get(tenant, []) for k in e.stream})
        return web.json_response({"status": "success", "data": names})

    async def _push(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        try:
            body = await request.json()
            streams = body["streams"]
            new = [
                Entry(int(ts), line, dict(s["stream"])) for s in streams for ts, line in s["values"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            return web.Response(status=400, text=f"loghttp.PushRequest: {exc}\n")
        with self._lock:
            self.entries.setdefault(tenant, []).extend(new)
            self._dirty[tenant] = True
        return web.Response(status=204)

    def _sorted(self, tenant: str) -> list[Entry]:
        entries = self.entries.setdefault(tenant, [])
        if self._dirty.pop(tenant, False):
            entries.sort(key=lambda e: e.ts_ns)
        return entries

    def _select(self, tenant: str):  # type: ignore[no-untyped-def]
        from sentinel.offline.ruletest.logql_engine import _match

        def select(matchers: list[tuple[str, str, str]], start: int, end: int) -> list[Entry]:
            with self._lock:
                entries = self._sorted(tenant)
                lo = bisect.bisect_right(entries, start, key=lambda e: e.ts_ns)
                hi = bisect.bisect_right(entries, end, key=lambda e: e.ts_ns)
                entries = entries[lo:hi]
            return [
                e
                for e in entries
                if all(_match(op, e.stream.get(name, ""), value) for name, op, value in matchers)
            ]

        return select

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _begin(self, request: web.Request) -> tuple[str, dict[str, str], str] | web.Response:
        """Tenant, parameters and query of a query request, or the injected fault."""
        tenant = self._tenant(request)
        if (fault := await self._fault()) is not None:
            return fault
        params = await self._params(request)
        query = params.get("query", "")
        self.queries.append(query)
        return tenant, params, query

    async def _query(self, request: web.Request) -> web.Response:
        begun = await self._begin(request)
        if isinstance(begun, web.Response):
            return begun
        tenant, params, query = begun
        at_ns = (
            parse_time(params["time"])
            if params.get("time")
            else int(datetime.now().timestamp() * 1e9)
        )
        try:
            node = parse(query)
            if isinstance(node, LogQuery):
                raise LogQLError(
                    "log queries are not supported as an instant query type, please change "
                    "your query to a range query type"
                )
            vector = evaluate(node, at_ns, self._select(tenant))
            check_errors(node, vector)
        except LogQLError as exc:
            return web.Response(status=400, text=str(exc), content_type="text/plain")
        result = [
            {"metric": dict(labels), "value": [ts_json(at_ns), go_float(value)]}
            for labels, value in sorted(vector.items())
        ]
        return self._answer("vector", result, vector)

    async def _query_range(self, request: web.Request) -> web.Response:
        begun = await self._begin(request)
        if isinstance(begun, web.Response):
            return begun
        tenant, params, query = begun
        start, end = parse_time(params["start"]), parse_time(params["end"])
        step_raw = params.get("step", "15")
        step_ns = int(float(step_raw.rstrip("s")) * 1e9)
        try:
            node = parse(query)
        except LogQLError as exc:
            return web.Response(status=400, text=str(exc), content_type="text/plain")
        if isinstance(node, LogQuery):
            return self._streams(node, tenant, start, end, int(params.get("limit", "100")))
        series: dict[Any, list[list[Any]]] = {}
        merged: Vector = {}
        t = start
        while t <= end:
            try:
                vector = evaluate(node, t, self._select(tenant))
                check_errors(node, vector)
            except LogQLError as exc:
                return web.Response(status=400, text=str(exc), content_type="text/plain")
            for labels, value in vector.items():
                series.setdefault(labels, []).append([ts_json(t), go_float(value)])
                merged[labels] = value
            t += step_ns
        result = [{"metric": dict(k), "values": v} for k, v in sorted(series.items())]
        return self._answer("matrix", result, merged)

    def _streams(
        self, node: LogQuery, tenant: str, start: int, end: int, limit: int
    ) -> web.Response:
        """A log query: matching lines grouped by their labels, newest first."""
        lines = []
        for entry in self._select(tenant)(node.matchers, start - 1, end):
            labels = run_pipeline(entry, node.stages)
            if labels is not None:
                lines.append((entry.ts_ns, entry.line, tuple(sorted(labels.items()))))
        lines.sort(key=lambda item: item[0], reverse=True)
        streams: dict[Any, list[list[str]]] = {}
        for ts, line, labels in lines[:limit]:
            streams.setdefault(labels, []).append([str(ts), line])
        result = [{"stream": dict(k), "values": v} for k, v in streams.items()]
        return self._answer("streams", result, {})

    def _answer(self, kind: str, result: list[dict[str, Any]], vector: Vector) -> web.Response:
        stats = copy.deepcopy(STATS_TEMPLATE)
        stats["summary"]["totalEntriesReturned"] = len(result)
        body = {"status": "success", "data": {"resultType": kind, "result": result, "stats": stats}}
        return web.Response(
            text=json.dumps(body, separators=(",", ":")), content_type="application/json"
        )
