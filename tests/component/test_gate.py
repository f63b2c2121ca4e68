"""The deploy gate over real HTTP, against the real Prometheus holding the scenario."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.fakeloki import FakeLoki
from support.gatestack import TOKEN, GateClient, make_client
from support.promserver import PrometheusServer
from support.scenario import at


@pytest.fixture
async def gate(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    async for client in make_client(tmp_path, prometheus.url, monkeypatch, loki_url=loki.url):
        yield client


async def test_healthy_release_passes(gate: GateClient) -> None:
    gate.clock.now = at(40)
    status, body, _ = await gate.get(
        service="chatbot-backend", env="prod", since="2026-11-20T12:20:00Z", release="v1.2.3"
    )
    assert status == 200, body
    assert body["decision"] == "pass"
    assert body["window"] == {"from": "2026-11-20T12:20:00Z", "to": "2026-11-20T12:40:00Z"}
    assert body["reasons"] == []
    assert {s["slo"] for s in body["slos"]} == {
        "chat-latency-p95",
        "http-latency-p95",
        "http-latency-p99",
        "http-5xx-ratio",
        "fallback-answer-rate",
        "error-log-rate",
    }
    assert all(s["status"] == "ok" and s["events"] > 0 for s in body["slos"])


async def test_latency_regression_after_deploy_fails_with_reason(gate: GateClient) -> None:
    gate.clock.now = at(72)
    status, body, _ = await gate.get(service="chatbot-backend", since=str(int(at(60))))
    assert status == 412
    assert body["decision"] == "fail"
    assert any(
        r.startswith("chat-latency-p95 = 2.25 s > 1.5 s over 5m since deploy")
        for r in body["reasons"]
    ), body["reasons"]


async def test_window_is_since_deploy_when_shorter_than_the_slo_window(gate: GateClient) -> None:
    gate.clock.now = at(62)
    _, body, _ = await gate.get(
        service="chatbot-backend", since=str(int(at(60))), slo="http-5xx-ratio"
    )
    (slo,) = body["slos"]
    assert slo["window"] == 120
    assert slo["events"] == pytest.approx(200 * 8)


async def test_no_traffic_is_pending_with_retry_after(gate: GateClient) -> None:
    gate.clock.now = at(225)
    status, body, headers = await gate.get(service="chatbot-backend", since=str(int(at(212))))
    assert status == 503
    assert body["decision"] == "pending"
    assert headers["Retry-After"] == "30"
    assert body["reasons"]


async def test_too_soon_after_deploy_is_pending(gate: GateClient) -> None:
    gate.clock.now = at(40)
    status, body, _ = await gate.get(service="chatbot-backend", since=str(int(at(40) - 30)))
    assert status == 503
    assert body["reasons"] == ["only 30s since deploy"]


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"service": "nope"}, 404, "service: unknown service 'nope'"),
        ({}, 400, "service: is required"),
        ({"service": "chatbot-backend", "since": "yesterday"}, 400, "since: expected RFC 3339"),
        (
            {"service": "chatbot-backend", "bad-label": "x"},
            400,
            "bad-label: not a valid label name",
        ),
        (
            {"service": "chatbot-backend", "slo": "nope"},
            400,
            "slo: unknown SLO(s) for this service: nope",
        ),
        ({"service": 'foo"}or vector(1)'}, 404, "unknown service"),
    ],
    ids=[
        "unknown-service",
        "missing-service",
        "bad-since",
        "bad-label",
        "unknown-slo",
        "injection-in-service",
    ],
)
async def test_bad_requests_name_the_parameter(
    gate: GateClient, params: dict[str, str], status: int, error: str
) -> None:
    got, body, _ = await gate.get(**params)
    assert got == status
    assert error in body["error"]


async def test_injection_in_a_label_value_is_escaped_and_cannot_pass(gate: GateClient) -> None:
    gate.clock.now = at(40)
    status, body, _ = await gate.get(
        service="chatbot-backend", env='prod"}or vector(1)', since=str(int(at(20)))
    )
    assert status == 503 and body["decision"] == "pending"
    assert all(s["status"] == "no_data" for s in body["slos"])


async def test_missing_or_wrong_token_is_401(gate: GateClient) -> None:
    assert (await gate.get(token=None, service="chatbot-backend"))[0] == 401
    assert (await gate.get(token="wrong", service="chatbot-backend"))[0] == 401


async def test_every_decision_is_recorded(gate: GateClient) -> None:
    gate.clock.now = at(40)
    await gate.get(service="chatbot-backend", since=str(int(at(20))), revision="42")
    gate.clock.now = at(72)
    await gate.get(service="chatbot-backend", since=str(int(at(60))))
    status, history, _ = await gate.get("/api/v1/gate/history", service="chatbot-backend")
    assert status == 200
    assert [h["decision"] for h in history] == ["fail", "pass"]
    assert [h["count"] for h in history] == [1, 1]
    assert history[1]["inputs"]["revision"] == "42"
    assert history[1]["inputs"]["since"] == at(20)


async def test_concurrent_identical_requests_share_one_evaluation(
    gate: GateClient, prometheus: PrometheusServer, loki: FakeLoki
) -> None:
    gate.clock.now = at(41)
    before, loki_before = prometheus.query_count(), len(loki.queries)
    answers = await asyncio.gather(
        *(gate.get(service="chatbot-backend", since=str(int(at(21)))) for _ in range(20))
    )
    assert {a[0] for a in answers} == {200}
    # One query per gate SLO (4 PromQL, 2 LogQL), not 20 times that.
    assert prometheus.query_count() - before == 4
    assert len(loki.queries) - loki_before == 2


async def test_prometheus_down_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {source_down_after: 0s}\n"
    async for client in make_client(tmp_path, "http://127.0.0.1:9", monkeypatch, extra):
        client.clock.now = at(40)
        status, body, _ = await client.get(service="chatbot-backend", since=str(int(at(20))))
        assert status == 412
        assert body["decision"] == "fail"
        assert any("source down" in r for r in body["reasons"])


async def test_the_gates_own_source_clients_show_in_health_without_degrading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate queries through clients of its own (gate.max_in_flight): when a pipeline
    is told `source down`, /health/detailed says which client failed and why, as the
    last outcome of a query (it does not keep the daemon degraded while nobody asks)."""
    extra = "gate: {source_down_after: 0s}\n"
    async for client in make_client(tmp_path, "http://127.0.0.1:9", monkeypatch, extra):
        _, before, _ = await client.get("/health/detailed")
        assert not [name for name in before["checks"] if name.startswith("gate:")]
        client.clock.now = at(40)
        await client.get(service="chatbot-backend", since=str(int(at(20))))
        _, after, _ = await client.get("/health/detailed")
        check = after["checks"]["gate:prometheus"]
        assert check["status"] == "unhealthy" and check["informational"] is True
        assert "cannot connect" in check["last_error"]
        assert after["status"] == before["status"]


async def test_prometheus_briefly_down_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {source_down_after: 10m}\n"
    async for client in make_client(tmp_path, "http://127.0.0.1:9", monkeypatch, extra):
        status, body, _ = await client.get(service="chatbot-backend", since=str(int(at(20))))
        assert status == 503
        assert any("temporarily unavailable" in r for r in body["reasons"])


async def test_cli_gate_exit_codes(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentinel.cli.client import gate as gate_cli

    monkeypatch.setenv("SENTINEL_TOKEN", TOKEN)
    url = str(gate.server.make_url("/"))
    gate.clock.now = at(40)
    assert (
        await gate_cli(url, {"service": "chatbot-backend", "since": str(int(at(20)))}, 0, 0.1) == 0
    )
    gate.clock.now = at(72)
    assert (
        await gate_cli(url, {"service": "chatbot-backend", "since": str(int(at(60)))}, 0, 0.1) == 1
    )
    assert "chat-latency-p95 = 2.25 s > 1.5 s" in capsys.readouterr().out
    gate.clock.now = at(225)
    params = {"service": "chatbot-backend", "since": str(int(at(212)))}
    assert await gate_cli(url, params, 0.3, 0.1) == 3
    assert await gate_cli(url, {"service": "nope"}, 0, 0.1) == 2
    monkeypatch.setenv("SENTINEL_TOKEN", "wrong")
    assert await gate_cli(url, {"service": "chatbot-backend"}, 0, 0.1) == 2


async def test_silences_api_and_cli(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentinel.cli.client import silence

    url = str(gate.server.make_url("/"))
    payload = {
        "matchers": [{"name": "service", "value": "chatbot-backend"}],
        "duration": "2h",
        "author": "oncall",
        "comment": "planned maintenance",
    }
    monkeypatch.delenv("SENTINEL_TOKEN", raising=False)
    assert await silence(url, "add", payload, None) == 2  # the admin API needs the token
    monkeypatch.setenv("SENTINEL_TOKEN", TOKEN)
    assert await silence(url, "add", payload, None) == 0
    created = capsys.readouterr().out
    silence_id = created.split('"id": "')[1].split('"')[0]
    assert await silence(url, "list", None, None) == 0
    listed = capsys.readouterr().out
    assert f"{silence_id}  active" in listed and "service=chatbot-backend" in listed
    assert await silence(url, "expire", None, silence_id) == 0
    status, body, _ = await gate.get("/api/v1/silences")
    assert status == 200 and body[0]["status"] == "expired"
    bad = {**payload, "matchers": []}
    assert await silence(url, "add", bad, None) == 2
    assert "at least one matcher" in capsys.readouterr().err


def test_identical_decisions_share_an_audit_row_with_a_count(tmp_path: Path) -> None:
    from sentinel.alerting.store import Store

    store = Store(tmp_path / "s.db")
    rows = [
        (100.0 + i, "svc", "pass", '{"service": "svc"}', '{"decision": "pass"}') for i in range(5)
    ]
    rows.append((106.0, "svc", "fail", '{"service": "svc"}', '{"decision": "fail"}'))
    store.record_gates(rows)
    history = store.gate_history("svc")
    assert [(h["decision"], h["count"], h["at"], h["last_at"]) for h in history] == [
        ("fail", 1, 106.0, 106.0),
        ("pass", 5, 100.0, 104.0),
    ]
    assert history[1]["result"] == {"decision": "pass"}
    assert store.db.execute("SELECT COUNT(*) FROM gate_blobs").fetchone()[0] == 3
    store.close()
