"""A chat runtime for probe tests, speaking the protocol of the deployment guides (seed 000:
`answer_mode`, `provider_used`; seed 004: `/health/ready`), as examples/simulator.py does:

    POST /api/chat      -> 200 {"answer": "...", "answer_mode": "llm-summary",
                                "provider_used": "spoon-policy"}
    GET  /health/ready  -> 200 {"status": "ready"}
    POST /moved         -> 302 to /login
    POST /fault?mode=   none | fallback (snippet-fallback answer) | error (500) |
                        stall (the chat answer never comes) | unready (/health/ready 503)

It records every chat request's headers and body, so tests can see the probe's marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.threaded import ThreadedServer

MODES = ("none", "fallback", "error", "stall", "unready")
HEALTHY_ANSWER = {
    "answer": "Có, nhân viên được nghỉ thứ 7 theo quy định.",
    "answer_mode": "llm-summary",
    "provider_used": "spoon-policy",
}


@dataclass
class ChatServer(ThreadedServer):
    mode: str = "none"
    stall_seconds: float = 30.0
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: asyncio.Event | None = None

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    @property
    def chat_url(self) -> str:
        return f"{self.url}/api/chat"

    @property
    def ready_url(self) -> str:
        return f"{self.url}/health/ready"

    def _released(self) -> asyncio.Event:
        if self._release is None:
            self._release = asyncio.Event()  # made in the server's own loop
        return self._release

    def stop(self) -> None:
        # Stalled answers end first, so no handler is left pending when the loop closes.
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        super().stop()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/health/ready", self._ready)
        app.router.add_post("/fault", self._fault)
        # A moved endpoint, as a proxy in front of a logged-out runtime answers.
        app.router.add_post("/moved", self._moved)
        return app

    async def _moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/login")

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        with self._lock:
            self.requests.append((dict(request.headers), body))
        if self.mode == "error":
            return web.json_response({"error": "provider chain exhausted"}, status=500)
        if self.mode == "stall":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released().wait(), self.stall_seconds)
        if self.mode == "fallback":
            return web.json_response(
                {**HEALTHY_ANSWER, "answer_mode": "snippet-fallback", "provider_used": "none"}
            )
        return web.json_response(HEALTHY_ANSWER)

    async def _ready(self, request: web.Request) -> web.Response:
        if self.mode == "unready":
            return web.json_response(
                {"status": "unhealthy", "checks": {"database": {"status": "unhealthy"}}},
                status=503,
            )
        return web.json_response({"status": "ready"})

    async def _fault(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "none")
        if mode not in MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {', '.join(MODES)}")
        self.mode = mode
        return web.json_response({"mode": mode})
