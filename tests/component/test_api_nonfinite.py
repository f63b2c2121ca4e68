"""An SLI that divides by zero (`vector(1)/vector(0)` is +Inf in Prometheus) leaves every
JSON API answering 200 with strict JSON (RFC 8259: no NaN/Infinity): the SLO list, the
gate, and the alerts with their stored incidents. Whether the evaluation calls +Inf a
breach or no_data, no API may break on it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.gatestack import GateClient, make_client
from support.promserver import PrometheusServer

DIVIDE_BY_ZERO = """\
    version: sentinel/v1
    service: divzero
    slos:
      - name: infinite
        sli:
          promql: {query: "vector(1) / vector(0)"}
        threshold: 0.5
        window: 5m
"""


def strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
async def divzero(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    rules = {"divzero.yaml": DIVIDE_BY_ZERO}
    async for client in make_client(tmp_path, prometheus.url, monkeypatch, rules=rules):
        group = client.built.daemon.rules.groups[0].name
        await client.built.daemon.run_group(group)  # a scheduled cycle: results, alerts
        await client.built.daemon.run_group(group)
        yield client


async def get_text(client: GateClient, path: str, **params: str) -> tuple[int, str]:
    headers = {"Authorization": "Bearer gate-test-token"}
    async with client.session.get(
        client.server.make_url(path), params=params, headers=headers
    ) as r:
        return r.status, await r.text()


async def test_the_slo_list_is_strict_json(divzero: GateClient) -> None:
    status, text = await get_text(divzero, "/api/v1/slos")
    assert status == 200
    (result,) = strict(text)
    assert result["slo"] == "infinite" and result["value"] is None
    for params in ({"service": "divzero"}, {"status": result["status"]}):
        status, text = await get_text(divzero, "/api/v1/slos", **params)
        assert status == 200 and len(strict(text)) == 1


async def test_the_gate_answers_a_verdict_in_strict_json(divzero: GateClient) -> None:
    status, text = await get_text(divzero, "/api/v1/gate", service="divzero")
    assert status in (412, 503)  # breach or no data: never pass, never a 500
    body = strict(text)
    assert body["decision"] in ("fail", "pending")
    assert body["slos"][0]["value"] is None
    status, text = await get_text(divzero, "/api/v1/gate/history", service="divzero")
    assert status == 200 and strict(text)[0]["decision"] == body["decision"]


async def test_alerts_and_incidents_are_strict_json(divzero: GateClient) -> None:
    # As an earlier version stored it: an incident whose last value was +Inf.
    divzero.built.store.db.execute(
        "INSERT INTO incidents(id, alert_key, service, slo, severity, labels, started_at, "
        "last_value, threshold) VALUES ('i1', 'divzero/infinite', 'divzero', 'infinite', "
        "'page', '{}', 1795178400, 9e999, 0.5)"
    )
    status, text = await get_text(divzero, "/api/v1/alerts")
    assert status == 200
    body = strict(text)
    assert [a["key"] for a in body["alerts"]] == ["divzero/infinite"]
    assert [(i["id"], i["last_value"]) for i in body["incidents"]] == [("i1", None)]
