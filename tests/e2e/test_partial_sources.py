"""One source down hides nothing else: with Loki configured but unreachable, every
Prometheus SLO is still evaluated and shown, the log SLOs are no_data naming Loki,
`sentinel eval` says so with its own exit code (3), and `sentinel run` becomes ready,
shows Loki down in `/health/detailed` and keeps answering the gate."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from sentinel.cli.main import main
from support.livestack import RULES_HEADER, live_stack
from support.procs import http, start_sentinel, wait_for
from support.promserver import PrometheusServer, free_port
from support.scenario import at

LOG_SLOS = ("fallback-answer-rate", "error-log-rate")


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.fixture
def loki_down_config(tmp_path: Path, prometheus: PrometheusServer, closed_port: int) -> Path:
    """The shipped rules/chatbot.yaml (Prometheus and Loki SLOs), Loki unreachable."""
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules" / "chatbot.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"prometheus:\n  url: {prometheus.url}\n"
        f"loki:\n  url: http://127.0.0.1:{closed_port}\n  retries: 0\n"
        "rules: [rules/*.yaml]\n"
    )
    return config


def run_eval(
    capsys: pytest.CaptureFixture[str], config: Path, when: float
) -> tuple[int, dict[str, dict[str, Any]], str]:
    code = main(["eval", "-c", str(config), "--at", str(when), "--format", "json"])
    out, err = capsys.readouterr()
    results = {r["slo"]: r for r in json.loads(out) if r["kind"] != "burn_rate"}
    return code, results, err


def test_eval_with_loki_down_prints_every_prometheus_slo_and_exits_3(
    capsys: pytest.CaptureFixture[str], loki_down_config: Path
) -> None:
    code, results, err = run_eval(capsys, loki_down_config, at(30))

    assert code == 3
    prometheus_slos = set(results) - set(LOG_SLOS)
    assert prometheus_slos >= {"chat-latency-p95", "http-latency-p95", "http-5xx-ratio"}
    assert {results[s]["status"] for s in prometheus_slos} == {"ok"}
    assert results["chat-latency-p95"]["value"] > 0
    for name in LOG_SLOS:
        assert results[name]["status"] == "no_data"
        assert "loki unavailable" in results[name]["reason"]
    [warning] = err.strip().splitlines()
    assert warning.startswith("warning: loki unavailable: cannot connect")
    assert "chatbot-backend/fallback-answer-rate" in warning


def test_eval_with_loki_down_still_reports_a_prometheus_breach_with_exit_1(
    capsys: pytest.CaptureFixture[str], loki_down_config: Path
) -> None:
    code, results, err = run_eval(capsys, loki_down_config, at(75))

    assert code == 1
    assert results["chat-latency-p95"]["status"] == "breach"
    assert results["fallback-answer-rate"]["status"] == "no_data"
    assert "warning: loki unavailable" in err


def test_eval_table_with_loki_down_shows_both_kinds_of_rows(
    capsys: pytest.CaptureFixture[str], loki_down_config: Path
) -> None:
    code = main(["eval", "-c", str(loki_down_config), "--at", str(at(30))])
    out = capsys.readouterr().out

    assert code == 3
    assert "chat-latency-p95" in out and "fallback-answer-rate" in out
    assert "loki unavailable" in out


LOG_RULE = """\
  - name: fallback-answer-rate
    sli:
      log_ratio:
        selector: '{app="chatbot-backend", namespace="chatbot"}'
        pipeline: '| json'
        bad: 'answer_mode="snippet-fallback"'
    objective: 95%
    window: 5m
"""


@pytest.fixture
def live_without_loki(
    tmp_path: Path, prometheus_binaries: None, closed_port: int
) -> Iterator[dict[str, Any]]:
    loki = f"loki: {{url: 'http://127.0.0.1:{closed_port}', retries: 0}}\n"
    with live_stack(tmp_path, RULES_HEADER + LOG_RULE, loki) as live:
        daemon = start_sentinel(live.config)
        try:
            yield {"url": live.url, "daemon": daemon, "prom": live.prom}
        finally:
            daemon.stop()


def test_run_with_loki_down_becomes_ready_shows_loki_down_and_keeps_the_gate_answering(
    live_without_loki: dict[str, Any],
) -> None:
    url = live_without_loki["url"]
    wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 20, "readiness")

    def slo(name: str) -> dict[str, Any]:
        body = http("GET", f"{url}/api/v1/slos?service=chatbot-backend")[1]
        return next(r for r in body if r["slo"] == name)

    wait_for(lambda: slo("chat-latency-p95")["status"] == "ok", 30, "latency ok")
    log_slo = slo("fallback-answer-rate")
    assert log_slo["status"] == "no_data"
    assert "loki unavailable" in log_slo["reason"]

    detailed = http("GET", f"{url}/health/detailed")[1]
    assert detailed["status"] == "degraded"
    assert detailed["checks"]["loki"]["status"] == "unhealthy"
    assert detailed["checks"]["prometheus"]["status"] == "healthy"
    assert detailed["ready"] is True

    status, body, _ = http("GET", f"{url}/api/v1/gate?service=chatbot-backend&slo=chat-latency-p95")
    assert (status, body["decision"]) == (200, "pass"), body

    # With every source the rules use down, Sentinel can judge nothing: not ready.
    live_without_loki["prom"].stop()
    status, body, _ = wait_for(
        lambda: (r := http("GET", f"{url}/health/ready"))[0] == 503 and r, 20, "not ready"
    )
    assert any(r.startswith("prometheus unreachable") for r in body["reasons"]), body
    assert any(r.startswith("loki unreachable") for r in body["reasons"]), body
