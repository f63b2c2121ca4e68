"""End to end: the real `sentinel run` process, a real Prometheus scraping a simulated
chatbot runtime every second, faults switched by the test."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.livestack import RULES_HEADER, live_stack
from support.procs import REPO, Proc, http, start_sentinel, wait_for
from support.promserver import PrometheusServer

pytestmark = pytest.mark.e2e

RULES = (
    RULES_HEADER
    + """\
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.5%
    window: 15s
"""
)


@pytest.fixture
def stack(tmp_path: Path, prometheus_binaries: None) -> Iterator[dict[str, object]]:
    extra = f'dashboards: {{templates: "{REPO / "dashboards"}", output: build}}\n'
    with live_stack(tmp_path, RULES, extra) as live:
        daemon = start_sentinel(live.config)
        try:
            yield {
                "sim": live.sim_url,
                "prom": live.prom,
                "daemon": daemon,
                "url": live.url,
                "dir": tmp_path,
            }
        finally:
            daemon.stop()


def slo(url: str, name: str) -> dict[str, object]:
    _, body, _ = http("GET", f"{url}/api/v1/slos?service=chatbot-backend")
    return next(r for r in body if r["slo"] == name)


def test_daemon_lifecycle_breach_reload_and_graceful_stop(stack: dict[str, object]) -> None:
    url, daemon, sim = str(stack["url"]), stack["daemon"], str(stack["sim"])
    assert isinstance(daemon, Proc)
    started = time.monotonic()
    wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 15, "readiness")
    assert time.monotonic() - started < 15
    assert http("GET", f"{url}/health/live")[0] == 200
    # Dashboards are rendered on start...
    board = Path(str(stack["dir"])) / "build" / "sentinel-chatbot-backend.json"
    wait_for(board.exists, 10, "dashboards rendered")
    assert '"value": 1.5' in board.read_text()

    # Healthy traffic first, then a latency regression the data shows as a breach.
    wait_for(lambda: slo(url, "chat-latency-p95")["status"] == "ok", 30, "latency ok")
    http("POST", f"{sim}/fault?mode=latency")
    breach = wait_for(
        lambda: (r := slo(url, "chat-latency-p95"))["status"] == "breach" and r, 40, "breach"
    )
    assert breach["value"] > 1.5
    assert slo(url, "http-5xx-ratio")["status"] == "ok"
    _, only_breaches, _ = http("GET", f"{url}/api/v1/slos?status=breach")
    assert [r["slo"] for r in only_breaches] == ["chat-latency-p95"]

    # /metrics parses and carries evaluation and SLO gauges.
    _, text, _ = http("GET", f"{url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "sentinel_evaluation_duration_seconds" in families
    breached = {s.labels["slo"]: s.value for s in families["sentinel_slo_breached"].samples}
    assert breached["chat-latency-p95"] == 1.0
    assert {"sentinel_build", "sentinel_build_info"} & set(families)

    # SIGHUP with a broken rule file: the old rules keep running, the error is shown.
    rules = Path(str(stack["dir"])) / "rules" / "chatbot.yaml"
    rules.write_text(RULES.replace("objective: 99.5%", "objective: 120%"))
    daemon.process.send_signal(signal.SIGHUP)
    detailed = wait_for(
        lambda: (
            (b := http("GET", f"{url}/health/detailed")[1])["config"]["last_reload"]["status"]
            == "failed"
            and b
        ),
        10,
        "reload refused",
    )
    errors = detailed["config"]["last_reload"]["errors"]
    assert any(
        "chatbot.yaml:16: slos[1].objective: must be between 0 and 100" in e for e in errors
    ), errors
    time.sleep(1.5)
    assert {r["slo"] for r in http("GET", f"{url}/api/v1/slos")[1]} == {
        "chat-latency-p95",
        "http-5xx-ratio",
    }
    assert detailed["checks"]["prometheus"]["status"] == "healthy"
    assert detailed["rule_groups"]["chatbot"]["cycles"] >= 1

    # A valid reload is taken.
    rules.write_text(RULES.replace("threshold: 1.5s", "threshold: 60s"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: slo(url, "chat-latency-p95")["threshold"] == 60.0, 10, "reloaded rules")
    # ...and again on a reload that changed the rules.
    wait_for(lambda: '"value": 60.0' in board.read_text(), 10, "dashboards re-rendered")

    # SIGTERM: exits 0 within the shutdown timeout.
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=10) == 0
    assert "shutting down gracefully" in daemon.log()


def test_prometheus_down_is_no_data_and_not_ready_then_recovers(stack: dict[str, object]) -> None:
    url, prom = str(stack["url"]), stack["prom"]
    assert isinstance(prom, PrometheusServer)
    wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 15, "readiness")
    wait_for(lambda: slo(url, "http-5xx-ratio")["status"] == "ok", 30, "5xx ok")

    prom.stop()
    down = wait_for(
        lambda: (r := slo(url, "http-5xx-ratio"))["status"] == "no_data" and r, 15, "no_data"
    )
    assert "prometheus unavailable" in down["reason"]
    status, body, _ = http("GET", f"{url}/health/ready")
    assert status == 503
    assert any("prometheus unreachable" in r for r in body["reasons"])
    assert http("GET", f"{url}/health/live")[0] == 200

    prom.start()
    wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 20, "ready again")
    wait_for(lambda: slo(url, "http-5xx-ratio")["status"] == "ok", 30, "5xx ok again")
    daemon = stack["daemon"]
    assert isinstance(daemon, Proc)
    assert daemon.process.poll() is None
    assert "Traceback" not in daemon.log()
