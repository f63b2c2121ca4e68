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
