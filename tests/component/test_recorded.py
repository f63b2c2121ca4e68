"""`evaluation.budget_source: recorded` reads the series `sentinel rules export` records
(backfilled here with `promtool tsdb create-blocks-from rules`) and gets the same burn
rates as raw queries."""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.cli.main import main
from sentinel.config import load_config
from sentinel.evaluate.wiring import build_engine
from sentinel.query.promql import recorded_ratio_query
from sentinel.rules.loader import load_rules
from support.procs import http
from support.promserver import PrometheusServer, backfill, find_binary
from support.scenario import at, write_file

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend}
slos:
  - name: http-5xx-budget
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.9%
    period: 30d
"""


async def test_recorded_series_give_the_raw_burn_rates(
    tmp_path: Path, prometheus: PrometheusServer, write_config: Callable[..., Path]
) -> None:
    config_path = write_config(prometheus.url, {"chatbot.yaml": RULES})
    exported = tmp_path / "sentinel-rules.yml"
    assert main(["rules", "export", "-c", str(config_path), "-o", str(exported)]) == 0
    promtool = find_binary("promtool")
    assert promtool
    blocks = tmp_path / "rule-blocks"
    subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "rules",
            f"--start={int(at(0))}",
            f"--end={int(at(240))}",
            f"--url={prometheus.url}",
            f"--output-dir={blocks}",
            "--eval-interval=60s",
            "-q",
            str(exported),
        ],
        check=True,
        capture_output=True,
    )
    recorded = PrometheusServer(tmp_path / "prom-recorded")
    recorded.workdir.mkdir()
    write_file(tmp_path / "scenario.om", services=1)
    backfill(tmp_path / "scenario.om", recorded.storage)
    for block in blocks.iterdir():
        shutil.copytree(block, recorded.storage / block.name)
    recorded.start()
    try:
        raw_config = load_config(config_path)
        text = config_path.read_text().replace(prometheus.url, recorded.url)
        config_path.write_text(text + "evaluation: {budget_source: recorded}\n")
        recorded_config = load_config(config_path)
        slos = load_rules(raw_config).slos
        # A ruler records on its own schedule: Sentinel reads the latest recorded sample,
        # so compare with raw queries at that sample's time.
        params = urllib.parse.urlencode(
            {"query": "slo:sli_error:ratio_rate5m[2m]", "time": at(140)}
        )
        _, body, _ = http("GET", f"{recorded.url}/api/v1/query?{params}")
        recorded_at = float(body["data"]["result"][0]["values"][-1][0])
        assert at(140) - 60 < recorded_at <= at(140)
        # Every recorded window answers an instance with one label set (not the rule's
        # name), so the daemon holds one set per instance, not one per window.
        label_sets = []
        for window in (300.0, 3600.0, 259200.0):
            query = recorded_ratio_query(slos[0], window)
            params = urllib.parse.urlencode({"query": query, "time": at(140)})
            _, body, _ = http("GET", f"{recorded.url}/api/v1/query?{params}")
            assert len(body["data"]["result"]) == 1, (window, body)
            label_sets.append(body["data"]["result"][0]["metric"])
        assert "__name__" not in label_sets[0] and label_sets[0] == label_sets[1] == label_sets[2]
        raw_engine, rec_engine = build_engine(raw_config), build_engine(recorded_config)
        raw = await raw_engine.evaluate_once(slos, recorded_at)
        rec = await rec_engine.evaluate_once(slos, at(140))
        for engine in (raw_engine, rec_engine):
            for source in engine.sources.values():
                await source.close()
        raw_main, rec_main = raw.results[0], rec.results[0]
        assert raw_main.budget and rec_main.budget
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            assert rec_main.budget["burn_rates"][window] == pytest.approx(
                raw_main.budget["burn_rates"][window], rel=1e-9
            ), window
        assert [r.status for r in rec.results[1:]] == [r.status for r in raw.results[1:]]
        assert any(r.status.value == "breach" for r in rec.results[1:])
    finally:
        recorded.stop()


# -- the period ratio: hourly sums plus a fresh five-minute tail ------------------------------

SHOP = """\
version: sentinel/v1
service: shop
labels: {namespace: shop}
slos:
  - name: checkout-errors
    sli:
      ratio:
        bad: {metric: shop_requests_total, matchers: {code: "=~5.."}}
        total: {metric: shop_requests_total}
    objective: 99%
    period: 30d
"""
T0 = 1795176000 + 86400  # a day after the scenario, on its own Prometheus
HOURS = 8
STEP = 30
RESET_AT = T0 + 3 * 3600  # pod b restarts: its counters start again from 0
GAP = (T0 + 5 * 3600, T0 + 5 * 3600 + 1200)  # pod a not scraped for 20 minutes
BURST = (T0 + 7 * 3600 + 2400, T0 + 7 * 3600 + 3000)  # 7h40..7h50: 30 % errors
PHASES = {"sentinel-period-5m": 37.0, "sentinel-period-1h": 1234.0}  # a ruler's slots


def shop_openmetrics(path: Path) -> None:
    """Two pods, 200 and 500 counters every 30 s over 8 h: a daily-ish traffic wave,
    0.5 % errors, a 30 % error burst late in the last hour, a counter reset, a gap."""
    import math

    counts = {(pod, code): 0.0 for pod in "ab" for code in ("200", "500")}
    rows: dict[tuple[str, str], list[str]] = {key: [] for key in counts}
    for t in range(T0, T0 + HOURS * 3600 + 1, STEP):
        per_s = 20 + 10 * math.sin((t - T0) / 7200)
        ratio = 0.3 if BURST[0] <= t < BURST[1] else 0.005
        for pod in "ab":
            if pod == "b" and t == RESET_AT:
                counts[("b", "200")] = counts[("b", "500")] = 0.0
            counts[(pod, "500")] += per_s * STEP * ratio
            counts[(pod, "200")] += per_s * STEP * (1 - ratio)
            if pod == "a" and GAP[0] <= t < GAP[1]:
                continue
            for code in ("200", "500"):
                rows[(pod, code)].append(f"{counts[(pod, code)]:.3f} {t}")
    with path.open("w") as out:
        out.write("# TYPE shop_requests counter\n")
        for (pod, code), samples in rows.items():
            for sample in samples:
                out.write(f'shop_requests_total{{namespace="shop",pod="{pod}",code="{code}"}} ')
                out.write(sample + "\n")
        out.write("# EOF\n")


def _phase(group: dict[str, object], interval: float) -> float:
    name = str(group["name"])
    return next((p for prefix, p in PHASES.items() if name.startswith(prefix)), 0.0)


def _instant(prom: PrometheusServer, query: str, t: float) -> list[float]:
    params = urllib.parse.urlencode({"query": query, "time": t})
    status, body, _ = http("GET", f"{prom.url}/api/v1/query?{params}")
    assert status == 200, body
    return [float(r["value"][1]) for r in body["data"]["result"]]


async def test_recorded_period_ratio_agrees_with_raw_and_is_not_an_hour_stale(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """On 8 h of two pods' counters with a counter reset, a 20-minute scrape gap and a
    10-minute error burst after the last hourly sum: the recorded 30-day ratio Sentinel
    reads equals the raw `increase` ratio within 2 %, while the hourly sums alone (an
    hour stale) miss the burst. Measured: 1.1 % apart, all of it the gap (raw `increase`
    interpolates the 20 unscraped minutes, 2 % of the traffic, almost no errors; a
    5-minute rate has no samples there); hour by hour before the burst, to 1e-5."""
    from support.rulebackfill import backfill_chain

    prom = PrometheusServer(tmp_path / "prom")
    prom.workdir.mkdir()
    shop_openmetrics(tmp_path / "shop.om")
    backfill(tmp_path / "shop.om", prom.storage)
    prom.start()
    try:
        config_path = write_config(prom.url, {"shop.yaml": SHOP})
        exported = tmp_path / "exported.yml"
        assert main(["rules", "export", "-c", str(config_path), "-o", str(exported)]) == 0
        import yaml

        groups = yaml.safe_load(exported.read_text())["groups"]
        end = T0 + HOURS * 3600
        backfill_chain(prom, groups, T0, end, tmp_path, phase=_phase, first_level=0)

        raw = (
            'sum(increase(shop_requests_total{namespace="shop", code=~"5.."}[30d]))'
            ' / sum(increase(shop_requests_total{namespace="shop"}[30d]))'
        )
        (raw_ratio,) = _instant(prom, raw, end)
        sel = '{sentinel_service="shop", sentinel_slo="checkout-errors"}'
        hourly = (
            f"last_over_time(slo:sli_bad:increase30d{sel}[2h])"
            f" / last_over_time(slo:sli_total:increase30d{sel}[2h])"
        )
        (hourly_ratio,) = _instant(prom, hourly, end)
        # The burst is fresh: the last hourly sum (7h20m34s) was taken before it.
        assert hourly_ratio < 0.6 * raw_ratio

        text = config_path.read_text()
        config_path.write_text(text + "evaluation: {budget_source: recorded}\n")
        config = load_config(config_path)
        engine = build_engine(config)
        report = await engine.evaluate_once(load_rules(config).slos, end)
        for source in engine.sources.values():
            await source.close()
        budget = report.results[0].budget
        assert budget is not None
        assert budget["error_ratio"] == pytest.approx(raw_ratio, rel=2e-2)
        # Not stale by an hour: ten minutes before the burst ended, the burst's first
        # minutes already show (the 5-minute samples up to that evaluation).
        (early,) = _instant(prom, f"slo:sli_error:ratio_rate30d{sel}", BURST[1] - 240 + 37)
        (before,) = _instant(prom, f"slo:sli_error:ratio_rate30d{sel}", BURST[0] - 300 + 37)
        assert early > 1.3 * before
    finally:
        prom.stop()
