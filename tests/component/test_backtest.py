"""`sentinel backtest` over the scenario reports the incidents the data holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from sentinel.cli.main import main
from support.fakeloki import FakeLoki
from support.promserver import PrometheusServer
from support.scenario import at


def test_backtest_reports_the_scenario_incidents(
    tmp_path: Path,
    prometheus: PrometheusServer,
    loki: FakeLoki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"prometheus: {{url: '{prometheus.url}'}}\nloki: {{url: '{loki.url}', timeout: 60s}}\nrules: [rules/*.yaml]\n"
    )
    code = main(
        [
            "backtest",
            "-c",
            str(config),
            "--from",
            str(at(30)),
            "--to",
            str(at(230)),
            "--step",
            "1m",
            "--format",
            "json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == []
    fired = {
        (i["slo"], i["alert"].split("tier=")[-1].rstrip("}") if "tier=" in i["alert"] else ""): i
        for i in report["incidents"]
    }
    # Latency regression 60-90: breach from 61, `for: 2m` -> fires 63, resolves once the 5m window clears (+5m keep_firing).
    chat = fired[("chat-latency-p95", "")]
    assert chat["fired_at"] == "2026-11-20T13:03:00Z"
    assert (
        chat["resolved_at"] is not None
        and "2026-11-20T13:35:00Z" <= chat["resolved_at"] <= "2026-11-20T13:41:00Z"
    )
    assert chat["peak_value"] > 1.5
    # 5xx burst 120-150: the threshold alert; 5 % errors burn a 0.5 % budget 10x, which
    # opens a ticket (1x over 3d+6h) but is under both page factors (14.4x, 6x).
    assert fired[("http-5xx-ratio", "")]["fired_at"] == "2026-11-20T14:02:00Z"
    tiers = {k[1] for k in fired if k[0] == "http-5xx-ratio"}
    assert any(t.startswith("ticket") for t in tiers)
    assert not any(t.startswith("page") for t in tiers)
    # Fallback surge 180-210 from the logs (for: 5m).
    assert "2026-11-20T15:0" in fired[("fallback-answer-rate", "")]["fired_at"]
    assert report["pages"] >= 2 and report["tickets"] >= 1
    assert report["time_in_breach_seconds"]["chatbot-backend/chat-latency-p95"] >= 30 * 60
    consumed = report["budget_consumed"]["chatbot-backend/http-5xx-ratio"]
    # 30 min of 5 % errors in 200 min with traffic (idle 210-230): 0.05*30/180 / 0.005.
    assert consumed == pytest.approx(0.05 * 30 / 180 / 0.005, rel=0.02)


def test_backtest_table(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"prometheus: {{url: '{prometheus.url}'}}\nloki: {{url: '{loki.url}', timeout: 60s}}\nrules: [rules/*.yaml]\n"
    )
    assert (
        main(
            [
                "backtest",
                "-c",
                str(config),
                "--from",
                "2026-11-20T12:50:00Z",
                "--to",
                "2026-11-20T13:50:00Z",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "chatbot-backend/chat-latency-p95" in out and "page" in out
