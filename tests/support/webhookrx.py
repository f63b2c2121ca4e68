"""A rollback-webhook receiver for tests: verifies the HMAC signature and timestamp,
records every delivery, and can answer 5xx / 429 / 4xx on demand."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.threaded import ThreadedServer

SECRET = "webhook-test-secret"


@dataclass
class Delivery:
    body: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool


@dataclass
class WebhookReceiver(ThreadedServer):
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    planned: list[int] = field(default_factory=list)
    retry_after: str = "1"  # what a 429 answers in Retry-After
    answer_after: float = 0.0  # seconds between reading a delivery and answering it
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/rollback", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        with self._lock:
            self.attempts += 1
            status = self.planned.pop(0) if self.planned else 200
        if status != 200:
            headers = {"Retry-After": self.retry_after} if status == 429 else {}
            return web.Response(status=status, text="try later", headers=headers)
        stamp = request.headers.get("X-Sentinel-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        )
        ok = hmac.compare_digest(expected, request.headers.get("X-Sentinel-Signature", ""))
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
        with self._lock:
            self.deliveries.append(Delivery(json.loads(raw), dict(request.headers), ok and fresh))
        await asyncio.sleep(self.answer_after)
        if not (ok and fresh):
            return web.json_response({"error": "bad signature"}, status=401)
        return web.json_response({"accepted": True}, status=202)
