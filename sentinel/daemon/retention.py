"""State retention: keeps the state database bounded (`state.retention`).

Delivered and dead notifications, resolved incidents and ended silences older than the
retention are deleted in batches of `BATCH` rows of each kind (one short transaction on
the event loop each): once at start, then every `every` seconds, and every second while a
full batch shows more is due (a first start on a large old database catches up in small
steps instead of one long pause). Mirrors the gate audit's retention (gate/service.py).
A failed pass is logged and shown in the state store's health; the next one retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from sentinel.errors import StateStoreError

log = logging.getLogger("sentinel.state")

BATCH = 500


class Prunable(Protocol):
    def prune_history(self, older_than: float, limit: int = BATCH) -> dict[str, int]: ...


class StateRetention:
    # Seconds between passes while nothing more is due.
    every = 60.0

    def __init__(
        self, store: Prunable, retention: Callable[[], float], clock: Callable[[], float]
    ) -> None:
        self.store = store
        # Read on every pass: a reload that changes `state.retention` applies at the next.
        self.retention = retention
        self.clock = clock
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    def prune_once(self) -> bool:
        """One batch of each kind; True when a kind filled its batch (more may be due)."""
        try:
            counts = self.store.prune_history(self.clock() - self.retention(), BATCH)
        except StateStoreError as exc:
            log.warning(f"state retention not applied: {exc}")
            return False
        except Exception:  # a bug must not end the loop (and the retention) silently
            log.exception("state retention failed; retried at the next pass")
            return False
        self.deleted += sum(counts.values())
        if any(counts.values()):
            log.info(
                "state retention: deleted "
                + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            )
        return max(counts.values(), default=0) >= BATCH

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="state-retention")

    async def _loop(self) -> None:
        behind = self.prune_once()
        while True:
            await asyncio.sleep(1.0 if behind else self.every)
            behind = self.prune_once()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
