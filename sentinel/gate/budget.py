"""What gate traffic may cost the sources, so that a flood of distinct gate requests can
neither multiply the load on Prometheus nor starve the scheduled evaluation cycles.

- `EvaluationBudget`: a token bucket on fresh gate evaluations (cache misses; identical
  requests share one), `gate.max_evaluations_per_second`, plus a cap on evaluations
  waiting for a token or running (`gate.max_pending_evaluations`). A request that would
  wait past the gate deadline, or find the cap reached, is refused with a Retry-After.
- `GateEngine`: gate queries go through source clients of their own, limited to
  `gate.max_in_flight` concurrent requests per source: they never take the slots of the
  scheduled cycles' `max_in_flight`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping

from sentinel.config import Config
from sentinel.errors import GateOverloaded
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.wiring import build_sources, renderers
from sentinel.sources.base import Source


class EvaluationBudget:
    """Token bucket (burst = one second's worth, at least 1) plus a pending cap. Pure but
    for the injected monotonic clock."""

    def __init__(
        self, rate: float, max_pending: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.configure(rate, max_pending)
        self.tokens = self.burst
        self.updated = clock()
        self.pending = 0

    def configure(self, rate: float, max_pending: int) -> None:
        self.rate = rate
        self.burst = float(max(1, math.ceil(rate)))
        self.max_pending = max_pending

    def reserve(self, max_wait: float) -> float:
        """Take a slot; return how long to wait before evaluating. Raises GateOverloaded
        when the pending cap is reached or the wait would exceed `max_wait`."""
        if self.pending >= self.max_pending:
            raise GateOverloaded(
                max(1, math.ceil(1 / self.rate)),
                f"{self.pending} gate evaluations already waiting or running "
                "(gate.max_pending_evaluations)",
            )
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        wait = 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
        if wait > max_wait:
            raise GateOverloaded(
                max(1, math.ceil(wait)),
                f"more than {self.rate:g} fresh gate evaluations per second "
                "(gate.max_evaluations_per_second)",
            )
        self.tokens -= 1  # may go below zero: a reservation of a future token
        self.pending += 1
        return wait

    def release(self) -> None:
        self.pending -= 1


class GateEngine:
    """An Engine over source clients reserved for gate queries, rebuilt when the source
    configuration changes (SIGHUP)."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._built_for: tuple[object, ...] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._old: list[list[Source]] = []

    def engine(self, config: Config) -> Engine:
        wanted = (config.prometheus, config.loki, config.gate.max_in_flight)
        if self._engine is None or wanted != self._built_for:
            if self._engine is not None:
                self._retire(self._engine.sources, config.prometheus.timeout)
            self._engine = Engine(build_sources(_gate_sources(config)), renderers())
            self._built_for = wanted
        return self._engine

    @property
    def current(self) -> Engine | None:
        """The engine built last (None before the first gate evaluation)."""
        return self._engine

    @property
    def sources(self) -> dict[str, Source]:
        return dict(self._engine.sources) if self._engine is not None else {}

    def _retire(self, sources: Mapping[str, Source], grace: float) -> None:
        # Queries still running on the old clients finish (or time out) first.
        old = list(sources.values())
        self._old.append(old)

        async def close_later() -> None:
            await asyncio.sleep(grace + 1)
            await _close(old)
            self._old.remove(old)

        task = asyncio.ensure_future(close_later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        for old in self._old:
            await _close(old)
        self._old.clear()
        if self._engine is not None:
            await _close(list(self._engine.sources.values()))
            self._engine = None


async def _close(sources: list[Source]) -> None:
    for source in sources:
        with contextlib.suppress(Exception):
            await source.close()


def _gate_sources(config: Config) -> Config:
    budget = {"max_in_flight": config.gate.max_in_flight}
    loki = config.loki.model_copy(update=budget) if config.loki is not None else None
    return config.model_copy(
        update={"prometheus": config.prometheus.model_copy(update=budget), "loki": loki}
    )
