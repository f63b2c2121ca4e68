"""Dashboards rendered from the shipped rules: structure, determinism, every query runs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from sentinel.cli.main import main
from sentinel.config import Config, load_config
from sentinel.outputs.dashboards import dump, render_all, write_all
from sentinel.outputs.grafana import GrafanaClient
from sentinel.rules.loader import load_rules
from support.fakegrafana import TOKEN, FakeGrafana
from support.fakeloki import FakeLoki
from support.procs import http
from support.promserver import PrometheusServer
from support.scenario import at


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards")
    (tmp_path / "config.yaml").write_text(
        "loki: {url: 'http://127.0.0.1:9'}\nrules: [rules/*.yaml]\n"
        "dashboards: {deploy_marker: 'changes(up[1m]) > 0'}\n"
    )
    return load_config(tmp_path / "config.yaml")


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(datasource type, expression) of every panel target."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((target["datasource"]["type"], target["expr"]))
    return out


def test_a_dashboard_per_service_and_an_overview(config: Config) -> None:
    dashboards = render_all(load_rules(config), config)
    assert sorted(dashboards) == ["sentinel-chatbot-backend.json", "sentinel-overview.json"]
    service = dashboards["sentinel-chatbot-backend.json"]
    assert service["uid"] == "sentinel-chatbot-backend"
    assert service["schemaVersion"] >= 36 and service["title"]
    rows = [p["title"] for p in service["panels"] if p["type"] == "row"]
    assert rows[0].startswith("chat-latency-p95") and rows[-1] == "error logs"
    ids = [p["id"] for p in service["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in service["panels"]:
        assert {"type", "gridPos", "id"} <= set(panel)
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in ("prometheus", "loki") and target["expr"]
    stat = next(p for p in service["panels"] if p["type"] == "stat")
    steps = stat["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[1] == {"color": "red", "value": 1.5}
    assert stat["links"][0]["url"] == "https://runbooks.example.com/chatbot/latency"
    assert any(a.get("expr") == "changes(up[1m]) > 0" for a in service["annotations"]["list"])
    logs = next(p for p in service["panels"] if p["type"] == "logs")
    assert 'level=~"error|critical"' in logs["targets"][0]["expr"]
    overview = dashboards["sentinel-overview.json"]
    assert overview["links"][0]["url"] == "/d/sentinel-chatbot-backend"


def test_rendering_is_deterministic(config: Config, tmp_path: Path) -> None:
    rules = load_rules(config)
    first = {k: dump(v) for k, v in render_all(rules, config).items()}
    second = {k: dump(v) for k, v in render_all(load_rules(config), config).items()}
    assert first == second
    out = tmp_path / "out"
    assert len(write_all(render_all(rules, config), out)) == 2
    assert write_all(render_all(rules, config), out) == []  # unchanged rules touch no file


def test_a_write_that_fails_half_way_leaves_the_previous_dashboard_whole(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Grafana's file provisioning reads the folder at any moment: a full disk while a
    # changed dashboard is written must leave it the previous file, not a truncated one.
    dashboards = render_all(load_rules(config), config)
    out = tmp_path / "out"
    write_all(dashboards, out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    changed = {
        name: {**d, "title": d.get("title", "") + " (new)"} for name, d in dashboards.items()
    }
    real = Path.write_text

    def disk_full(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_all(changed, out)
    monkeypatch.undo()
    after = {p.name: p.read_text() for p in out.iterdir()}
    assert after == before  # whole, and nothing half-written left beside them
    assert all(json.loads(text) for text in after.values())


def test_every_promql_and_logql_expression_runs(
    config: Config, prometheus: PrometheusServer, loki: FakeLoki
) -> None:
    dashboards = render_all(load_rules(config), config)
    checked = 0
    for dashboard in dashboards.values():
        for kind, expr in targets(dashboard):
            expr = expr.replace("$env", ".*")
            if kind == "prometheus":
                url = (
                    prometheus.url
                    + "/api/v1/query?"
                    + urllib.parse.urlencode({"query": expr, "time": at(30)})
                )
            elif expr.startswith("{"):  # a logs panel: a log query, range only
                params = {"query": expr, "start": int(at(120) * 1e9), "end": int(at(130) * 1e9)}
                url = loki.url + "/loki/api/v1/query_range?" + urllib.parse.urlencode(params)
            else:
                url = (
                    loki.url
                    + "/loki/api/v1/query?"
                    + urllib.parse.urlencode({"query": expr, "time": int(at(30) * 1e9)})
                )
            status, body, _ = http("GET", url)
            assert status == 200, (expr, body)
            assert body["status"] == "success"
            checked += 1
    assert checked >= 15


def test_names_with_quotes_backslashes_newlines_and_vietnamese(
    config: Config, tmp_path: Path
) -> None:
    name = 'trợ-lý "chatbot" \\ tiếng Việt\nđa dòng'
    rules_file = tmp_path / "rules" / "chatbot.yaml"
    text = re.sub(
        r"(?m)^service: chatbot-backend$",
        lambda _: f"service: {json.dumps(name)}",
        rules_file.read_text(),
    )
    text = text.replace(
        "description: 95 % of chat answers",
        'description: Câu trả lời "nhanh" \\ 95 % of chat answers',
    )
    rules_file.write_text(text)
    dashboards = render_all(load_rules(config), config)
    (service,) = [d for k, d in dashboards.items() if k != "sentinel-overview.json"]
    reparsed = json.loads(dump(service))
    assert reparsed["title"] == f"SLOs: {name}"
    assert (
        re.fullmatch(r"sentinel-[a-z0-9-]+-[0-9a-f]{8}", reparsed["uid"])
        and len(reparsed["uid"]) <= 40
    )
    assert 'Câu trả lời "nhanh" \\' in reparsed["panels"][1]["description"]


def test_cli_writes_files(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "build"
    assert main(["dashboards", "-c", str(tmp_path / "config.yaml"), "-o", str(out)]) == 0
    assert "2 dashboards" in capsys.readouterr().out
    assert json.loads((out / "sentinel-overview.json").read_text())["uid"] == "sentinel-overview"


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana().start()
    yield server
    server.stop()


def test_push_only_when_changed_and_errors_surface(config: Config, grafana: FakeGrafana) -> None:
    dashboards = render_all(load_rules(config), config)
    client = GrafanaClient(grafana.url, TOKEN)
    first = asyncio.run(client.push_all(dashboards))
    assert set(first.values()) == {"updated"}
    assert all(p["overwrite"] is True for p in grafana.posts)
    second = asyncio.run(client.push_all(dashboards))
    assert set(second.values()) == {"unchanged"} and len(grafana.posts) == 2
    assert client.health.status == "healthy"

    bad = GrafanaClient(grafana.url, "wrong")
    result = asyncio.run(bad.push_all(dashboards))
    assert all(
        r.startswith("error: GET dashboard: HTTP 401: invalid API key") for r in result.values()
    )
    assert bad.health.status == "unhealthy" and "401" in (bad.health.last_error or "")
    assert "wrong" not in json.dumps(bad.health.as_json())


def test_push_reports_412_version_mismatch(config: Config, grafana: FakeGrafana) -> None:
    dashboards = render_all(load_rules(config), config)
    grafana.fail_next_post = (
        412,
        {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"},
    )
    client = GrafanaClient(grafana.url, TOKEN)
    result = asyncio.run(client.push_all(dashboards))
    assert sorted(result.values())[0] == (
        "error: save dashboard: HTTP 412: The dashboard has been changed by someone else"
    )
    assert client.health.status in ("unhealthy", "healthy")  # the other dashboard went through
    assert "412" in (client.health.last_error or "")
