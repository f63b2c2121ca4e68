"""`sentinel rules export`: promtool accepts it, and for Sloth's examples the recording
rules compute the same SLI error ratios and the alerts use the same windows and
thresholds as Sloth's own generated rules (evaluated on the same Prometheus data)."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from sentinel.cli.main import main
from support.procs import http
from support.promserver import PrometheusServer, find_binary
from support.scenario import SLOTH_METRIC, at

SLOTH = Path(__file__).resolve().parents[1] / "data" / "sloth-examples"
EXAMPLES = [
    "getting-started",
    "no-alerts",
    "multifile",
    "home-wifi",
    "raw-home-wifi",
    "kubernetes-apiserver",
]
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


def export(tmp_path: Path, *args: str) -> dict[str, object]:
    out = tmp_path / "exported.yml"
    assert main(["rules", "export", *args, "-o", str(out)]) == 0
    promtool = find_binary("promtool")
    assert promtool, "promtool missing (apt-get install prometheus)"
    check = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    data: dict[str, object] = yaml.safe_load(out.read_text())
    return data


def test_shipped_rules_export_passes_promtool(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    (tmp_path / "c.yaml").write_text("loki: {url: 'http://127.0.0.1:9'}\nrules: [rules/*.yaml]\n")
    data = export(tmp_path, "-c", str(tmp_path / "c.yaml"))
    names = [g["name"] for g in data["groups"]]  # type: ignore[index]
    assert names == [
        "sentinel-sli-chatbot-backend-http-5xx-ratio",
        "sentinel-period-5m-chatbot-backend-http-5xx-ratio",
        "sentinel-period-1h-chatbot-backend-http-5xx-ratio",
        "sentinel-alerts-chatbot-backend-http-5xx-ratio",
    ]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_sloth_example_exports_and_passes_promtool(tmp_path: Path, example: str) -> None:
    export(tmp_path, "--sloth", str(SLOTH / f"{example}.yml"))


def records(data: dict[str, object], service_label: str) -> dict[tuple[str, str, str], str]:
    """(service, slo, record) -> expr for the SLI error-ratio recordings."""
    out = {}
    for group in data["groups"]:  # type: ignore[attr-defined]
        for rule in group["rules"]:
            if rule.get("record", "").startswith("slo:sli_error:ratio_rate"):
                labels = rule["labels"]
                key = (
                    labels[f"{service_label}_service"],
                    labels[f"{service_label}_slo"],
                    rule["record"],
                )
                out[key] = rule["expr"]
    return out


def thresholds(data: dict[str, object]) -> set[tuple[str, str, float]]:
    """(severity, window, threshold) of every alert condition."""
    out = set()
    for group in data["groups"]:  # type: ignore[attr-defined]
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            severity = (
                "page"
                if "(page)" in rule.get("annotations", {}).get("title", "")
                or rule["labels"].get("tier") == "page"
                else "ticket"
            )
            for window, factor, budget in re.findall(
                r"ratio_rate(\w+)\{[^}]*\} > \(([\d.]+) \* ([\d.e-]+)\)", rule["expr"]
            ):
                out.add((severity, window, round(float(factor) * float(budget), 12)))
    return out


def query(prometheus: PrometheusServer, expr: str) -> list[tuple[str, float]]:
    params = urllib.parse.urlencode({"query": expr, "time": at(200)})
    status, body, _ = http("GET", f"{prometheus.url}/api/v1/query?{params}")
    assert status == 200, body
    return sorted((str(r["metric"]), float(r["value"][1])) for r in body["data"]["result"])


@pytest.mark.parametrize("example", ["getting-started", "no-alerts", "multifile"])
def test_recordings_and_alerts_match_sloth(
    tmp_path: Path, prometheus: PrometheusServer, example: str
) -> None:
    spec = (
        (SLOTH / f"{example}.yml")
        .read_text()
        .replace("http_request_duration_seconds_count", SLOTH_METRIC)
    )
    (tmp_path / "spec.yml").write_text(spec)
    ours = export(tmp_path, "--sloth", str(tmp_path / "spec.yml"))
    gen = (
        (SLOTH / "_gen" / f"{example}.yml")
        .read_text()
        .replace("http_request_duration_seconds_count", SLOTH_METRIC)
    )
    theirs = {"groups": [g for doc in yaml.safe_load_all(gen) if doc for g in doc["groups"]]}
    our_records, their_records = records(ours, "sentinel"), records(theirs, "sloth")
    compared = 0
    for (service, slo, record), expr in their_records.items():
        window = record.removeprefix("slo:sli_error:ratio_rate")
        if window not in WINDOWS:
            continue  # the period ratio: Sentinel weights by traffic, Sloth averages (by design)
        mine = our_records[(service, slo, record)]
        their_values, our_values = query(prometheus, expr), query(prometheus, mine)
        assert len(their_values) == len(our_values) == 1
        assert our_values[0][1] == pytest.approx(their_values[0][1], rel=1e-9, abs=1e-15)
        compared += 1
    assert compared >= len(WINDOWS)
    assert thresholds(ours) == thresholds(theirs)


def test_sloth_period_is_traffic_weighted_not_an_average(tmp_path: Path) -> None:
    data = export(tmp_path, "--sloth", str(SLOTH / "getting-started.yml"))
    period = next(
        r
        for g in data["groups"]
        for r in g["rules"]  # type: ignore[attr-defined]
        if r.get("record") == "slo:sli_error:ratio_rate30d"
    )
    # bad events over total events (hourly sums plus the fresh five-minute samples)
    assert "slo:sli_bad:increase30d" in period["expr"].split("\n/\n")[0]
    assert "slo:sli_total:increase30d" in period["expr"].split("\n/\n")[1]
    assert "count_over_time" not in period["expr"]
