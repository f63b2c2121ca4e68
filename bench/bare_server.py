"""The floor for the gate benchmark: a bare aiohttp endpoint answering a gate-sized JSON.

It measures its own event-loop lag the way the daemon does (sleep a 10 ms tick, record the
overshoot): `GET /lag` returns the p99 and maximum since the previous `GET /lag`, so the
benchmark can print how late a loop that does nothing but answer ran on the same loaded
machine, next to the daemon's.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

BODY = {
    "decision": "pass",
    "service": "chatbot-backend",
    "window": {"from": "2026-11-20T12:20:00Z", "to": "2026-11-20T12:40:00Z"},
    "reasons": [],
    "slos": [{"slo": f"slo-{i}", "status": "ok", "value": 0.1, "threshold": 1.5} for i in range(5)],
}
TICK = 0.01
LAGS = web.AppKey("lags", list)


async def handle(request: web.Request) -> web.Response:
    return web.json_response(BODY)


async def lag(request: web.Request) -> web.Response:
    lags = sorted(request.app[LAGS])
    request.app[LAGS].clear()
    if not lags:
        return web.json_response({"ticks": 0, "p99": 0.0, "max": 0.0})
    p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
    return web.json_response({"ticks": len(lags), "p99": p99, "max": lags[-1]})


async def probe(app: web.Application) -> None:
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + TICK
        await asyncio.sleep(TICK)
        app[LAGS].append(max(0.0, loop.time() - asked))


async def start_probe(app: web.Application):  # type: ignore[no-untyped-def]
    task = asyncio.get_running_loop().create_task(probe(app))
    yield
    task.cancel()


if __name__ == "__main__":
    app = web.Application()
    app[LAGS] = []
    app.router.add_get("/api/v1/gate", handle)
    app.router.add_get("/lag", lag)
    app.cleanup_ctx.append(start_probe)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
