"""The floor for the gate benchmark: a bare aiohttp endpoint answering a gate-sized JSON."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = {
    "decision": "pass",
    "service": "chatbot-backend",
    "window": {"from": "2026-11-20T12:20:00Z", "to": "2026-11-20T12:40:00Z"},
    "reasons": [],
    "slos": [{"slo": f"slo-{i}", "status": "ok", "value": 0.1, "threshold": 1.5} for i in range(5)],
}


async def handle(request: web.Request) -> web.Response:
    return web.json_response(BODY)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/api/v1/gate", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
