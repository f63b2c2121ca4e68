"""`sentinel test`: rule unit tests in-process, and the in-process PromQL engine agrees
with the real Prometheus on every query Sentinel generates."""

from __future__ import annotations

import io
import math
import urllib.parse
from pathlib import Path

import pytest

from conftest import REPO
from sentinel.cli.main import main
from sentinel.config import Config, LokiConfig
from sentinel.offline.ruletest.promql_engine import (
    InProcessPrometheus,
    SeriesData,
    expand_values,
    parse_series,
)
from sentinel.query.promql import slo_query
from sentinel.rules.loader import load_rules
from support.procs import http
from support.promserver import PrometheusServer
from support.scenario import at, write_openmetrics


def test_shipped_rule_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (REPO / "tests" / "rules").glob("*.yaml"))
    assert main(["test", *files]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "PASS" in out


def test_a_failing_expectation_is_reported_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.yaml").write_text(
        f"rule_files: [{REPO / 'rules' / 'chatbot.yaml'}]\n"
        "tests:\n"
        "  - name: wrong on purpose\n"
        "    interval: 15s\n"
        "    input_series:\n"
        '      - series: \'http_requests_total{namespace="chatbot",service="chatbot-backend",status="500"}\'\n'
        "        values: '0+10x40'\n"
        '      - series: \'http_requests_total{namespace="chatbot",service="chatbot-backend",status="200"}\'\n'
        "        values: '0+190x40'\n"
        "    expect:\n"
        "      - {at: 5m, slo: http-5xx-ratio, status: ok}\n"
        "      - {at: 5m, alert: http-5xx-ratio, state: inactive}\n"
    )
    assert main(["test", str(tmp_path / "t.yaml")]) == 1
    out = capsys.readouterr().out
    assert "at 5m: SLO chatbot-backend/http-5xx-ratio is breach, expected ok" in out
    assert "at 5m: alert chatbot-backend/http-5xx-ratio is firing, expected inactive" in out


def test_promtool_value_notation() -> None:
    assert expand_values("0+10x3") == [0, 10, 20, 30]
    assert expand_values("1 2 _ 4") == [1, 2, None, 4]
    assert expand_values("5x2 _x1 3-1x2") == [5, 5, 5, None, None, 3, 2, 1]


def scenario_series() -> list[SeriesData]:
    """The scenario the fixture Prometheus holds, parsed back from its OpenMetrics."""
    buffer = io.StringIO()
    write_openmetrics(buffer, services=20)
    series: dict[str, SeriesData] = {}
    for line in buffer.getvalue().splitlines():
        if line.startswith("#"):
            continue
        text, value, ts = line.rsplit(" ", 2)
        if text not in series:
            series[text] = SeriesData(parse_series(text)[1])
        series[text].points.append((float(ts), float(value)))
    return list(series.values())


def test_in_process_engine_matches_prometheus(prometheus: PrometheusServer) -> None:
    config = Config(
        rules=[str(REPO / "rules" / "*.yaml")], loki=LokiConfig(url="http://x"), base_dir="/"
    )
    engine = InProcessPrometheus(scenario_series())
    compared = 0
    for slo in load_rules(config).slos:
        if slo.source != "prometheus":
            continue
        for window in (None, 3600.0):
            query = slo_query(slo, window)
            for minute in (30, 75, 135, 200, 225):
                params = urllib.parse.urlencode({"query": query, "time": at(minute)})
                _, body, _ = http("GET", f"{prometheus.url}/api/v1/query?{params}")
                theirs = {
                    tuple(sorted(r["metric"].items())): float(r["value"][1])
                    for r in body["data"]["result"]
                }
                ours = engine.query(query, at(minute))
                assert set(ours) == set(theirs), (query, minute)
                for key, value in theirs.items():
                    if math.isnan(value):
                        assert math.isnan(ours[key])
                    else:
                        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                            query,
                            minute,
                            key,
                        )
                compared += 1
    assert compared >= 30
