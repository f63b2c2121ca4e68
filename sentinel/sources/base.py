"""What every source offers the engine: instant vector queries at an explicit time.

Also the per-dependency health record that `/health/detailed` shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sentinel.errors import BadResponse


class Sample(NamedTuple):
    """One element of an instant vector (a tuple: thousands are built per cycle)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


@dataclass
class DependencyHealth:
    """Last outcome of talking to one backend (no secrets: URL without credentials)."""

    name: str
    target: str
    status: str = "unknown"  # unknown | healthy | unhealthy
    last_latency_ms: float | None = None
    last_error: str | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    consecutive_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def record_success(self, latency_s: float) -> None:
        self.status = "healthy"
        self.last_latency_ms = round(latency_s * 1000, 2)
        self.last_success_at = time.time()
        self.consecutive_failures = 0

    def record_failure(self, latency_s: float, error: str) -> None:
        self.status = "unhealthy"
        self.last_latency_ms = round(latency_s * 1000, 2)
        self.last_error = error
        self.last_failure_at = time.time()
        self.consecutive_failures += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "target": self.target,
            "latency_ms": self.last_latency_ms,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "last_failure_at": self.last_failure_at,
            "consecutive_failures": self.consecutive_failures,
            **self.extra,
        }


class Source(Protocol):
    name: str
    health: DependencyHealth

    async def instant(self, query: str, at: float) -> list[Sample]: ...

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]: ...

    async def check_syntax(self, query: str) -> str | None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def parse_value(source: str, query: str, raw: Any) -> float:
    """Prometheus and Loki send sample values as strings ('1.5', 'NaN', '+Inf')."""
    try:
        return float(str(raw))
    except (TypeError, ValueError):
        raise BadResponse(source, query, f"sample value {raw!r} is not a number") from None


def parse_vector(source: str, query: str, data: Any) -> list[Sample]:
    """Parse the `data` of a query answer: vector or scalar; anything else is an error."""
    if not isinstance(data, dict):
        raise BadResponse(source, query, "answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, parse_value(source, query, result[1]))]
    if kind != "vector" or not isinstance(result, list):
        raise BadResponse(source, query, f"expected an instant vector, got {kind!r}")
    # One try around the whole loop: this parses thousands of elements per cycle.
    try:
        return [Sample(item["metric"], float(item["value"][1])) for item in result]
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    for item in result:  # find the culprit for a precise error
        try:
            float(item["value"][1])
            _ = item["metric"]
        except (KeyError, IndexError, TypeError, ValueError):
            raise BadResponse(source, query, f"malformed vector element {item!r:.200}") from None
    raise BadResponse(source, query, "malformed vector")  # pragma: no cover


def parse_matrix(source: str, query: str, data: Any) -> list[Series]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise BadResponse(source, query, "expected a range vector (matrix)")
    out = []
    for item in data.get("result") or []:
        try:
            points = tuple((float(t), parse_value(source, query, v)) for t, v in item["values"])
            out.append(Series(dict(item["metric"]), points))
        except (KeyError, TypeError, ValueError):
            raise BadResponse(source, query, f"malformed matrix element {item!r:.200}") from None
    return out


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
