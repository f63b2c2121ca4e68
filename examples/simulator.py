"""A simulated chatbot runtime: serves the runtime's Prometheus metrics and writes its
JSON answer logs, with switchable faults. Used by the demo and the end-to-end tests.

    python examples/simulator.py --port 9105 [--schedule] [--log-file answers.jsonl]
    curl -X POST 'http://127.0.0.1:9105/fault?mode=latency'   # none|latency|5xx|fallback|idle

Metrics (labels namespace/service/env): http_requests_total{method,status},
http_request_duration_seconds, chatbot_response_latency_seconds,
chatbot_answers_total{answer_mode,provider_used}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

BASE = {"namespace": "chatbot", "service": "chatbot-backend", "env": "prod"}
BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)
MODES = ("none", "latency", "5xx", "fallback", "idle")
# The demo's fault schedule: (mode, seconds).
SCHEDULE = (
    ("none", 60),
    ("latency", 75),
    ("none", 45),
    ("5xx", 75),
    ("none", 45),
    ("fallback", 90),
)


class Simulator:
    def __init__(
        self, rate: float = 20.0, log_file: TextIO | None = None, loki_url: str | None = None
    ) -> None:
        self.rate = rate
        self.loki_url = loki_url
        self.pending_lines: list[list[str]] = []
        self.carry = 0.0
        self.mode = "none"
        self.log_file = log_file
        self.registry = CollectorRegistry()
        labels = list(BASE)
        self.requests = Counter(
            "http_requests", "HTTP requests.", [*labels, "method", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "HTTP latency.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.chat_latency = Histogram(
            "chatbot_response_latency_seconds",
            "Chat answer latency.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "chatbot_answers",
            "Answers by mode.",
            [*labels, "answer_mode", "provider_used"],
            registry=self.registry,
        )
        self.rng = random.Random(42)

    def one_request(self) -> None:
        slow = self.mode == "latency"
        latency = self.rng.uniform(1.6, 3.0) if slow else self.rng.uniform(0.2, 1.1)
        failed = self.mode == "5xx" and self.rng.random() < 0.2
        fallback = (self.mode == "fallback" and self.rng.random() < 0.5) or self.rng.random() < 0.01
        status = "500" if failed else "200"
        self.requests.labels(*BASE.values(), "POST", status).inc()
        self.http_latency.labels(*BASE.values()).observe(latency)
        if failed:
            self.log({"level": "error", "message": "Internal server error: LLM gateway 502"})
            return
        self.chat_latency.labels(*BASE.values()).observe(latency)
        mode = "snippet-fallback" if fallback else "llm-summary"
        provider = "none" if fallback else self.rng.choice(("spoon-policy", "spoon-ops"))
        self.answers.labels(*BASE.values(), mode, provider).inc()
        self.log(
            {
                "level": "warning" if fallback else "info",
                "message": "Chat message processed",
                "answer_mode": mode,
                "provider_used": provider,
                "latency_ms": round(latency * 1000),
            }
        )

    def log(self, fields: dict[str, Any]) -> None:
        if self.log_file is None and not self.loki_url:
            return
        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": f"req-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}",
            "namespace": "chatbot",
            **fields,
        }
        text = json.dumps(line)
        if self.log_file is not None:
            self.log_file.write(text + "\n")
        if self.loki_url:
            self.pending_lines.append([str(time.time_ns()), text])

    async def push_logs(self, session: Any) -> None:
        """Ship buffered answer logs to Loki's push API (JSON form)."""
        if not self.loki_url or not self.pending_lines:
            return
        lines, self.pending_lines = self.pending_lines, []
        body = {
            "streams": [
                {
                    "stream": {"app": "chatbot-backend", "namespace": "chatbot", "env": "prod"},
                    "values": lines,
                }
            ]
        }
        try:
            async with session.post(f"{self.loki_url}/loki/api/v1/push", json=body) as resp:
                await resp.read()
        except Exception as exc:  # the runtime must not die because Loki is down
            print(f"simulator: loki push failed: {exc}", flush=True)

    async def traffic(self) -> None:
        tick = 0.25
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(tick)
                self.generate(tick)
                await self.push_logs(session)

    def generate(self, seconds: float) -> None:
        if self.mode == "idle":
            return
        self.carry += self.rate * seconds
        while self.carry >= 1:
            self.carry -= 1
            self.one_request()
        if self.log_file is not None:
            self.log_file.flush()

    async def run_schedule(self) -> None:
        while True:
            for mode, seconds in SCHEDULE:
                self.mode = mode
                print(f"simulator: fault mode -> {mode} for {seconds}s", flush=True)
                await asyncio.sleep(seconds)


def build_app(sim: Simulator) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(sim.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def fault(request: web.Request) -> web.Response:
        mode = request.query.get("mode", "none")
        if mode not in MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {', '.join(MODES)}")
        sim.mode = mode
        return web.json_response({"mode": mode})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.post("/fault", fault)])
    return app


async def serve(
    port: int, rate: float, schedule: bool, log_file: TextIO | None, loki_url: str | None = None
) -> None:
    sim = Simulator(rate, log_file, loki_url)
    runner = web.AppRunner(build_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"simulator: serving metrics on http://127.0.0.1:{port}/metrics", flush=True)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(sim.traffic())]
    if schedule:
        tasks.append(asyncio.create_task(sim.run_schedule()))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9105)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--schedule", action="store_true", help="cycle through the demo faults")
    parser.add_argument("--log-file", help="append JSON answer logs here")
    parser.add_argument("--loki-url", help="push JSON answer logs to this Loki")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        log_file = (
            stack.enter_context(Path(args.log_file).open("a", encoding="utf-8"))
            if args.log_file
            else None
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.rate, args.schedule, log_file, args.loki_url))


if __name__ == "__main__":
    main()
