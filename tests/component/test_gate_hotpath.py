"""What the gate keeps between requests to answer a polling pipeline fleet quickly (parsed
query strings, each service's gate SLOs) never changes an answer: a repeated query string
is judged at the new time and audited, a reload's rules apply to the next request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.fakeloki import FakeLoki
from support.gatestack import GateClient, make_client
from support.promserver import PrometheusServer
from support.scenario import at


@pytest.fixture
async def gate(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    async for client in make_client(tmp_path, prometheus.url, monkeypatch, loki_url=loki.url):
        yield client


async def test_a_repeated_query_string_is_judged_at_the_new_time_and_audited(
    gate: GateClient,
) -> None:
    gate.clock.now = at(40)
    first, body, _ = await gate.get(service="chatbot-backend", release="v2")
    assert first == 200 and body["decision"] == "pass", body
    gate.clock.now = at(72)  # the latency regression at minute 60 is inside the 5m windows
    second, body, _ = await gate.get(service="chatbot-backend", release="v2")
    assert second == 412 and body["decision"] == "fail", body
    assert body["evaluated_at"] == "2026-11-20T13:12:00Z"
    _, history, _ = await gate.get("/api/v1/gate/history", service="chatbot-backend")
    assert [h["decision"] for h in history] == ["fail", "pass"]
    assert all(h["inputs"]["release"] == "v2" for h in history)


async def test_a_refused_query_string_stays_refused_when_repeated(gate: GateClient) -> None:
    gate.clock.now = at(40)
    for _ in range(2):
        status, body, _ = await gate.get(service="chatbot-backend", route="/x")
        assert status == 400 and body["parameter"] == "route"


async def test_a_reload_that_drops_a_gate_slo_applies_to_the_next_request(
    gate: GateClient, tmp_path: Path
) -> None:
    gate.clock.now = at(40)
    _, body, _ = await gate.get(service="chatbot-backend")
    assert "http-latency-p99" in {s["slo"] for s in body["slos"]}
    rules = tmp_path / "rules" / "chatbot.yaml"
    text = rules.read_text()
    start = text.index("  - name: http-latency-p99")
    end = text.index("  - name: http-5xx-ratio")
    rules.write_text(text[:start] + text[end:])
    assert await gate.built.daemon.reload()
    gate.clock.now = at(41)
    _, body, _ = await gate.get(service="chatbot-backend")
    names = {s["slo"] for s in body["slos"]}
    assert "http-latency-p99" not in names and "http-5xx-ratio" in names


async def decisions_counted(gate: GateClient) -> dict[str, float]:
    async with gate.session.get(gate.server.make_url("/metrics")) as r:
        text = await r.text()
    counted = {}
    for line in text.splitlines():
        if line.startswith("sentinel_gate_decisions_total{"):
            labels, value = line.rsplit(" ", 1)
            counted[labels.split('"')[1]] = float(value)
    return counted


async def test_every_answered_decision_is_counted_once_in_metrics(gate: GateClient) -> None:
    """`sentinel_gate_decisions_total` counts each answer, the reused verdict of a
    repeated request too, and shows every decision from the start."""
    assert await decisions_counted(gate) == {"pass": 0, "fail": 0, "pending": 0, "marginal": 0}
    gate.clock.now = at(40)
    for _ in range(3):  # the second and third reuse the first's verdict
        assert (await gate.get(service="chatbot-backend"))[0] == 200
    gate.clock.now = at(72)
    assert (await gate.get(service="chatbot-backend"))[0] == 412
    assert (await gate.get(service="chatbot-backend", since="1s"))[0] == 400  # not a decision
    assert await decisions_counted(gate) == {"pass": 3, "fail": 1, "pending": 0, "marginal": 0}
