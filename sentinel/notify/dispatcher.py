"""Delivers the outbox: oldest first, per notifier in order, with backoff and a bound.

Runs as one background task per notifier, woken after every cycle (and every `poll`
seconds); each delivery has a timeout; a stop request ends each worker after its current
entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

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
    """One worker per notifier, each delivering its own entries in order: a slow or
    rate-limited notifier (Slack posts about one message a second per channel) holds
    back only its own queue. With one queue for all, a rollback webhook waited behind
    every Slack message queued before it: ~25 min behind 1,500 services breaching at
    once. A further worker marks the entries of notifiers no longer configured dead."""

    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.time,
        delivery_timeout: float = 60.0,
        poll: float = 1.0,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]] | None = None,
    ) -> None:
        self.store = store
        # The daemon's task supervisor. A worker catches what its passes raise, so it
        # ends only when cancelled; should anything else end it, the supervisor logs it,
        # counts it in sentinel_background_task_failures_total and shows it in
        # /health/detailed (the next wake restarts it).
        self.spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        self.notifiers = notifiers
        self.metrics = metrics
        self.clock = clock
        self.delivery_timeout = delivery_timeout
        self.poll = poll
        # Per worker (a notifier's name; None: the notifiers no longer configured).
        self._wakes: dict[str | None, asyncio.Event] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}
        self._tasks: dict[str | None, asyncio.Task[None]] = {}
        self._started = False
        self._stopping = False
        self._store_errors: dict[str | None, str | None] = {}
        # The sends in flight (by entry id): the notifier each goes through, and when it ends.
        self._in_flight: dict[int, tuple[Notifier, asyncio.Event]] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def _workers(self) -> list[str | None]:
        return [*self.notifiers, None]

    def start(self) -> None:
        self._started = True
        self._staff()

    def _staff(self) -> None:
        """A worker for every notifier configured now: a reload swaps the notifiers in
        place, and the worker of one it removed ends (its entries are then marked dead by
        the unconfigured worker)."""
        if not self._started or self._stopping:
            return
        for name in self._workers():
            task = self._tasks.get(name)
            if task is None or task.done():
                label = "unconfigured" if name is None else name
                task = self.spawn(self._loop(name), f"outbox-dispatcher:{label}")
                self._tasks[name] = task

    def wake(self) -> None:
        self._staff()
        for name in self._workers():
            self._wake(name).set()

    def _wake(self, name: str | None) -> asyncio.Event:
        return self._wakes.setdefault(name, asyncio.Event())

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        self.wake()
        if self._tasks:
            # Each worker ends after its current delivery; one still busy at the grace's
            # end is cancelled (its entry stays `sending` and is retried as uncertain).
            _, late = await asyncio.wait(self._tasks.values(), timeout=grace)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # No send is in flight now: the notifiers a reload replaced close at once (a
        # chart upload still running is cancelled at the grace's end, as at any stop).
        if self._retiring:
            _, late = await asyncio.wait(set(self._retiring), timeout=grace)
            for task in late:
                task.cancel()
            if late:  # cancelled, each closes its notifiers at once
                await asyncio.wait(late, timeout=1.0)

    def retire(self, old: Iterable[Notifier]) -> None:
        """Close the notifiers a reload replaced or removed once the sends in flight
        through them have ended (each is bounded by the delivery timeout), and a Slack
        notifier's chart uploads too. Closed at once, the send in progress failed:
        retried as uncertain (a webhook then relies on its receiver honouring
        Idempotency-Key), or marked dead as no longer configured although it may have
        arrived; and the charts being uploaded were cancelled. The reload does not wait."""
        task = self.spawn(self._close_after_sends(list(old)), "retire-notifiers")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_after_sends(self, old: list[Notifier]) -> None:
        sends = [done for via, done in self._in_flight.values() if any(via is n for n in old)]
        waits = [asyncio.ensure_future(done.wait()) for done in sends]
        try:
            if waits:
                await asyncio.wait(waits, timeout=self.delivery_timeout + 1.0)
            for notifier in old:
                # Optional (SlackNotifier): its chart uploads run after the delivery.
                charts: Callable[[], Awaitable[None]] | None = getattr(
                    notifier, "charts_done", None
                )
                if charts is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(charts(), self.delivery_timeout)
        finally:
            for wait in waits:
                wait.cancel()
            for notifier in old:
                try:
                    await notifier.close()
                except Exception:  # a failed close leaks a session, not a notification
                    log.exception(f"closing the replaced notifier {notifier.name} failed")

    async def _loop(self, name: str | None) -> None:
        wake = self._wake(name)
        while not self._stopping and (name is None or name in self.notifiers):
            if name is None:
                self._staff()  # each poll: notifiers a reload added get their worker
            try:
                await self._pass(name)
                self._store_errors[name] = None
            except StateStoreError as exc:
                # Shown in the state store's health; log each new error once, not every poll.
                if str(exc) != self._store_errors.get(name):
                    log.error(f"outbox dispatch paused, state store write failed: {exc}")
                self._store_errors[name] = str(exc)
            except Exception:
                log.exception("outbox dispatch failed; retrying")
            # Entries of removed notifiers are rare: their worker polls less (each poll is
            # a store round trip; on PostgreSQL a transaction), and a cycle wakes it.
            poll = self.poll if name is not None else self.poll * 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll)
            wake.clear()

    async def deliver_due(self) -> int:
        """One pass of every worker, side by side; returns how many were delivered."""
        # Every pass runs to its end before this returns, even when one fails.
        outcomes = await asyncio.gather(
            *(self._pass(name) for name in self._workers()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(o for o in outcomes if isinstance(o, int))

    async def _pass(self, name: str | None) -> int:
        """Deliver `name`'s due entries oldest first, up to the first that fails (firing
        before resolved: a later entry of a service never overtakes an earlier one, nor,
        through `store.due`, one that waits for its retry or that an old leader still
        holds across a leader change); with None, mark the entries of notifiers no
        longer configured dead."""
        # The loop and an explicit call never deliver the same notifier's entries at once.
        async with self._locks.setdefault(name, asyncio.Lock()):
            now = self.clock()
            if name is None:
                # Not those a worker is still busy with: a reload may have removed its
                # notifier while it delivers (it finishes with the notifier it holds).
                busy = {n for n, lock in self._locks.items() if n is not None and lock.locked()}
                for entry in self.store.due(now, except_notifiers=[*self.notifiers, *busy]):
                    self._unconfigured(entry)
                return 0
            delivered = 0
            for entry in self.store.due(now, notifier=name):
                if self._stopping:
                    break
                if not await self._deliver(entry):
                    break
                delivered += 1
            return delivered

    def _unconfigured(self, entry: OutboxEntry) -> None:
        self.store.mark_dead(
            entry.id, self.clock(), f"notifier {entry.notifier!r} no longer configured"
        )

    async def _send(self, notifier: Notifier, entry: OutboxEntry, uncertain: bool) -> None:
        done = asyncio.Event()
        self._in_flight[entry.id] = (notifier, done)
        try:
            await asyncio.wait_for(notifier.deliver(entry, uncertain), self.delivery_timeout)
        finally:
            del self._in_flight[entry.id]
            done.set()

    async def _deliver(self, entry: OutboxEntry) -> bool:
        notifier = self.notifiers.get(entry.notifier)
        now = self.clock()
        if notifier is None:  # a reload removed it between this pass's query and now
            self._unconfigured(entry)
            return False
        uncertain = entry.sending_since is not None
        # No await from the lookup to the send's registration (in `_send`): a reload's
        # `retire` sees every send through the notifier it swapped out.
        self.store.mark_sending(entry.id, now)
        try:
            await self._send(notifier, entry, uncertain)
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
