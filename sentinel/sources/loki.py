"""Loki HTTP API source for metric queries (`/loki/api/v1/query`, `/query_range`).

Loki answers in Prometheus' envelope with string sample values and a large `stats`
object (ignored); invalid LogQL is HTTP 400 with a plain-text body; an empty window is
`result: []`. Syntax is checked with an instant query: Loki 2.9 has no parse-only endpoint.
"""

from __future__ import annotations

import time

from sentinel.config import LokiConfig
from sentinel.errors import BadQuery, TooManySeries
from sentinel.sources.base import Sample, Series, matrix_steps, vector_steps
from sentinel.sources.http import HTTPQueryClient


class LokiSource:
    name = "loki"

    def __init__(self, config: LokiConfig) -> None:
        headers = {"X-Scope-OrgID": config.tenant} if config.tenant else {}
        self._client = HTTPQueryClient(self.name, config, headers)
        self.health = self._client.health

    @property
    def requests_total(self) -> int:
        return self._client.requests_total

    async def instant(self, query: str, at: float) -> list[Sample]:
        # Loki takes nanosecond timestamps; an integer string avoids float rounding.
        params = {"query": query, "time": str(int(at * 1e9))}
        limit = self._client.config.max_series
        return await self._client.request(
            "/loki/api/v1/query",
            params,
            query,
            lambda data: vector_steps(self.name, query, data, limit),
            "GET",
        )

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        params = {
            "query": query,
            "start": str(int(start * 1e9)),
            "end": str(int(end * 1e9)),
            "step": f"{step:g}",
        }
        limit = self._client.config.max_series
        return await self._client.request(
            "/loki/api/v1/query_range",
            params,
            query,
            lambda data: matrix_steps(self.name, query, data, limit),
            "GET",
        )

    async def check_syntax(self, query: str) -> str | None:
        try:
            await self.instant(query, time.time())
        except BadQuery as exc:
            return exc.detail
        except TooManySeries:
            return None  # Loki ran it, so it parses; the series count is checked apart
        return None

    async def ping(self) -> None:
        await self._client.request_json("/loki/api/v1/labels", {}, "labels", "GET")

    async def close(self) -> None:
        await self._client.close()
