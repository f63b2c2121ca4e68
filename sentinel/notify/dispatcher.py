"""Delivers the outbox: oldest first, per notifier in order, with backoff and a bound.

Runs as one background task woken after every cycle (and every `poll` seconds); each
delivery has a timeout; a stop request ends the loop after the current entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from sentinel.alerting.store import OutboxEntry
from sentinel.alerting.store_api import StateStore
from sentinel.errors import NotifyRejected, NotifyRetryable, StateStoreError
from sentinel.logs import fields
from sentinel.notify.base import Notifier
from sentinel.redact import redact_text
from sentinel.selfmetrics import SelfMetrics

log = logging.getLogger("sentinel.notify")

MAX_ATTEMPTS = 15
MAX_BACKOFF = 300.0
# A receiver's Retry-After is honoured up to this: an hour is past any rate-limit window
# Slack or a webhook documents, and a larger (or unreadable) value must not park a rollback
# or a page for ever.
MAX_RETRY_AFTER = 3600.0


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, 2.0 ** max(0, attempts))


def honoured(retry_after: float | None) -> float:
    """The part of a receiver's Retry-After the dispatcher waits: NaN and negatives count
    as none, anything longer (a 400-digit header parses as +Inf) as MAX_RETRY_AFTER."""
    if retry_after is None or not retry_after > 0:
        return 0.0
    return min(retry_after, MAX_RETRY_AFTER)


class Dispatcher:
    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.time,
        delivery_timeout: float = 60.0,
        poll: float = 1.0,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.metrics = metrics
        self.clock = clock
        self.delivery_timeout = delivery_timeout
        self.poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._pass_lock = asyncio.Lock()
        self._store_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outbox-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.deliver_due()
                self._store_error = None
            except StateStoreError as exc:
                # Shown in the state store's health; log each new error once, not every poll.
                if str(exc) != self._store_error:
                    log.error(f"outbox dispatch paused, state store write failed: {exc}")
                self._store_error = str(exc)
            except Exception:
                log.exception("outbox dispatch failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    async def deliver_due(self) -> int:
        """One pass over due entries; returns how many were delivered."""
        async with self._pass_lock:  # the loop and an explicit call never deliver twice
            return await self._deliver_pass()

    async def _deliver_pass(self) -> int:
        delivered = 0
        blocked: set[str] = set()
        for entry in self.store.due(self.clock()):
            if self._stopping:
                break
            if entry.notifier in blocked:
                continue  # keep per-notifier order: firing before resolved
            ok = await self._deliver(entry)
            delivered += ok
            if not ok:
                blocked.add(entry.notifier)
        return delivered

    async def _deliver(self, entry: OutboxEntry) -> bool:
        notifier = self.notifiers.get(entry.notifier)
        now = self.clock()
        if notifier is None:
            self.store.mark_dead(entry.id, now, f"notifier {entry.notifier!r} no longer configured")
            return False
        uncertain = entry.sending_since is not None
        self.store.mark_sending(entry.id, now)
        try:
            await asyncio.wait_for(notifier.deliver(entry, uncertain), self.delivery_timeout)
        except NotifyRejected as exc:
            self.store.mark_dead(entry.id, self.clock(), redact_text(exc.detail))
            self.metrics.notifications.labels(entry.notifier, "rejected").inc()
            log.error(
                f"notification rejected by {entry.notifier}: {exc.detail}",
                extra=fields(key=entry.idempotency_key),
            )
            return False
        except (NotifyRetryable, TimeoutError, Exception) as exc:
            # Anything else a notifier raises is a bug or an odd answer: retried with
            # backoff like a transient failure (and dead after MAX_ATTEMPTS), so it holds
            # back only its own notifier's queue, never the other notifiers' deliveries.
            if isinstance(exc, NotifyRetryable):
                detail = exc.detail
            elif isinstance(exc, TimeoutError):
                detail = "delivery timed out"
            else:
                log.exception(f"notifier {entry.notifier} raised unexpectedly")
                detail = f"internal error: {type(exc).__name__}: {exc}"
            detail = redact_text(detail)
            retry_after = exc.retry_after if isinstance(exc, NotifyRetryable) else None
            if entry.attempts + 1 >= MAX_ATTEMPTS:
                self.store.mark_dead(entry.id, self.clock(), f"gave up: {detail}")
                self.metrics.notifications.labels(entry.notifier, "dead").inc()
            else:
                delay = max(honoured(retry_after), backoff(entry.attempts))
                self.store.mark_retry(entry.id, self.clock() + delay, detail)
                self.metrics.notifications.labels(entry.notifier, "retry").inc()
            log.warning(
                f"notification to {entry.notifier} failed, will retry: {detail}",
                extra=fields(key=entry.idempotency_key, attempts=entry.attempts + 1),
            )
            return False
        self.store.mark_delivered(entry.id, self.clock())
        self.metrics.notifications.labels(entry.notifier, "delivered").inc()
        return True
