"""A live stack for the status UI's browser tests: the simulator (chatbot runtime with
switchable faults), an exporter whose label values are hostile (quotes, `<script>`,
`<img onerror>`, Vietnamese), a real Prometheus scraping both every second, and
`sentinel run` over rules that cover latency, ratio-with-budget and grouped SLOs.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from support.procs import Proc, http, start_sentinel, start_simulator, wait_for
from support.promserver import PrometheusServer, free_port
from support.threaded import ThreadedServer

# Label values a hostile or careless exporter may send; each must render as text.
HOSTILE = (
    "q\"uote'<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=2>",
    'Trợ lý ảo "chăm sóc" khách hàng',
)

CHATBOT_RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend}
interval: 1s
slos:
  - name: chat-latency-p95
    description: 95 % of chat answers are produced within 1.5 s.
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 15s
    runbook_url: https://runbooks.example.com/chatbot/latency
  - name: http-5xx-ratio
    description: Fewer than 0.5 % of HTTP requests fail with a 5xx status.
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.5%
    window: 15s
    period: 7d
    burn_rate: {min_events: 10}
"""

HOSTILE_RULES = """\
version: sentinel/v1
service: hostile
interval: 1s
slos:
  - name: hostile-5xx
    sli:
      ratio:
        bad: {metric: hostile_requests_total, matchers: {code: "=~5.."}}
        total: {metric: hostile_requests_total}
    objective: 99%
    window: 15s
    group_by: [service]
"""


class HostileExporter(ThreadedServer):
    """Counters growing 10/s per hostile service; the Vietnamese one fails 20 %."""

    def app(self) -> web.Application:
        started = time.time()

        def escape(value: str) -> str:
            return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        async def metrics(request: web.Request) -> web.Response:
            n = int((time.time() - started) * 10)
            lines = ["# TYPE hostile_requests counter"]
            for i, value in enumerate(HOSTILE):
                bad = n // 5 if i == 2 else 0
                label = escape(value)
                lines.append(f'hostile_requests_total{{service="{label}",code="200"}} {n - bad}')
                lines.append(f'hostile_requests_total{{service="{label}",code="500"}} {bad}')
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

        app = web.Application()
        app.add_routes([web.get("/metrics", metrics)])
        return app


@dataclass
class UIStack:
    url: str
    sim_url: str
    daemon: Proc
    dir: Path
    token: str | None


@contextmanager
def ui_stack(
    workdir: Path, token: str | None = None, page_rows: int | None = None
) -> Iterator[UIStack]:
    sim, sim_url = start_simulator(workdir)
    exporter = HostileExporter().start()
    targets = (sim_url.removeprefix("http://"), exporter.url.removeprefix("http://"))
    prom = PrometheusServer(workdir / "prom", scrape_targets=targets)
    prom.workdir.mkdir()
    daemon: Proc | None = None
    try:
        prom.start()
        rules = workdir / "rules"
        rules.mkdir()
        (rules / "chatbot.yaml").write_text(CHATBOT_RULES)
        (rules / "hostile.yaml").write_text(HOSTILE_RULES)
        port = free_port()
        auth = f', api_token: "{token}"' if token else ""
        auth += f", ui_page_rows: {page_rows}" if page_rows else ""
        config = workdir / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "{prom.url}", timeout: 2s, retries: 0}}
                rules: [rules/*.yaml]
                evaluation: {{interval: 1s, shutdown_timeout: 5s}}
                server: {{listen: "127.0.0.1:{port}"{auth}}}
                state: {{path: "{workdir / "state.db"}"}}
                """
            )
        )
        daemon = start_sentinel(config)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 30, "sentinel ready")
        yield UIStack(url, sim_url, daemon, workdir, token)
    finally:
        if daemon is not None:
            daemon.stop()
        prom.stop()
        exporter.stop()
        sim.stop()
