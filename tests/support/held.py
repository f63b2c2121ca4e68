"""A function held in whichever thread calls it until the test lets it go: the way the
tests show that work runs off the event loop (a health check answered while it is held;
on the loop, the loop itself would be held and the check could not even be sent)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Held:
    """Wraps `real`: its first call (every call with `every=True`) waits for `release()`
    before calling through; `released` says, per held call, whether it was let go (False:
    it gave up after `limit` seconds)."""

    def __init__(self, real: Callable[..., Any], every: bool = False, limit: float = 20) -> None:
        self.real, self.every, self.limit = real, every, limit
        self.started, self.gate = threading.Event(), threading.Event()
        self.released: list[bool] = []
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.every or not self.started.is_set():
            self.started.set()
            self.released.append(self.gate.wait(self.limit))
        return self.real(*args, **kwargs)

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, self.limit), "never called"

    def release(self) -> None:
        self.gate.set()
