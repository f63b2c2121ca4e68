"""Prometheus HTTP API source (`/api/v1/query`, `/api/v1/query_range`, `/api/v1/format_query`).

Uses aiohttp rather than prometheus-api-client: measured here, 3,000 instant queries took
1.1-1.4 s with aiohttp against 2.2-2.4 s and 4.5x the client CPU with the synchronous,
requests-based client (its connection pool is capped at 10), and that client drags in
pandas and matplotlib.
"""

from __future__ import annotations

from sentinel.config import PrometheusConfig
from sentinel.errors import BadQuery
from sentinel.sources.base import Sample, Series, matrix_steps, vector_steps
from sentinel.sources.compact_vector import VectorScanner
from sentinel.sources.http import HTTPQueryClient


class PrometheusSource:
    name = "prometheus"

    def __init__(self, config: PrometheusConfig) -> None:
        self._client = HTTPQueryClient(self.name, config)
        self.health = self._client.health
        self._vectors = VectorScanner()

    @property
    def requests_total(self) -> int:
        return self._client.requests_total

    async def instant(self, query: str, at: float) -> list[Sample]:
        params = {"query": query, "time": f"{at:.3f}"}
        limit = self._client.config.max_series
        return await self._client.request(
            "/api/v1/query",
            params,
            query,
            lambda data: vector_steps(self.name, query, data, limit),
            scan=self._vectors.scan,
        )

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        limit = self._client.config.max_series
        return await self._client.request(
            "/api/v1/query_range",
            params,
            query,
            lambda data: matrix_steps(self.name, query, data, limit),
        )

    async def check_syntax(self, query: str) -> str | None:
        """Ask Prometheus' own parser; return its error text, or None when the query parses."""
        try:
            await self._client.request_json("/api/v1/format_query", {"query": query}, query)
        except BadQuery as exc:
            return exc.detail
        return None

    async def ping(self) -> None:
        await self._client.request_json("/api/v1/status/buildinfo", {}, "buildinfo", "GET")

    async def close(self) -> None:
        await self._client.close()
