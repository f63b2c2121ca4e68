"""The deploy gate's canary mode over real HTTP: canary and baseline series in a real
Prometheus (tests/support/canary_data.py), their answer logs in the protocol-faithful Loki.

Every scenario is asked 15 minutes after the deploy (`since` = minute 1, now = minute 16):
the canary has had 9,000 requests and 900 answers, the baseline 19 times that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import _require_prometheus
from support import canary_data
from support.canary_data import SCENARIOS, at, rule_file
from support.fakeloki import FakeLoki
from support.gatestack import TOKEN, GateClient, make_client
from support.held import Held
from support.promserver import PrometheusServer, backfill

SINCE = str(int(at(1)))


@pytest.fixture(scope="module")
def canary_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    _require_prometheus()
    workdir = tmp_path_factory.mktemp("canary-prometheus")
    data = workdir / "canary.om"
    canary_data.write_file(data)
    server = PrometheusServer(workdir)
    backfill(data, server.storage)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def canary_loki() -> Iterator[FakeLoki]:
    server = FakeLoki().start()
    for stream, lines in canary_data.log_streams():
        server.push(stream, lines)
    yield server
    server.stop()


@pytest.fixture
async def gate(
    tmp_path: Path,
    canary_prometheus: PrometheusServer,
    canary_loki: FakeLoki,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[GateClient]:
    rules = {f"{name}.yaml": rule_file(name) for name in SCENARIOS}
    # The in-process fake Loki evaluates LogQL in Python: on a loaded 2-core CI machine an
    # answer took over 2 s, and these tests judge data, not timeouts.
    async for client in make_client(
        tmp_path,
        canary_prometheus.url,
        monkeypatch,
        "gate: {deadline: 60s}\n",
        loki_url=canary_loki.url,
        rules=rules,
        source_extra="retries: 0, timeout: 30s",
    ):
        client.clock.now = at(16)
        yield client


def by_slo(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["slo"]: s for s in body["canary"]["slos"]}


async def test_a_canary_like_its_baseline_passes_with_every_slo_compared(gate: GateClient) -> None:
    status, body, _ = await gate.get(service="canary-same", since=SINCE, mode="canary")
    assert status == 200, body["reasons"]
    assert body["decision"] == "pass" and body["mode"] == "canary"
    assert body["canary"]["score"] == 100
    slos = by_slo(body)
    assert set(slos) == {"chat-latency-p95", "http-5xx-ratio", "fallback-answer-rate"}
    ratio = slos["http-5xx-ratio"]
    assert ratio["verdict"] == "pass"
    assert ratio["canary"]["events"] == pytest.approx(9000, rel=0.02)
    assert ratio["baseline"]["events"] == pytest.approx(171000, rel=0.02)
    assert ratio["canary"]["value"] == pytest.approx(0.005, rel=0.05)
    assert ratio["test"] == "z_test" and ratio["p_value"] > 0.1
    assert ratio["selectors"] == {"canary": {"track": "canary"}, "baseline": {"track": "stable"}}
    assert 'track="canary"' in ratio["query"] and 'track="stable"' in ratio["query"]
    latency = slos["chat-latency-p95"]
    assert latency["canary"]["value"] == pytest.approx(1.464, abs=0.01)
    assert latency["power"] >= 0.95
    # The absolute gate's paths stay: slos[].status is the comparison's verdict.
    assert {s["status"] for s in body["slos"]} == {"pass"}


async def test_a_canary_with_twice_the_5xx_ratio_fails_naming_the_slo(gate: GateClient) -> None:
    status, body, _ = await gate.get(service="canary-5xx", since=SINCE, mode="canary")
    assert status == 412
    assert body["decision"] == "fail"
    assert body["reasons"][0].startswith("http-5xx-ratio: canary 1 % vs baseline 0.5 % (+100 %")
    ratio = by_slo(body)["http-5xx-ratio"]
    assert ratio["verdict"] == "fail" and ratio["margin_p_value"] < 0.01
    assert ratio["effect"] == pytest.approx(1.0, rel=0.1)
    assert by_slo(body)["chat-latency-p95"]["verdict"] == "pass"


async def test_a_canary_with_a_p95_half_again_slower_fails(gate: GateClient) -> None:
    status, body, _ = await gate.get(service="canary-slow", since=SINCE, mode="canary")
    assert status == 412
    latency = by_slo(body)["chat-latency-p95"]
    assert latency["verdict"] == "fail"
    assert latency["canary"]["value"] == pytest.approx(2.3125, abs=0.02)
    assert latency["baseline"]["value"] == pytest.approx(1.464, abs=0.01)
    assert [r.split(":")[0] for r in body["reasons"]] == ["chat-latency-p95"]
    assert "canary P95 2.31 s vs baseline 1.46 s (+58 %" in body["reasons"][0]


async def test_a_canary_with_three_times_the_fallback_rate_in_its_logs_fails(
    gate: GateClient, canary_loki: FakeLoki
) -> None:
    status, body, _ = await gate.get(service="canary-fallback", since=SINCE, mode="canary")
    assert status == 412
    fallback = by_slo(body)["fallback-answer-rate"]
    assert fallback["verdict"] == "fail"
    assert fallback["canary"]["value"] == pytest.approx(0.06, rel=0.05)
    assert fallback["baseline"]["value"] == pytest.approx(0.02, rel=0.05)
    assert 'track="canary"' in fallback["query"] and "count_over_time" in fallback["query"]
    assert [r.split(":")[0] for r in body["reasons"]] == ["fallback-answer-rate"]


async def test_a_bad_hour_on_both_releases_passes_where_the_absolute_gate_fails(
    gate: GateClient,
) -> None:
    status, body, _ = await gate.get(service="canary-badhour", since=SINCE)
    assert status == 412, "the absolute gate judges thresholds: 5 % 5xx breaches 0.5 %"
    status, body, _ = await gate.get(service="canary-badhour", since=SINCE, mode="canary")
    assert status == 200, body["reasons"]
    assert body["decision"] == "pass"
    assert by_slo(body)["http-5xx-ratio"]["baseline"]["value"] == pytest.approx(0.05, rel=0.05)


async def test_too_little_canary_traffic_is_pending_with_the_counts_still_needed(
    gate: GateClient,
) -> None:
    status, body, headers = await gate.get(service="canary-trickle", since=SINCE, mode="canary")
    assert status == 503 and headers["Retry-After"] == "30"
    assert body["decision"] == "pending"
    ratio = by_slo(body)["http-5xx-ratio"]
    assert ratio["verdict"] == "pending"
    assert ratio["canary"]["events"] == pytest.approx(15, abs=1)
    assert ratio["needed"]["canary"] == pytest.approx(85, abs=1)
    assert ratio["needed"]["baseline"] == 0
    assert "http-5xx-ratio: canary needs 85 more events (has 15)" in body["reasons"]


async def test_enough_events_but_too_little_power_is_pending_with_an_estimate(
    gate: GateClient,
) -> None:
    gate.clock.now = at(4)  # 3 minutes: 1,800 canary requests, 180 answers
    status, body, _ = await gate.get(service="canary-same", since=SINCE, mode="canary")
    assert status == 503 and body["decision"] == "pending"
    ratio = by_slo(body)["http-5xx-ratio"]
    assert ratio["verdict"] == "pending" and ratio["power"] < 0.95
    assert ratio["needed"]["canary"] > 3000
    assert "too little traffic to tell a canary at 2x the baseline ratio apart" in ratio["reason"]


async def test_a_canary_without_data_fails_closed(gate: GateClient) -> None:
    status, body, _ = await gate.get(service="canary-nodata", since=SINCE, mode="canary")
    assert status == 412
    assert (
        "http-5xx-ratio: canary has no data (no series match the selector) (no_data: fail)"
        in (body["reasons"])
    )
    assert {s["verdict"] for s in body["canary"]["slos"]} == {"fail"}


async def test_request_selectors_override_the_rule_file_defaults(gate: GateClient) -> None:
    status, body, _ = await gate.get(
        service="canary-5xx", since=SINCE, canary="version:v2", baseline="version:v1"
    )
    assert status == 412
    ratio = by_slo(body)["http-5xx-ratio"]
    assert ratio["selectors"] == {"canary": {"version": "v2"}, "baseline": {"version": "v1"}}
    assert 'version="v2"' in ratio["query"] and "track=" not in ratio["query"]


async def test_flagger_metadata_asks_for_the_canary_comparison(gate: GateClient) -> None:
    payload = {
        "name": "canary-5xx",
        "namespace": "prod",
        "phase": "Progressing",
        "metadata": {
            "token": TOKEN,
            "since": SINCE,
            "canary": "version:v2",
            "baseline": "version:v1",
        },
    }
    status, body, _ = await gate.post(payload)
    assert status == 412 and body["mode"] == "canary"
    payload["name"] = "canary-same"
    status, body, _ = await gate.post(payload)
    assert status == 200


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"canary": "pod:x"}, "canary: label 'pod' is not in gate.canary.labels"),
        ({"canary": "version"}, "canary: expected label:value"),
        ({"canary": "version:v1", "baseline": "version:v1"}, "baseline: selects the same series"),
        ({"mode": "absolute", "canary": "version:v2"}, "mode: canary/baseline need mode=canary"),
        ({"mode": "sideways"}, "mode: expected 'canary' or 'absolute'"),
    ],
    ids=["label-not-allowed", "no-colon", "same-sides", "absolute-with-sides", "bad-mode"],
)
async def test_bad_canary_requests_are_400_naming_the_parameter(
    gate: GateClient, params: dict[str, str], error: str
) -> None:
    status, body, _ = await gate.get(service="canary-same", since=SINCE, **params)
    assert status == 400
    assert error in body["error"]


async def test_a_side_without_a_selector_anywhere_is_400_saying_where_to_set_it(
    tmp_path: Path, canary_prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = rule_file("canary-5xx").replace("  baseline: {track: stable}\n", "")
    async for client in make_client(
        tmp_path, canary_prometheus.url, monkeypatch, rules={"x.yaml": text}
    ):
        client.clock.now = at(16)
        status, body, _ = await client.get(
            service="canary-5xx", since=SINCE, mode="canary", slo="http-5xx-ratio"
        )
        assert status == 400
        assert body["parameter"] == "baseline"
        assert "give baseline=label:value, or set canary.baseline in" in body["error"]


async def test_a_selector_value_is_escaped_and_cannot_select_other_traffic(
    gate: GateClient,
) -> None:
    status, body, _ = await gate.get(
        service="canary-same", since=SINCE, canary='version:v2"}or vector(1)', baseline="version:v1"
    )
    assert status == 412
    assert {s["verdict"] for s in body["canary"]["slos"]} == {"fail"}
    assert all("canary has no data" in s["reason"] for s in body["canary"]["slos"])


async def test_a_canary_decision_is_recorded_with_its_selectors(gate: GateClient) -> None:
    await gate.get(service="canary-5xx", since=SINCE, canary="version:v2", release="v2")
    status, history, _ = await gate.get("/api/v1/gate/history", service="canary-5xx")
    assert status == 200
    (row,) = history
    assert row["decision"] == "fail"
    assert row["inputs"]["mode"] == "canary"
    assert row["inputs"]["canary"] == {"version": "v2"}
    assert row["inputs"]["baseline"] is None  # the rule file's default was used


async def test_sentinel_gate_prints_the_comparison_as_a_table(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentinel.cli.client import gate as gate_cli

    monkeypatch.setenv("SENTINEL_TOKEN", TOKEN)
    params = {
        "service": "canary-5xx",
        "since": SINCE,
        "canary": "version:v2",
        "baseline": "version:v1",
    }
    assert await gate_cli(gate.url, params, 0, 0.1) == 1
    out = capsys.readouterr().out
    header, *rows = [
        line for line in out.splitlines() if line.startswith(("SLO", "http", "chat", "fall"))
    ]
    assert header.split() == [
        "SLO",
        "VERDICT",
        "CANARY",
        "BASELINE",
        "EFFECT",
        "TOLERATED",
        "P",
        "CANARY-N",
        "BASELINE-N",
    ]
    row = next(r for r in rows if r.startswith("http-5xx-ratio"))
    assert row.split()[1:4] == ["FAIL", "1.00%", "0.50%"]
    assert "score" in out


async def test_health_and_other_requests_are_answered_while_a_comparison_runs(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A comparison held until a health check has been answered stands in for a slow one
    # (the first used to import scipy.stats, ~1.6 s of CPU). On the
    # event loop it would hold the loop itself, and the health check could not be asked.
    from sentinel.gate import canary as gate_canary

    held = Held(gate_canary.compare)
    monkeypatch.setattr(gate_canary, "compare", held)
    asked = asyncio.ensure_future(gate.get(service="canary-5xx", since=SINCE, mode="canary"))
    await held.wait_started()
    status, _, _ = await gate.get("/health/live")
    held.release()
    assert status == 200
    status, body, _ = await asked
    assert held.released == [True], "the comparison held the event loop"
    assert status == 412 and body["decision"] == "fail"


async def test_pipelines_polling_together_share_one_comparison(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.gate import canary as gate_canary

    held = Held(gate_canary.compare, every=True)
    monkeypatch.setattr(gate_canary, "compare", held)
    ask = lambda: gate.get(service="canary-5xx", since=SINCE, mode="canary")  # noqa: E731
    first = asyncio.ensure_future(ask())
    await held.wait_started()
    others = [asyncio.ensure_future(ask()) for _ in range(3)]
    await asyncio.sleep(0.5)  # they reach the comparison the first one started
    held.release()
    answers = [await first] + [await o for o in others]
    assert [a[1]["decision"] for a in answers] == ["fail"] * 4
    assert held.calls == 1


async def test_a_comparison_slower_than_the_deadline_is_pending_and_kept_for_the_retry(
    gate: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.gate import canary as gate_canary

    object.__setattr__(gate.built.daemon.config.gate, "deadline", 2.0)
    held = Held(gate_canary.compare, every=True)
    monkeypatch.setattr(gate_canary, "compare", held)
    for _ in range(30):  # a loaded machine may need retries for the evaluation first
        status, body, _ = await gate.get(service="canary-5xx", since=SINCE, mode="canary")
        if held.started.is_set():
            break
    assert held.started.is_set()
    assert status == 503 and body["decision"] == "pending"
    assert "comparison still running after 2s" in body["reasons"][0]
    held.release()
    for _ in range(50):
        status, body, _ = await gate.get(service="canary-5xx", since=SINCE, mode="canary")
        if body["decision"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert status == 412 and body["decision"] == "fail"
    assert held.calls == 1  # the retry got the comparison that was kept, not a new one
