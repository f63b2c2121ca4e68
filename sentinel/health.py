"""Health of one dependency (a source, a notifier, Grafana) as `/health/detailed` shows it.

Every record is redacted at the boundary: whatever URL or error text a caller passes, no
credentials, query strings or known secrets leave through health (see `redact.py`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentinel.redact import redact_text

# A new value for every change to any DependencyHealth (each value is used once, so a
# reader that saw value v and sees v again knows nothing changed in between, even with
# writers in other threads). The gate reuses its reading of the sources' health while
# it holds: re-reading it was a tenth of a gate request's CPU.
_changes = itertools.count()
_changed = next(_changes)


def health_changes() -> int:
    """The current change mark of all dependency health records."""
    return _changed


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
    # Injected so tests and backtests can pin time; never shown.
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        # /health/detailed needs no token: whatever a caller passes, no credentials,
        # query strings or known secrets leave here (sentinel/redact.py).
        self.target = redact_text(self.target)

    def __setattr__(self, name: str, value: Any) -> None:
        global _changed
        object.__setattr__(self, name, value)
        _changed = next(_changes)

    def record_success(self, latency_s: float) -> None:
        self.status = "healthy"
        self.last_latency_ms = round(latency_s * 1000, 2)
        self.last_success_at = self.clock()
        self.consecutive_failures = 0

    def record_failure(self, latency_s: float, error: str) -> None:
        self.status = "unhealthy"
        self.last_latency_ms = round(latency_s * 1000, 2)
        self.last_error = redact_text(error)
        self.last_failure_at = self.clock()
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
