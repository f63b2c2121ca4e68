"""`sentinel eval` against a real Prometheus holding the scenario data."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PLATFORM_SERVICES, REPO
from sentinel.cli.main import main
from support.fakeloki import FakeLoki
from support.promserver import PrometheusServer
from support.scenario import (
    HEALTHY_CHAT,
    HEALTHY_HTTP,
    SLOW_CHAT,
    SLOW_HTTP,
    at,
    expected_quantile,
    platform_bad,
)


@pytest.fixture
def chatbot_config(tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki) -> Path:
    """The shipped rules/chatbot.yaml, pointed at the fixture Prometheus and Loki."""
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules" / "chatbot.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"prometheus:\n  url: {prometheus.url}\nloki:\n  url: {loki.url}\nrules: [rules/*.yaml]\n"
    )
    return config


def run_eval(
    capsys: pytest.CaptureFixture[str], config: Path, when: float, *extra: str
) -> tuple[int, dict[str, dict[str, object]]]:
    code = main(["eval", "-c", str(config), "--at", str(when), "--format", "json", *extra])
    out = capsys.readouterr().out
    return code, {r["slo"]: r for r in json.loads(out) if r["kind"] != "burn_rate"}


def test_healthy_traffic_is_ok_with_exact_values(
    capsys: pytest.CaptureFixture[str], chatbot_config: Path
) -> None:
    code, results = run_eval(capsys, chatbot_config, at(30))
    assert code == 0
    assert {r["status"] for r in results.values()} == {"ok"}
    chat = results["chat-latency-p95"]
    assert chat["value"] == pytest.approx(expected_quantile(0.95, HEALTHY_CHAT), rel=1e-9)
    assert chat["threshold"] == 1.5
    assert chat["events"] == pytest.approx(200 * 20)  # 200 answers per 15 s over 5m
    assert results["http-latency-p95"]["value"] == pytest.approx(
        expected_quantile(0.95, HEALTHY_HTTP), rel=1e-9
    )
    # No 5xx series exists yet: the error ratio is 0, not no_data.
    assert results["http-5xx-ratio"]["value"] == 0.0
    # From the logs: 1 fallback in 50 answers per 15 s; garbled lines count on neither side.
    assert results["fallback-answer-rate"]["value"] == pytest.approx(1 / 50, abs=1e-12)
    assert results["fallback-answer-rate"]["events"] == 40 * 50
    assert results["error-log-rate"]["value"] == 0.0
    assert chat["evaluated_at"] == "2026-11-20T12:30:00Z"


def test_latency_regression_breaches_only_latency(
    capsys: pytest.CaptureFixture[str], chatbot_config: Path
) -> None:
    code, results = run_eval(capsys, chatbot_config, at(75))
    assert code == 1
    assert results["chat-latency-p95"]["status"] == "breach"
    assert results["chat-latency-p95"]["value"] == pytest.approx(
        expected_quantile(0.95, SLOW_CHAT), rel=1e-9
    )
    assert results["http-latency-p95"]["status"] == "breach"
    assert results["http-latency-p95"]["value"] == pytest.approx(
        expected_quantile(0.95, SLOW_HTTP), rel=1e-9
    )
    # P99 of the slow phase is 4.5 s: still under its 5 s threshold.
    assert results["http-latency-p99"]["status"] == "ok"
    assert results["http-5xx-ratio"]["status"] == "ok"
    assert results["fallback-answer-rate"]["status"] == "ok"


def test_5xx_burst_breaches_error_ratio_exactly(
    capsys: pytest.CaptureFixture[str], chatbot_config: Path
) -> None:
    code, results = run_eval(capsys, chatbot_config, at(135))
    assert code == 1
    ratio = results["http-5xx-ratio"]
    assert ratio["status"] == "breach"
    assert ratio["value"] == pytest.approx(10 / 200, abs=1e-9)
    assert ratio["threshold"] == pytest.approx(0.005)
    assert ratio["objective"] == pytest.approx(0.995)
    assert results["chat-latency-p95"]["status"] == "ok"
    assert results["error-log-rate"]["status"] == "breach"
    assert results["error-log-rate"]["value"] == pytest.approx(2 / 50, abs=1e-12)


def test_fallback_surge_breaches_fallback_rate(
    capsys: pytest.CaptureFixture[str], chatbot_config: Path
) -> None:
    _, results = run_eval(capsys, chatbot_config, at(200))
    assert results["fallback-answer-rate"]["status"] == "breach"
    assert results["fallback-answer-rate"]["value"] == pytest.approx(15 / 50, abs=1e-12)
    assert results["http-5xx-ratio"]["status"] == "ok"


@pytest.mark.parametrize("minute", [225, 250], ids=["flat-counters", "series-gone"])
def test_no_traffic_is_no_data_never_ok(
    capsys: pytest.CaptureFixture[str], chatbot_config: Path, minute: int
) -> None:
    code, results = run_eval(capsys, chatbot_config, at(minute))
    assert {r["status"] for r in results.values()} == {"no_data"}
    # Only the slow burn-rate tiers, whose long windows still hold the 5xx burst, may
    # breach (exit 1); nothing is `ok` for want of data.
    assert code in (0, 1)
    assert all(r["value"] is None for r in results.values())
    assert all(r["reason"] for r in results.values())


def test_table_output_and_explain(capsys: pytest.CaptureFixture[str], chatbot_config: Path) -> None:
    code = main(["eval", "-c", str(chatbot_config), "--at", "2026-11-20T13:15:00Z", "--explain"])
    out = capsys.readouterr().out
    assert code == 1
    assert "chat-latency-p95" in out and "BREACH" in out
    assert "histogram_quantile(0.95" in out  # the query, ready to paste into Grafana


def test_unreachable_prometheus_exits_2_with_one_line_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    config = tmp_path / "config.yaml"
    config.write_text(
        "prometheus:\n  url: http://127.0.0.1:9\n  retries: 0\n"
        "loki:\n  url: http://127.0.0.1:9\n  retries: 0\nrules: [rules/*]\n"
    )
    code = main(["eval", "-c", str(config), "--at", str(at(30))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "unavailable: cannot connect" in err


GROUPED_RULE = """\
    version: sentinel/v1
    service: platform
    labels: {namespace: platform}
    slos:
      - name: http-5xx-ratio
        sli:
          ratio:
            bad: {metric: platform_requests_total, matchers: {code: "=~5.."}}
            total: {metric: platform_requests_total}
        objective: 99.5%
        window: 10m
        group_by: [service]
"""


def test_group_by_1000_services_is_one_query(
    capsys: pytest.CaptureFixture[str],
    prometheus: PrometheusServer,
    write_config: Callable[..., Path],
) -> None:
    config = write_config(prometheus.url, {"platform.yaml": GROUPED_RULE})
    before = prometheus.query_count()
    code = main(["eval", "-c", str(config), "--at", str(at(30)), "--format", "json"])
    results = json.loads(capsys.readouterr().out)
    after = prometheus.query_count()
    assert after - before == 1
    assert len(results) == PLATFORM_SERVICES
    by_service = {r["service"]: r for r in results}
    for i in (0, 5, 6, 999):
        r = by_service[f"svc-{i:04d}"]
        assert r["labels"] == {"service": f"svc-{i:04d}"}
        assert r["value"] == pytest.approx(platform_bad(i) / 1000, abs=1e-9)
        assert r["status"] == ("breach" if platform_bad(i) / 1000 > 0.005 else "ok")
    assert code == 1
