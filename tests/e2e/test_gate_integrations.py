"""Every way the README wires the gate into a pipeline, against a running gate over real
loopback HTTP: curl with --retry, `sentinel gate --wait`, Argo Rollouts' `web` metric
provider (its status and jsonPath handling), and Flagger's confirm-promotion POST with
the payload its docs give (`{name, namespace, phase, metadata}`, token in metadata)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.evaluate.slo import rfc3339
from support.fakeloki import FakeLoki
from support.gatestack import TOKEN, GateClient, make_client
from support.promserver import PrometheusServer
from support.scenario import at

ASK = {"service": "chatbot-backend", "env": "prod"}


@pytest.fixture
async def gate(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    # Short Retry-After: the clients below honour it, and a test must not wait 30 s.
    monkeypatch.setattr("sentinel.gate.service.RETRY_AFTER", "1")
    async for client in make_client(tmp_path, prometheus.url, monkeypatch, loki_url=loki.url):
        yield client


def requests_seen(gate: GateClient) -> int:
    gate.built.gate.flush_audit()
    return sum(h["count"] for h in gate.built.store.gate_history(None, 1000))


async def move_clock_after_first_request(gate: GateClient, to: float) -> None:
    """The deploy matures while the client waits: first answer pending, later pass."""
    for _ in range(500):
        if requests_seen(gate):
            gate.clock.now = to
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the client never asked")


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- curl ---------------------------------------------------------------------------------


def curl_binary() -> str:
    found = shutil.which("curl")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("curl missing: .ci/run must apt-get install curl")
    pytest.skip("curl is not installed")


async def curl(gate: GateClient, since: float) -> tuple[int, str, str]:
    # The README's command: fails on 412, retries 503 (honouring Retry-After).
    url = f"{gate.url}/api/v1/gate?service=chatbot-backend&env=prod&since={rfc3339(since)}"
    return await run(
        curl_binary(),
        "-fsS",
        "--retry",
        "20",
        "--retry-delay",
        "30",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        url,
    )


async def test_curl_with_retry_exits_0_on_pass(gate: GateClient) -> None:
    gate.clock.now = at(40)
    code, out, _ = await curl(gate, at(20))
    assert code == 0
    assert '"decision": "pass"' in out


async def test_curl_with_retry_stops_at_once_on_fail(gate: GateClient) -> None:
    gate.clock.now = at(72)
    code, _, err = await curl(gate, at(60))
    assert code == 22 and "412" in err
    assert requests_seen(gate) == 1


async def test_curl_with_retry_waits_through_pending_until_pass(gate: GateClient) -> None:
    gate.clock.now = at(20) + 30  # 30 s after the deploy: pending
    mover = asyncio.create_task(move_clock_after_first_request(gate, at(40)))
    code, out, _ = await curl(gate, at(20))
    await mover
    assert code == 0 and '"decision": "pass"' in out
    assert requests_seen(gate) >= 2


# -- sentinel gate --wait ---------------------------------------------------------------


async def sentinel_gate(gate: GateClient, *args: str) -> tuple[int, str, str]:
    return await run(
        sys.executable,
        "-m",
        "sentinel",
        "gate",
        "--url",
        gate.url,
        "--service",
        "chatbot-backend",
        "--env",
        "prod",
        *args,
        env={"SENTINEL_TOKEN": TOKEN},
    )


async def test_sentinel_gate_wait_polls_through_pending_and_exits_0_on_pass(
    gate: GateClient,
) -> None:
    gate.clock.now = at(20) + 30
    mover = asyncio.create_task(move_clock_after_first_request(gate, at(40)))
    since = rfc3339(at(20))
    code, out, _ = await sentinel_gate(gate, "--since", since, "--wait", "60s", "--interval", "1s")
    await mover
    assert code == 0
    assert re.search(r"^\d\d:\d\d:\d\d pending\n  - only 30s since deploy\n", out, re.M), out
    assert re.search(r"^\d\d:\d\d:\d\d pass$", out, re.M), out


@pytest.mark.parametrize(
    ("now", "since", "wait", "code"),
    [
        (at(72), at(60), "0s", 1),  # fail
        (at(225), at(212), "2s", 3),  # no traffic: still pending at the deadline
    ],
    ids=["fail-exits-1", "still-pending-exits-3"],
)
async def test_sentinel_gate_exit_codes(
    gate: GateClient, now: float, since: float, wait: str, code: int
) -> None:
    gate.clock.now = now
    args = ("--since", rfc3339(since), "--wait", wait, "--interval", "1s")
    assert (await sentinel_gate(gate, *args))[0] == code


async def test_sentinel_gate_exits_2_on_a_bad_request(gate: GateClient) -> None:
    code, _, err = await sentinel_gate(gate, "--since", "nan")
    assert code == 2 and "since:" in err


# -- Argo Rollouts ------------------------------------------------------------------------


def argo_measurement(status: int, body: Any, json_path: str) -> tuple[str, str | None]:
    """What Argo Rollouts' web provider makes of an answer: any non-2xx status is an
    Error (never Failed); else the jsonPath value, judged by the AnalysisTemplate's
    conditions `result == "pass"` (success) and `result == "fail"` (failure)."""
    if not 200 <= status < 300:
        return "Error", None
    key = re.fullmatch(r"\{\$\.(\w+)\}", json_path)
    assert key is not None
    result = body.get(key.group(1))
    if result == "pass":
        return "Successful", result
    if result == "fail":
        return "Failed", result
    return "Inconclusive", result


@pytest.mark.parametrize(
    ("now", "since", "phase"),
    [
        (at(40), at(20), "Successful"),
        (at(72), at(60), "Failed"),
        (at(225), at(212), "Inconclusive"),
    ],
)
async def test_argo_rollouts_web_provider_reads_the_decision_from_the_body(
    gate: GateClient, now: float, since: float, phase: str
) -> None:
    gate.clock.now = now
    params = {**ASK, "since": str(int(since)), "decision_in": "body"}
    status, body, _ = await gate.get(**params)
    assert argo_measurement(status, body, "{$.decision}")[0] == phase
    # Without decision_in=body a failing release is only an Error to Argo.
    if phase == "Failed":
        status, body, _ = await gate.get(**{**params, "decision_in": "status"})
        assert argo_measurement(status, body, "{$.decision}")[0] == "Error"


async def test_argo_with_a_wrong_token_is_an_error_not_a_pass(gate: GateClient) -> None:
    status, body, _ = await gate.get(token="wrong", **ASK, decision_in="body")
    assert argo_measurement(status, body, "{$.decision}")[0] == "Error"


# -- Flagger ------------------------------------------------------------------------------


def flagger_payload(**metadata: str) -> dict[str, Any]:
    """Exactly what Flagger POSTs to a webhook (docs: usage/webhooks)."""
    return {
        "name": "chatbot-backend",
        "namespace": "chatbot",
        "phase": "Progressing",
        "metadata": {"token": TOKEN, **metadata},
    }


@pytest.mark.parametrize(
    ("now", "since", "status", "decision"),
    [
        (at(40), at(20), 200, "pass"),
        (at(72), at(60), 412, "fail"),
        (at(225), at(212), 503, "pending"),
    ],
)
async def test_flagger_confirm_promotion_gets_200_only_on_pass(
    gate: GateClient, now: float, since: float, status: int, decision: str
) -> None:
    gate.clock.now = now
    got, body, _ = await gate.post(flagger_payload(env="prod", since=str(int(since))))
    assert (got, body["decision"]) == (status, decision)
    assert body["matchers"] == {"env": "prod"}


async def test_flagger_service_comes_from_metadata_before_the_canary_name(
    gate: GateClient,
) -> None:
    gate.clock.now = at(40)
    payload = {
        **flagger_payload(service="chatbot-backend", since=str(int(at(20)))),
        "name": "podinfo",
        "checksum": "6d5ff8f5c",  # newer Flagger versions add it
    }
    status, body, _ = await gate.post(payload)
    assert status == 200 and body["service"] == "chatbot-backend"
    assert body["revision"] == "6d5ff8f5c"


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({**flagger_payload(), "metadata": {"token": "wrong"}}, 401, "bearer token"),
        ({**flagger_payload(), "metadata": {}}, 401, "bearer token"),
        (flagger_payload(route="/healthz"), 400, "metadata.route: not a parameter"),
        (flagger_payload(decision_in="body"), 400, "metadata.decision_in"),
        (flagger_payload(since="nan"), 400, "metadata.since: expected RFC 3339"),
        ({**flagger_payload(), "name": "nope"}, 404, "unknown service 'nope'"),
        ([1, 2], 401, "bearer token"),
    ],
    ids=[
        "wrong-token",
        "no-token",
        "label-not-allowed",
        "decision-in",
        "bad-since",
        "unknown",
        "list",
    ],
)
async def test_flagger_payloads_the_gate_refuses(
    gate: GateClient, payload: Any, status: int, error: str
) -> None:
    got, body, _ = await gate.post(payload)
    assert got == status, body
    assert error in body["error"]


async def test_a_header_token_works_for_posts_too_and_bad_json_is_a_400(
    gate: GateClient,
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status, body, _ = await gate.post([1, 2], headers=headers)
    assert status == 400 and body["parameter"] == "body"
    async with gate.session.post(
        gate.server.make_url("/api/v1/gate"), data=b"{not json", headers=headers
    ) as r:
        assert r.status == 400
