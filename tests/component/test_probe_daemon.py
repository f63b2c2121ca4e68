"""A synthetic probe in the assembled daemon (store, alert manager, Slack, gate, HTTP API
over loopback): a failing run reaches `/api/v1/slos`, the Slack message and the gate's
reasons with its failing assertion, `/health/detailed` shows its last outcome, and a
passing run resolves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.chatserver import ChatServer
from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.gatestack import GateClient, make_client

FALLBACK = 'answer_mode: expected "llm-summary", got "snippet-fallback"'

# Rules of another service: the chatbot's gate judges its probe alone.
OTHER_RULES = {
    "other.yaml": """\
        version: sentinel/v1
        service: other
        slos:
          - name: latency
            sli:
              latency: {histogram: other_latency_seconds, quantile: 0.95}
            threshold: 1s
            window: 5m
        """
}


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
async def daemon(
    tmp_path: Path, chat: ChatServer, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    extra = f"""\
        notifiers:
          oncall: {{type: slack, token: {TOKEN}, channel: {CHANNEL}, base_url: "{slack.url}/api/"}}
        probes:
          chat:
            service: chatbot
            url: {chat.chat_url}
            ready_url: {chat.ready_url}
            timeout: 2s
            body: {{message: "có được nghỉ thứ 7 không?"}}
            runbook_url: https://runbooks.example/chat-probe
            expect:
              json:
                answer_mode: {{equals: llm-summary}}
                provider_used: {{in: [spoon-policy, spoon-ops]}}
                answer: {{non_empty: true}}
        """
    async for client in make_client(
        tmp_path, "http://127.0.0.1:9", monkeypatch, gate_extra=extra, rules=OTHER_RULES
    ):
        yield client


async def probe(daemon: GateClient) -> None:
    assert daemon.built.probes is not None
    assert await daemon.built.probes.run_once("chat") is not None


async def probe_slo(daemon: GateClient) -> dict[str, object]:
    status, body, _ = await daemon.get("/api/v1/slos", service="chatbot")
    assert status == 200
    (result,) = body
    assert isinstance(result, dict)
    return result


async def slack_text(slack: FakeSlack, count: int = 1) -> str:
    for _ in range(200):
        if len(slack.messages) >= count:
            break
        await asyncio.sleep(0.05)
    return " ".join(str(block) for m in slack.messages for block in m.blocks)


async def test_a_failing_probe_reaches_the_slos_api_slack_and_the_gate_with_its_assertion(
    daemon: GateClient, chat: ChatServer, slack: FakeSlack
) -> None:
    before = await probe_slo(daemon)
    assert (before["slo"], before["status"]) == ("probe-chat", "no_data")
    status, body, _ = await daemon.get(service="chatbot")
    assert status == 503 and body["reasons"] == [
        "probe-chat: the probe has not run yet (runs every 1m)"
    ]

    chat.mode = "fallback"
    await probe(daemon)
    result = await probe_slo(daemon)
    assert (result["status"], result["kind"], result["value"]) == ("breach", "probe", 0.0)
    assert str(result["reason"]).startswith(FALLBACK)

    status, body, _ = await daemon.get(service="chatbot")
    assert status == 412 and body["decision"] == "fail"
    assert body["reasons"][0].startswith(f"probe-chat: {FALLBACK}")
    assert "alert firing for probe-chat (severity page)" in body["reasons"]

    text = await slack_text(slack)
    assert f"probe-chat failed: {FALLBACK}" in text
    assert "https://runbooks.example/chat-probe" in text

    status, health, _ = await daemon.get("/health/detailed")
    check = health["checks"]["probe:chat"]
    assert (check["status"], check["outcome"]) == ("healthy", "fail")
    assert check["last_run"]["failure"].startswith(FALLBACK)


async def test_a_passing_run_resolves_the_alert_and_passes_the_gate(
    daemon: GateClient, chat: ChatServer, slack: FakeSlack
) -> None:
    chat.mode = "error"
    await probe(daemon)
    await slack_text(slack)
    chat.mode = "none"
    await probe(daemon)
    assert (await probe_slo(daemon))["status"] == "ok"
    status, body, _ = await daemon.get(service="chatbot")
    assert (status, body["decision"], body["reasons"]) == (200, "pass", [])
    for _ in range(200):
        if slack.messages and slack.messages[0].updates:
            break
        await asyncio.sleep(0.05)
    assert "probe-chat passed in" in str(slack.messages[0].blocks)  # updated in place


async def test_a_deploy_gate_waits_for_a_run_after_the_deploy(
    daemon: GateClient, chat: ChatServer
) -> None:
    await probe(daemon)  # passes, against the previous release
    since = str(int(daemon.clock.now) + 1)
    daemon.clock.now += 120
    status, body, _ = await daemon.get(service="chatbot", since=since)
    assert status == 503 and body["reasons"] == [
        "probe-chat: no run since deploy yet (runs every 1m)"
    ]
    await probe(daemon)
    status, body, _ = await daemon.get(service="chatbot", since=since, slo="probe-chat")
    assert (status, body["decision"]) == (200, "pass")
    status, body, _ = await daemon.get(service="chatbot", slo="probe-nope")
    assert status == 400 and "probe-nope" in body["error"]
