"""A proxy in front of a real Prometheus that holds every instant query for `delay`
seconds before forwarding it: a slow Prometheus, for shutdown and overrun tests."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web

from support.threaded import ThreadedServer


class SlowPrometheus(ThreadedServer):
    def __init__(self, upstream: str, delay: float) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        # time.monotonic() of every instant query received (appended from the server thread).
        self.queries: list[float] = []
        self._release: asyncio.Event | None = None

    def app(self) -> web.Application:
        self._release = asyncio.Event()  # built on the server's loop
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/api/v1/query":
            self.queries.append(time.monotonic())
            assert self._release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.delay)
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{self.upstream}{request.path_qs}",
                data=body,
                headers={k: v for k, v in headers.items() if v},
            ) as upstream,
        ):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                content_type=upstream.content_type,
            )

    def stop(self) -> None:
        if self._release is not None:  # let held queries end before the loop stops
            self._loop.call_soon_threadsafe(self._release.set)
        super().stop()
