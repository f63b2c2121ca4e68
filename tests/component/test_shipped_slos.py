"""Every shipped SLO (rules/*.yaml) on the real-Prometheus scenario: ok on healthy traffic,
breach where the scenario injects its fault (and nowhere else), no_data where the data is
gone, with values the scenario's oracle computes; the dashboards rendered from all shipped
rules run every panel query; and `sentinel test`'s in-process engine agrees with
Prometheus on every shipped query at the fault times."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from sentinel.cli.main import main
from sentinel.config import Config, LokiConfig, load_config
from sentinel.offline.ruletest.promql_engine import (
    InProcessPrometheus,
    SeriesData,
    parse_series,
)
from sentinel.outputs.dashboards import render_all
from sentinel.query.promql import slo_query
from sentinel.rules.loader import load_rules
from support.fakeloki import FakeLoki
from support.procs import http
from support.promserver import PrometheusServer
from support.scenario import BASE, STEP, at, expected_quantile, write_openmetrics
from support.scenario_runtime import (
    MODELS,
    OUTPUT_TOKENS,
    PRICES,
    TPOT_LE,
    TTFT_LE,
    answers_at,
    credited,
    feedback_at,
    gateway_at,
    input_tokens_at,
    latency_buckets,
    probe_success_at,
    up_at,
)

Rows = dict[str, dict[str, Any]]
BACKEND, GATEWAY = "chatbot-backend", "chatbot-gateway"
NEW_RULE_FILES = ("gateway.yaml", "backend-platform.yaml", "backend-llm.yaml")


@pytest.fixture(scope="module")
def shipped_config(
    tmp_path_factory: pytest.TempPathFactory, prometheus: PrometheusServer, loki: FakeLoki
) -> Path:
    """config.example.yaml's rules (every shipped file), pointed at the scenario."""
    work = tmp_path_factory.mktemp("shipped")
    shutil.copytree(REPO / "rules", work / "rules")
    shutil.copytree(REPO / "dashboards", work / "dashboards")
    config = work / "config.yaml"
    config.write_text(
        f"prometheus: {{url: '{prometheus.url}'}}\nloki: {{url: '{loki.url}'}}\n"
        "rules: [rules/*.yaml]\n"
    )
    return config


@pytest.fixture(scope="module")
def results_at(shipped_config: Path) -> Callable[[float], Rows]:
    """`sentinel eval --format json` at a scenario minute, keyed `service/slo[/tier]`."""
    cache: dict[float, Rows] = {}

    def run(minute: float) -> Rows:
        if minute not in cache:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main(
                    ["eval", "-c", str(shipped_config), "--at", str(at(minute)), "--format", "json"]
                )
            rows = {}
            for r in json.loads(out.getvalue()):
                tier = r["labels"].get("tier")
                rows[f"{r['service']}/{r['slo']}" + (f"/{tier}" if tier else "")] = r
            cache[minute] = rows
        return cache[minute]

    return run


def slos(rows: Rows) -> Rows:
    """The SLO rows, without the burn-rate tiers."""
    return {key: row for key, row in rows.items() if row["kind"] != "burn_rate"}


def with_status(rows: Rows, status: str) -> set[str]:
    return {key for key, row in slos(rows).items() if row["status"] == status}


def test_every_shipped_slo_and_burn_tier_is_ok_on_healthy_traffic(
    results_at: Callable[[float], Rows],
) -> None:
    rows = results_at(30)
    assert len(slos(rows)) == 40
    assert {row["service"] for row in rows.values()} == {BACKEND, GATEWAY}
    assert {key: row["status"] for key, row in rows.items() if row["status"] != "ok"} == {}


# Once a fault happened, the SLOs over a period or a day remember it (as they should):
# node-down [95, 100) costs both services scrapes and the probe runs; the gateway's 5xx
# burst [120, 150) misses its 30-day 0.5 % target.
AVAILABILITY = {
    f"{BACKEND}/availability",
    f"{BACKEND}/availability-24h",
    f"{BACKEND}/probe-availability",
    f"{BACKEND}/probe-availability-24h",
    f"{GATEWAY}/availability",
    f"{GATEWAY}/availability-24h",
}
AFTER_5XX = AVAILABILITY | {f"{GATEWAY}/http-5xx-ratio"}
SATURATED = {
    f"{s}/{slo}" for s in (BACKEND, GATEWAY) for slo in ("cpu-usage-alert", "memory-usage-alert")
}


@pytest.mark.parametrize(
    ("minute", "breaching"),
    [
        (54, {f"{BACKEND}/tokens-per-answer", f"{BACKEND}/cost-per-answer"}),
        (
            75,
            {
                f"{BACKEND}/chat-latency-p95",
                f"{BACKEND}/http-latency-p95",
                f"{BACKEND}/ttft-p95",
                f"{BACKEND}/tpot-p95",
                f"{GATEWAY}/http-latency-p95",
            },
        ),
        (99, AVAILABILITY | {f"{GATEWAY}/service-down"}),
        (109, AVAILABILITY | {f"{BACKEND}/provider-failover-rate"}),
        (119, AVAILABILITY | {f"{BACKEND}/refusal-rate"}),
        (
            135,
            AFTER_5XX
            | {
                f"{GATEWAY}/http-5xx-alert",
                f"{BACKEND}/http-5xx-ratio",
                f"{BACKEND}/error-log-rate",
            },
        ),
        (159, AFTER_5XX | SATURATED | {f"{GATEWAY}/http-4xx-alert"}),
        (
            165,
            AFTER_5XX
            | SATURATED
            | {
                f"{BACKEND}/cpu-usage",
                f"{GATEWAY}/cpu-usage",
                f"{BACKEND}/db-pool-waiting",
                f"{BACKEND}/db-pool-available",
            },
        ),
        (
            179,
            AFTER_5XX
            | SATURATED
            | {f"{s}/{slo}" for s in (BACKEND, GATEWAY) for slo in ("cpu-usage", "memory-usage")},
        ),
        (200, AFTER_5XX | {f"{BACKEND}/negative-feedback-rate", f"{BACKEND}/fallback-answer-rate"}),
    ],
    ids=[
        "tokens",
        "llm-slow",
        "node-down",
        "failover",
        "refusal",
        "5xx",
        "4xx+saturation",
        "db+saturation",
        "saturation",
        "thumbs-down+fallback",
    ],
)
def test_each_fault_breaches_its_slos_and_nothing_else(
    results_at: Callable[[float], Rows], minute: int, breaching: set[str]
) -> None:
    rows = results_at(minute)
    assert with_status(rows, "breach") == breaching
    # While the gateway's pods are down, its 2m P99 window holds no sample at all.
    assert with_status(rows, "no_data") == (
        {f"{GATEWAY}/http-latency-p99"} if minute == 99 else set()
    )


def ratio_over(
    at_min: float, window_min: float, bad: Callable[[float], float], total: Callable[[float], float]
) -> float:
    return credited(at_min, window_min, bad) / credited(at_min, window_min, total)


def completions(m: float) -> int:
    return sum(answers_at(m).completions(p) for p in MODELS)


def cost(m: float) -> float:
    """USD of one step's completions, from the same price table as the rule."""
    total = 0.0
    for provider, (model, _) in MODELS.items():
        n = answers_at(m).completions(provider)
        total += n * input_tokens_at(m) * PRICES[(model, "input")]
        total += n * OUTPUT_TOKENS * PRICES[(model, "output")]
    return total


def summed_buckets(minute: float, kind: str) -> tuple[int, ...]:
    per_provider = [latency_buckets(minute, p, kind) for p in MODELS]
    return tuple(sum(counts) for counts in zip(*per_provider, strict=True))


def scrape_ratio(at_min: float, ok: Callable[[float], int], pods: int) -> float:
    """Failed scrapes over all scrapes of [BASE, at]: what availability-24h reads."""
    samples = [i * STEP / 60 for i in range(int(at_min * 60 / STEP) + 1)]
    total = len(samples) * pods
    return (total - sum(ok(m) for m in samples)) / total


DAY = 24 * 60.0


def scrapes_failed(service: str) -> float:
    return scrape_ratio(99, lambda m: up_at(m, service, 0) + up_at(m, service, 1), 2)


def gateway_ratio(at_min: float, bad: Callable[[Any], int]) -> float:
    """The gateway's bad / total over the 30-day window (all of the scenario)."""
    return ratio_over(at_min, 30 * DAY, lambda m: bad(gateway_at(m)), lambda m: gateway_at(m).total)


def answers_ratio(at_min: float, bad: Callable[[Any], int], total: Callable[[Any], int]) -> float:
    """bad / total answers over a 10m window."""
    return ratio_over(at_min, 10, lambda m: bad(answers_at(m)), lambda m: total(answers_at(m)))


EXACT: list[tuple[int, str, str, Callable[[], float]]] = [
    (54, BACKEND, "tokens-per-answer", lambda: input_tokens_at(50) + OUTPUT_TOKENS),
    (54, BACKEND, "cost-per-answer", lambda: cost(50) / completions(50)),
    (75, BACKEND, "ttft-p95", lambda: expected_quantile(0.95, summed_buckets(70, "ttft"), TTFT_LE)),
    (75, BACKEND, "tpot-p95", lambda: expected_quantile(0.95, summed_buckets(70, "tpot"), TPOT_LE)),
    (99, BACKEND, "service-down", lambda: 1.0),  # pod a still answers
    (99, GATEWAY, "service-down", lambda: 0.0),
    (99, BACKEND, "availability-24h", lambda: scrapes_failed(BACKEND)),
    (99, GATEWAY, "availability-24h", lambda: scrapes_failed(GATEWAY)),
    (99, BACKEND, "probe-availability-24h", lambda: 1 - scrape_ratio(99, lambda m: probe_success_at(m, 0), 1)),
    (109, BACKEND, "provider-failover-rate", lambda: answers_ratio(109, lambda a: a.ops, lambda a: a.ops + a.policy + a.refused)),
    (119, BACKEND, "refusal-rate", lambda: answers_ratio(119, lambda a: a.refused, lambda a: a.total)),
    (135, GATEWAY, "http-5xx-alert", lambda: 12 / 200),
    (135, GATEWAY, "http-5xx-ratio", lambda: gateway_ratio(135, lambda g: g.bad_gateway + g.timeouts)),
    (159, GATEWAY, "http-4xx-alert", lambda: 60 / 260),
    (159, GATEWAY, "http-4xx-ratio", lambda: gateway_ratio(159, lambda g: g.limited)),
    (165, BACKEND, "db-pool-waiting", lambda: 8.0),
    (165, BACKEND, "db-pool-available", lambda: 0.0),
    (179, BACKEND, "cpu-usage-alert", lambda: 0.9),
    (179, GATEWAY, "memory-usage-alert", lambda: 0.9),
    (200, BACKEND, "negative-feedback-rate", lambda: ratio_over(200, 30, lambda m: feedback_at(m)[1], lambda m: sum(feedback_at(m)))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("minute", "service", "slo", "expected"),
    EXACT,
    ids=[f"{m}-{s[8:]}-{n}" for m, s, n, _ in EXACT],
)
def test_values_are_what_the_scenario_holds(
    results_at: Callable[[float], Rows],
    minute: int,
    service: str,
    slo: str,
    expected: Callable[[], float],
) -> None:
    row = results_at(minute)[f"{service}/{slo}"]
    assert row["value"] == pytest.approx(expected(), rel=1e-6, abs=1e-12)


def test_the_idle_runtime_is_no_data_and_the_vanished_one_is_down(
    results_at: Callable[[float], Rows],
) -> None:
    idle = results_at(225)
    for slo in ("ttft-p95", "tokens-per-answer", "cost-per-answer"):
        assert idle[f"{BACKEND}/{slo}"]["status"] == "no_data"
        assert "NaN" in idle[f"{BACKEND}/{slo}"]["reason"]
    for slo in ("refusal-rate", "provider-failover-rate", "cost-unpriced-tokens"):
        assert idle[f"{BACKEND}/{slo}"]["reason"] == "no traffic in the window"
    # The pods are idle, not down: scrapes, gauges and the probe still report.
    for key in (f"{BACKEND}/service-down", f"{GATEWAY}/cpu-usage", f"{BACKEND}/db-pool-available"):
        assert idle[key]["status"] == "ok"
    gone = results_at(250)
    assert gone[f"{BACKEND}/service-down"]["status"] == "breach"
    assert gone[f"{GATEWAY}/service-down"]["value"] == 0
    for key in (
        f"{BACKEND}/cpu-usage",
        f"{GATEWAY}/memory-usage-alert",
        f"{BACKEND}/db-pool-waiting",
    ):
        assert gone[key]["status"] == "no_data"
        assert gone[key]["reason"] == "query returned no series"
    # Sentinel outlives the runtime: its probe reports the failures.
    assert gone[f"{BACKEND}/probe-availability-24h"]["status"] == "breach"


@pytest.fixture(scope="module")
def shipped_dashboards(shipped_config: Path) -> dict[str, dict[str, Any]]:
    config = load_config(shipped_config)
    return render_all(load_rules(config), config)


def test_every_panel_query_of_the_shipped_dashboards_runs(
    shipped_dashboards: dict[str, dict[str, Any]], prometheus: PrometheusServer
) -> None:
    checked = 0
    for dashboard in shipped_dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] != "prometheus":
                    continue
                params = {"query": target["expr"].replace("$env", ".*"), "time": at(165)}
                status, body, _ = http(
                    "GET", f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode(params)}"
                )
                assert status == 200 and body["status"] == "success", (target["expr"], body)
                checked += 1
    assert checked >= 120


def panels_of(dashboard: dict[str, Any], slo: str) -> list[dict[str, Any]]:
    """The panels of one SLO's row (a row's panels follow it until the next row)."""
    out: list[dict[str, Any]] = []
    inside = False
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            inside = panel["title"].split(" — ")[0] == slo
        elif inside:
            out.append(panel)
    return out


@pytest.mark.parametrize(
    ("slo", "unit", "decimals", "traffic"),
    [
        ("ttft-p95", "s", 3, "latency P50 / P95 / P99"),
        ("tpot-p95", "s", 3, "latency P50 / P95 / P99"),
        ("tokens-per-answer", "short", 0, None),
        ("cost-per-answer", "short", 6, None),  # $0.00027 reads as such, not as 0.000
        ("cost-unpriced-tokens", "percentunit", 3, None),  # a ratio with a threshold, no objective
        ("refusal-rate", "percentunit", 3, "events per second (total, bad)"),
        ("provider-failover-rate", "percentunit", 3, "events per second (total, bad)"),
        ("negative-feedback-rate", "percentunit", 3, "events per second (total, bad)"),
    ],
)
def test_each_llm_sli_has_its_panels(
    shipped_dashboards: dict[str, dict[str, Any]],
    slo: str,
    unit: str,
    decimals: int,
    traffic: str | None,
) -> None:
    panels = panels_of(shipped_dashboards[f"sentinel-{BACKEND}.json"], slo)
    stat = next(p for p in panels if p["type"] == "stat")
    assert stat["fieldConfig"]["defaults"]["unit"] == unit
    assert stat["fieldConfig"]["defaults"]["decimals"] == decimals
    over_time = [p for p in panels if p["title"].startswith(f"{slo} over time")]
    assert len(over_time) == 1
    assert [p["title"] for p in panels if p["title"] == traffic] == ([traffic] if traffic else [])


def test_the_error_logs_sit_below_every_slo_row(
    shipped_dashboards: dict[str, dict[str, Any]],
) -> None:
    panels = shipped_dashboards[f"sentinel-{BACKEND}.json"]["panels"]
    logs_row = next(p for p in panels if p["type"] == "row" and p["title"] == "error logs")
    bottom = max(
        p["gridPos"]["y"] + p["gridPos"]["h"]
        for p in panels
        if p["title"] != "error lines" and p is not logs_row
    )
    assert bottom > 200  # 27 SLO rows: far below where the logs used to be pinned
    assert logs_row["gridPos"]["y"] == bottom


@pytest.fixture(scope="module")
def engine() -> InProcessPrometheus:
    """The scenario the fixture Prometheus holds, parsed back from its OpenMetrics."""
    buffer = io.StringIO()
    write_openmetrics(buffer, services=20)
    series: dict[str, SeriesData] = {}
    for line in buffer.getvalue().splitlines():
        if not line.startswith("#"):
            text, value, ts = line.rsplit(" ", 2)
            if text not in series:
                series[text] = SeriesData(parse_series(text)[1])
            series[text].points.append((float(ts), float(value)))
    return InProcessPrometheus(list(series.values()))


@pytest.mark.parametrize("minute", [54, 99, 109, 119, 159, 165, 179, 250])
def test_the_rule_test_engine_agrees_with_prometheus_at_every_fault(
    engine: InProcessPrometheus, prometheus: PrometheusServer, minute: int
) -> None:
    config = Config(
        rules=[str(REPO / "rules" / f) for f in NEW_RULE_FILES],
        loki=LokiConfig(url="http://x"),
        base_dir="/",
    )
    for slo in load_rules(config).slos:
        query = slo_query(slo)
        params = urllib.parse.urlencode({"query": query, "time": at(minute)})
        _, body, _ = http("GET", f"{prometheus.url}/api/v1/query?{params}")
        theirs = {
            tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]
        }
        ours = engine.query(query, at(minute))
        assert set(ours) == set(theirs), (slo.name, minute)
        for key, value in theirs.items():
            if math.isnan(value):
                assert math.isnan(ours[key]), (slo.name, key)
            else:
                assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (slo.name, key)


def test_scenario_minutes_land_on_samples() -> None:
    # The oracle's exact values assume evaluation times on the 15 s sample grid.
    assert all((at(m) - BASE) % STEP == 0 for m, *_ in EXACT)


def test_the_readme_lists_every_shipped_slo_with_its_source() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Shipped rules", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.replace("\\|", "/").strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("SLO", "---"):
            assert cells[5], f"{cells[0]}: no source"
            listed |= {(f"chatbot-{s.strip()}", cells[0]) for s in cells[1].split(",")}
    config = Config(rules=[str(REPO / "rules" / "*.yaml")], loki=LokiConfig(url="http://x"), base_dir="/")  # fmt: skip
    assert listed == {(slo.service, slo.name) for slo in load_rules(config).slos}
