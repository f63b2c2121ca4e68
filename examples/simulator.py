"""A simulated chatbot runtime: serves the runtime's Prometheus metrics and chat API and
writes its JSON answer logs, with switchable faults. Used by the demo and the end-to-end
tests.

    python examples/simulator.py --port 9105 [--schedule] [--log-file answers.jsonl]
    curl -X POST 'http://127.0.0.1:9105/fault?mode=latency'   # one of MODES below
    curl -X POST 'http://127.0.0.1:9105/fault?mode=stall&seconds=5'

Endpoints (as the deployment guides deploy them):
    GET  /metrics          the backend: http_requests_total{method,status},
                           http_request_duration_seconds, chatbot_response_latency_seconds,
                           chatbot_answers_total{answer_mode,provider_used,finish_reason},
                           chatbot_feedback_total{rating}, chatbot_db_pool_* (seed 002), and
                           OpenTelemetry's GenAI histograms:
                           gen_ai_server_time_to_first_token_seconds,
                           gen_ai_server_time_per_output_token_seconds,
                           gen_ai_client_token_usage (gen_ai_token_type input|output)
    GET  /gateway/metrics  the gateway in front: http_requests_total,
                           http_request_duration_seconds
    GET  /infra/metrics    cAdvisor and kube-state-metrics for both containers:
                           container_cpu_usage_seconds_total,
                           container_memory_working_set_bytes,
                           kube_pod_container_resource_limits
    POST /api/chat[/{conversation_id}]  -> {"answer", "answer_mode", "provider_used"} (seed 000)
    GET  /health, /health/live, /health/ready (seed 004)
Every series carries namespace/service/env labels; requests marked X-Sentinel-Probe (the
synthetic probe) are answered but left out of the metrics, as a runtime should.

Faults (one at a time; `none` is healthy):
    latency      slow answers (chat P95 ~2.5 s)       5xx          20 % of requests fail
    fallback     snippet-fallback answers             idle         no traffic
    error        every request fails (chat API 500)   stall        the chat API hangs
    unready      /health/ready answers 503            down         the backend is down
    gateway-down the gateway is down                  4xx          rate limits, bad requests
    failover     answers from spoon-ops               refusal      the guardrail blocks
    thumbs-down  users rate answers down              tokens       prompts bloat
    llm-slow     slow first and further tokens        db           the DB pool is exhausted
    cpu          CPU at its limit                     memory       memory near its limit
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
    Gauge,
    Histogram,
    generate_latest,
)

NAMESPACE, ENV = "chatbot", "prod"
BACKEND, GATEWAY = "chatbot-backend", "chatbot-gateway"
BASE = {"namespace": NAMESPACE, "service": BACKEND, "env": ENV}
GATEWAY_BASE = {"namespace": NAMESPACE, "service": GATEWAY, "env": ENV}
BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)
# OpenTelemetry's recommended boundaries for the GenAI histograms.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
TTFT_BUCKETS += (7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
# The providers of SPOON_LLM_PROVIDER_CHAIN: (gen_ai_provider_name, gen_ai_request_model).
PROVIDERS = {
    "spoon-policy": ("gcp.gemini", "gemini-2.0-flash"),
    "spoon-ops": ("openai", "gpt-4o-mini"),
}
# (pod, container, CPU cores, memory bytes) of the two containers (seed 003's limits).
PODS = (
    (f"{BACKEND}-sim", BACKEND, 0.5, 1024**3),
    (f"{GATEWAY}-sim", GATEWAY, 0.25, 256 * 1024**2),
)
MODES = (
    "none", "latency", "5xx", "fallback", "idle", "error", "stall", "unready", "down",
    "gateway-down", "4xx", "failover", "refusal", "thumbs-down", "tokens", "llm-slow",
    "db", "cpu", "memory",
)  # fmt: skip
# The demo's fault schedule: (mode, seconds). Each fault lasts long enough for its SLO's
# window to breach (the 30-minute resource targets need a fault set by hand for longer).
SCHEDULE = (
    ("none", 60), ("latency", 75), ("none", 45), ("5xx", 75), ("none", 45),
    ("fallback", 90), ("none", 45), ("failover", 90), ("none", 45), ("refusal", 90),
    ("none", 45), ("llm-slow", 75), ("none", 45), ("tokens", 90), ("none", 45),
    ("thumbs-down", 180), ("none", 45), ("4xx", 150), ("none", 45), ("db", 300),
    ("none", 45), ("cpu", 300), ("none", 45), ("memory", 300), ("none", 45),
    ("down", 75), ("none", 45), ("gateway-down", 75), ("none", 45), ("unready", 60),
    ("none", 45), ("stall", 60), ("none", 45), ("error", 60),
)  # fmt: skip
HEALTHY_ANSWER = "Có, nhân viên được nghỉ thứ 7 theo quy định."
SNIPPET_ANSWER = "Trích đoạn: 'Thời gian làm việc từ thứ 2 đến thứ 7 ...'"
PROBE_HEADER = "X-Sentinel-Probe"


class Metrics:
    """The runtime's three scrape targets, each its own registry."""

    def __init__(self) -> None:
        self.backend, self.gateway, self.infra = (CollectorRegistry() for _ in range(3))
        labels = list(BASE)
        http = [*labels, "method", "status"]
        self.requests = Counter("http_requests", "HTTP requests.", http, registry=self.backend)
        self.http_latency = self._histogram("http_request_duration_seconds", labels, BUCKETS)
        self.chat_latency = self._histogram("chatbot_response_latency_seconds", labels, BUCKETS)
        self.answers = Counter(
            "chatbot_answers",
            "Answers by mode, provider and finish reason.",
            [*labels, "answer_mode", "provider_used", "finish_reason"],
            registry=self.backend,
        )
        self.feedback = Counter(
            "chatbot_feedback", "User ratings.", [*labels, "rating"], registry=self.backend
        )
        self.pool_available = Gauge(
            "chatbot_db_pool_available_connections",
            "Free DB connections.",
            labels,
            registry=self.backend,
        )
        self.pool_waiting = Gauge(
            "chatbot_db_pool_waiting_requests",
            "Requests waiting for a DB connection.",
            labels,
            registry=self.backend,
        )
        # OpenTelemetry GenAI semantic conventions, as a Prometheus exporter names them.
        genai = [*labels, "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.ttft = self._histogram(
            "gen_ai_server_time_to_first_token_seconds", genai, TTFT_BUCKETS
        )
        self.tpot = self._histogram(
            "gen_ai_server_time_per_output_token_seconds", genai, TPOT_BUCKETS
        )
        self.tokens = self._histogram(
            "gen_ai_client_token_usage", [*genai, "gen_ai_token_type"], TOKEN_BUCKETS
        )
        self.gw_requests = Counter("http_requests", "HTTP requests.", http, registry=self.gateway)
        self.gw_latency = self._histogram(
            "http_request_duration_seconds", labels, BUCKETS, self.gateway
        )
        pod = ["namespace", "pod", "container"]
        self.cpu = Counter("container_cpu_usage_seconds", "CPU time.", pod, registry=self.infra)
        self.memory = Gauge(
            "container_memory_working_set_bytes", "Working set.", pod, registry=self.infra
        )
        limits = Gauge(
            "kube_pod_container_resource_limits",
            "Container limits.",
            [*pod, "resource", "unit"],
            registry=self.infra,
        )
        for name, container, cores, memory in PODS:
            limits.labels(NAMESPACE, name, container, "cpu", "core").set(cores)
            limits.labels(NAMESPACE, name, container, "memory", "byte").set(memory)

    def _histogram(
        self,
        name: str,
        labels: list[str],
        buckets: tuple[float, ...],
        registry: CollectorRegistry | None = None,
    ) -> Histogram:
        target = self.backend if registry is None else registry
        return Histogram(name, name.replace("_", " "), labels, buckets=buckets, registry=target)


class Simulator:
    def __init__(
        self, rate: float = 20.0, log_file: TextIO | None = None, loki_url: str | None = None
    ) -> None:
        self.rate = rate
        self.loki_url = loki_url
        self.pending_lines: list[list[str]] = []
        self.carry = 0.0
        self.mode = "none"
        self.stall_seconds = 30.0
        self.log_file = log_file
        self.metrics = Metrics()
        self.rng = random.Random(42)

    # --- traffic ---------------------------------------------------------------------

    def one_request(self) -> None:
        m, mode = self.metrics, self.mode
        if mode in ("down", "gateway-down"):
            if mode == "down":  # the gateway answers, the backend behind it does not
                self._gateway("503", self.rng.uniform(0.001, 0.01))
            return
        if mode == "4xx" and self.rng.random() < 0.4:
            self._gateway("429", self.rng.uniform(0.001, 0.005))  # rate-limited at the gateway
            return
        if mode == "4xx" and self.rng.random() < 0.3:  # the backend rejects the request
            latency = self.rng.uniform(0.01, 0.05)
            m.requests.labels(*BASE.values(), "POST", "400").inc()
            m.http_latency.labels(*BASE.values()).observe(latency)
            self._gateway("400", latency + 0.005)
            return
        latency = self._latency()
        failed = mode == "error" or (mode == "5xx" and self.rng.random() < 0.2)
        status = "500" if failed else "200"
        m.requests.labels(*BASE.values(), "POST", status).inc()
        m.http_latency.labels(*BASE.values()).observe(latency)
        timeout = mode == "5xx" and self.rng.random() < 0.02
        self._gateway("504" if timeout else "502" if failed else "200", latency + 0.005)
        if failed:
            self.log({"level": "error", "message": "Internal server error: LLM gateway 502"})
            return
        m.chat_latency.labels(*BASE.values()).observe(latency)
        answer_mode, provider, finish = self.answer()
        m.answers.labels(*BASE.values(), answer_mode, provider, finish).inc()
        if provider in PROVIDERS:
            self._llm_call(provider)
        self._feedback(answer_mode)
        self.log(
            {
                "level": "warning" if answer_mode == "snippet-fallback" else "info",
                "message": "Chat message processed",
                "answer_mode": answer_mode,
                "provider_used": provider,
                "finish_reason": finish,
                "latency_ms": round(latency * 1000),
            }
        )

    def _latency(self) -> float:
        if self.mode == "stall":
            return self.rng.uniform(5.0, 10.0)
        if self.mode in ("latency", "llm-slow"):
            return self.rng.uniform(1.6, 3.0)
        return self.rng.uniform(0.2, 1.1)

    def answer(self) -> tuple[str, str, str]:
        """(answer_mode, provider_used, finish_reason) of one answer under the fault."""
        mode, rng = self.mode, self.rng
        if (mode == "fallback" and rng.random() < 0.5) or rng.random() < 0.01:
            return "snippet-fallback", "none", "error"
        failover = (mode == "failover" and rng.random() < 0.8) or rng.random() < 0.02
        provider = "spoon-ops" if failover else "spoon-policy"
        refused = (mode == "refusal" and rng.random() < 0.6) or rng.random() < 0.01
        return "llm-summary", provider, "content_filter" if refused else "stop"

    def _llm_call(self, provider: str) -> None:
        m, rng = self.metrics, self.rng
        labels = (*BASE.values(), "chat", *PROVIDERS[provider])
        slow = self.mode == "llm-slow"
        m.ttft.labels(*labels).observe(rng.uniform(1.2, 4.0) if slow else rng.uniform(0.15, 0.8))
        m.tpot.labels(*labels).observe(rng.uniform(0.12, 0.3) if slow else rng.uniform(0.01, 0.06))
        prompt = rng.randint(40_000, 50_000) if self.mode == "tokens" else rng.randint(1_200, 1_800)
        m.tokens.labels(*labels, "input").observe(prompt)
        m.tokens.labels(*labels, "output").observe(rng.randint(200, 400))

    def _feedback(self, answer_mode: str) -> None:
        if self.rng.random() >= 0.05:  # one answer in twenty is rated
            return
        down = 0.08  # users rate a good answer down now and then
        if self.mode == "thumbs-down":
            down = 0.9
        elif answer_mode == "snippet-fallback":
            down = 0.5
        rating = "thumbs_down" if self.rng.random() < down else "thumbs_up"
        self.metrics.feedback.labels(*BASE.values(), rating).inc()

    def _gateway(self, status: str, latency: float) -> None:
        self.metrics.gw_requests.labels(*GATEWAY_BASE.values(), "POST", status).inc()
        self.metrics.gw_latency.labels(*GATEWAY_BASE.values()).observe(latency)

    def tick(self, seconds: float) -> None:
        """Gauges and CPU time of the last `seconds`."""
        m, rng = self.metrics, self.rng
        exhausted = self.mode == "db"
        m.pool_available.labels(*BASE.values()).set(0 if exhausted else rng.randint(12, 18))
        m.pool_waiting.labels(*BASE.values()).set(rng.randint(10, 14) if exhausted else 0)
        for name, container, cores, memory in PODS:
            cpu = rng.uniform(0.93, 0.98) if self.mode == "cpu" else rng.uniform(0.35, 0.55)
            m.cpu.labels(NAMESPACE, name, container).inc(cores * seconds * cpu)
            used = rng.uniform(0.9, 0.95) if self.mode == "memory" else rng.uniform(0.5, 0.6)
            m.memory.labels(NAMESPACE, name, container).set(round(memory * used))

    def generate(self, seconds: float) -> None:
        self.tick(seconds)
        if self.mode == "idle":
            return
        self.carry += self.rate * seconds
        while self.carry >= 1:
            self.carry -= 1
            self.one_request()
        if self.log_file is not None:
            self.log_file.flush()

    # --- logs ------------------------------------------------------------------------

    def log(self, fields: dict[str, Any]) -> None:
        if self.log_file is None and not self.loki_url:
            return
        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": f"req-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}",
            "namespace": NAMESPACE,
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
        stream = {"app": BACKEND, "namespace": NAMESPACE, "env": ENV}
        body = {"streams": [{"stream": stream, "values": lines}]}
        try:
            async with session.post(f"{self.loki_url}/loki/api/v1/push", json=body) as resp:
                await resp.read()
        except Exception as exc:  # the runtime must not die because Loki is down
            print(f"simulator: loki push failed: {exc}", flush=True)

    # --- schedules ---------------------------------------------------------------------

    async def traffic(self) -> None:
        tick = 0.25
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(tick)
                self.generate(tick)
                await self.push_logs(session)

    async def run_schedule(self) -> None:
        while True:
            for mode, seconds in SCHEDULE:
                self.mode = mode
                print(f"simulator: fault mode -> {mode} for {seconds}s", flush=True)
                await asyncio.sleep(seconds)


def build_app(sim: Simulator) -> web.Application:
    def scrape(registry: CollectorRegistry, down_in: tuple[str, ...]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if sim.mode in down_in:  # a failed scrape: Prometheus records up == 0
                raise web.HTTPServiceUnavailable(text="down")
            body = generate_latest(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return handler

    async def chat(request: web.Request) -> web.Response:
        if sim.mode in ("down", "gateway-down"):
            raise web.HTTPServiceUnavailable(text="upstream unavailable")
        if sim.mode == "error":
            return web.json_response({"error": "provider chain exhausted"}, status=500)
        if sim.mode == "stall":
            await asyncio.sleep(sim.stall_seconds)
        answer_mode, provider, finish = sim.answer()
        if sim.mode == "fallback":  # the probe's question always falls back
            answer_mode, provider, finish = "snippet-fallback", "none", "error"
        if PROBE_HEADER not in request.headers:
            labels = (*BASE.values(), answer_mode, provider, finish)
            sim.metrics.answers.labels(*labels).inc()
        text = SNIPPET_ANSWER if answer_mode == "snippet-fallback" else HEALTHY_ANSWER
        return web.json_response(
            {"answer": text, "answer_mode": answer_mode, "provider_used": provider}
        )

    async def live(request: web.Request) -> web.Response:
        if sim.mode in ("down", "gateway-down"):
            raise web.HTTPServiceUnavailable(text="down")
        return web.json_response({"status": "healthy"})

    async def ready(request: web.Request) -> web.Response:
        if sim.mode in ("unready", "down", "gateway-down", "db"):
            checks = {"database": {"status": "unhealthy", "message": "no free connection"}}
            return web.json_response({"status": "unhealthy", "checks": checks}, status=503)
        return web.json_response({"status": "ready"})

    async def fault(request: web.Request) -> web.Response:
        mode = request.query.get("mode", "none")
        if mode not in MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {', '.join(MODES)}")
        if "seconds" in request.query:
            try:
                sim.stall_seconds = max(0.0, float(request.query["seconds"]))
            except ValueError:
                raise web.HTTPBadRequest(text="seconds must be a number") from None
        sim.mode = mode
        return web.json_response({"mode": mode, "stall_seconds": sim.stall_seconds})

    app = web.Application()
    app.add_routes(
        [
            web.get("/metrics", scrape(sim.metrics.backend, ("down",))),
            web.get("/gateway/metrics", scrape(sim.metrics.gateway, ("gateway-down",))),
            web.get("/infra/metrics", scrape(sim.metrics.infra, ())),
            web.post("/api/chat", chat),
            web.post("/api/chat/{conversation_id}", chat),
            web.get("/health", live),
            web.get("/health/live", live),
            web.get("/health/ready", ready),
            web.post("/fault", fault),
        ]
    )
    return app


async def serve(
    port: int,
    rate: float,
    schedule: bool,
    log_file: TextIO | None,
    loki_url: str | None = None,
    host: str = "127.0.0.1",
) -> None:
    sim = Simulator(rate, log_file, loki_url)
    runner = web.AppRunner(build_app(sim), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"simulator: serving metrics on http://{host}:{port}/metrics", flush=True)
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
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
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
            asyncio.run(
                serve(args.port, args.rate, args.schedule, log_file, args.loki_url, args.host)
            )


if __name__ == "__main__":
    main()
