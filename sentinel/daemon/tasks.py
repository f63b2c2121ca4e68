"""Background tasks the daemon owns (reloads, evaluation cycles).

Every task is kept referenced until it ends, and its failure is observed: logged with its
traceback, counted, and kept for `/health/detailed`. Nothing ends as "Task exception was
never retrieved" in a log nobody reads while the daemon keeps saying it is fine.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sentinel.logs import fields

log = logging.getLogger("sentinel.tasks")

T = TypeVar("T")

# A failed background task keeps its health check unhealthy this long: long enough to be
# seen by whoever looks after an incident, without degrading health until a restart.
# Alert on `increase(sentinel_background_task_failures_total[1h]) > 0` for a page.
RECENT_SECONDS = 3600.0


@dataclass(frozen=True)
class TaskFailure:
    task: str
    error: str
    at: float

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "error": self.error, "at": self.at}


class TaskSupervisor:
    """Spawns tasks, holds them until done, records how the failed ones failed."""

    def __init__(
        self,
        clock: Callable[[], float],
        on_failure: Callable[[str], None] | None = None,
        keep: int = 20,
    ) -> None:
        self.clock = clock
        self.on_failure = on_failure
        self.failures: deque[TaskFailure] = deque(maxlen=keep)
        self.failures_total = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    @property
    def running(self) -> set[asyncio.Task[Any]]:
        return {t for t in self._tasks if not t.done()}

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved
        if exc is None:
            return
        name = task.get_name()
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            f"background task {name} failed: {error}",
            exc_info=exc,
            extra=fields(task=name, error=error),
        )
        self.failures.append(TaskFailure(name, error, self.clock()))
        self.failures_total += 1
        if self.on_failure is not None:
            self.on_failure(name)

    def health(self) -> dict[str, Any]:
        """The `background_tasks` check of `/health/detailed`."""
        last = self.failures[-1] if self.failures else None
        recent = last is not None and self.clock() - last.at < RECENT_SECONDS
        return {
            "status": "unhealthy" if recent else "healthy",
            "running": len(self.running),
            "failures_total": self.failures_total,
            "last_failure": last.as_json() if last else None,
        }


async def wait_done(
    tasks: set[asyncio.Task[Any]], grace: float, force: asyncio.Event
) -> set[asyncio.Task[Any]]:
    """Wait until the tasks are done, `grace` seconds passed or `force` is set; return
    the tasks still running (the caller decides what to do with them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    forced = asyncio.ensure_future(force.wait())
    pending = {t for t in tasks if not t.done()}
    try:
        while pending and not force.is_set() and (left := deadline - loop.time()) > 0:
            await asyncio.wait({*pending, forced}, timeout=left, return_when=FIRST_COMPLETED)
            pending = {t for t in pending if not t.done()}
    finally:
        forced.cancel()
    return pending
