"""A live stack for end-to-end tests: the simulator, a Prometheus scraping it every
second, and a Sentinel config pointing at both (the daemon is started by the test)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.procs import start_simulator
from support.promserver import PrometheusServer, free_port

RULES_HEADER = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend}
interval: 1s
slos:
  - name: chat-latency-p95
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 15s
"""


@dataclass
class LiveStack:
    sim_url: str
    prom: PrometheusServer
    config: Path
    url: str
    dir: Path


@contextmanager
def live_stack(workdir: Path, rules: str, config_extra: str = "") -> Iterator[LiveStack]:
    sim, sim_url = start_simulator(workdir)
    prom = PrometheusServer(workdir / "prom", scrape_targets=(sim_url.removeprefix("http://"),))
    prom.workdir.mkdir()
    try:
        prom.start()
        (workdir / "rules").mkdir()
        (workdir / "rules" / "chatbot.yaml").write_text(rules)
        port = free_port()
        config = workdir / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "{prom.url}", timeout: 2s, retries: 0}}
                rules: [rules/*.yaml]
                evaluation: {{interval: 1s, shutdown_timeout: 5s}}
                server: {{listen: "127.0.0.1:{port}"}}
                state: {{path: "{workdir / "state.db"}"}}
                """
            )
            + textwrap.dedent(config_extra)
        )
        yield LiveStack(sim_url, prom, config, f"http://127.0.0.1:{port}", workdir)
    finally:
        prom.stop()
        sim.stop()
