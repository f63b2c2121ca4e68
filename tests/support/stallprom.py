"""A Prometheus query endpoint that answers an empty vector, after a delay, or only once
released: for tests of what slow or stalled sources do to the gate and the cycles.

It runs on the test's own event loop (aiohttp TestServer over loopback): the handlers
it holds are cancelled when it closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer

EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


class StallingPrometheus:
    def __init__(self, stall: Callable[[str], bool] = lambda q: False, delay: float = 0.0):
        self.stall = stall
        self.delay = delay
        self.queries: list[str] = []
        self.answered: list[str] = []
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/")).rstrip("/")

    async def query(self, request: web.Request) -> web.Response:
        form = await request.post()
        query = str(form.get("query") or request.query.get("query", ""))
        self.queries.append(query)
        if self.stall(query):
            await self.release.wait()
        elif self.delay:
            await asyncio.sleep(self.delay)
        self.answered.append(query)
        return web.json_response(EMPTY)


@asynccontextmanager
async def stalling_prometheus(
    stall: Callable[[str], bool] = lambda q: False, delay: float = 0.0
) -> AsyncIterator[StallingPrometheus]:
    fake = StallingPrometheus(stall, delay)
    app = web.Application()
    app.router.add_route("*", "/api/v1/query", fake.query)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        fake.release.set()
        await fake.server.close()
