"""A synthetic chat probe against a chat runtime over loopback (tests/support/chatserver.py,
the protocol of examples/simulator.py): each fault fails the probe with the assertion
that caught it, a healthy answer passes, and every request is marked as a probe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sentinel.config import ProbeConfig
from sentinel.evaluate.prober import run_probe, run_probes_once
from sentinel.sources.probe import ProbeClient
from support.chatserver import ChatServer
from support.promserver import free_port

EXPECT = {
    "status": 200,
    "max_latency": "5s",
    "json": {
        "answer_mode": {"equals": "llm-summary"},
        "provider_used": {"in": ["spoon-policy", "spoon-ops"]},
        "answer": {"non_empty": True},
    },
}


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def config(server: ChatServer, **overrides: Any) -> ProbeConfig:
    return ProbeConfig.model_validate(
        {
            "service": "chatbot",
            "url": server.chat_url,
            "ready_url": server.ready_url,
            "timeout": "1s",
            "headers": {"Authorization": "Bearer probe-token-123", "X-Tenant": "acme"},
            "body": {"message": "có được nghỉ thứ 7 không?", "conversation_id": "probe"},
            "expect": EXPECT,
            **overrides,
        }
    )


async def probe_once(server: ChatServer, **overrides: Any) -> Any:
    probe = config(server, **overrides)
    client = ProbeClient("chat", probe)
    try:
        return await run_probe("chat", probe, client)
    finally:
        await client.close()


async def test_a_healthy_answer_passes_and_the_request_is_marked_as_a_probe(
    chat: ChatServer,
) -> None:
    run = await probe_once(chat)
    assert run.success, run.reason
    assert run.status == 200 and run.failures == ()
    headers, body = chat.requests[-1]
    assert headers["X-Sentinel-Probe"] == "1"
    assert headers["User-Agent"].startswith("sentinel-probe/")
    assert headers["Authorization"] == "Bearer probe-token-123"
    assert headers["X-Tenant"] == "acme"
    assert body == {"message": "có được nghỉ thứ 7 không?", "conversation_id": "probe"}


async def test_a_fallback_answer_fails_the_probe_naming_the_field_and_value(
    chat: ChatServer,
) -> None:
    chat.mode = "fallback"
    run = await probe_once(chat)
    assert not run.success
    assert run.failures == (
        'answer_mode: expected "llm-summary", got "snippet-fallback"',
        'provider_used: expected one of ["spoon-policy", "spoon-ops"], got "none"',
    )


async def test_a_500_fails_the_probe_with_the_status_and_the_error_body(chat: ChatServer) -> None:
    chat.mode = "error"
    run = await probe_once(chat)
    assert run.failures == (
        'status: expected 200, got 500 (body: {"error": "provider chain exhausted"})',
    )


async def test_a_stalled_answer_fails_within_the_timeout(chat: ChatServer) -> None:
    chat.mode = "stall"  # the server would answer after 30 s
    started = time.monotonic()
    run = await probe_once(chat, timeout="1s")
    assert run.failures == (f"POST {chat.chat_url}: no answer within 1s",)
    assert run.latency is None
    assert time.monotonic() - started < 10  # the probe gave up at its timeout, not at 30 s


async def test_readiness_503_fails_the_probe_although_the_chat_answered(chat: ChatServer) -> None:
    chat.mode = "unready"
    run = await probe_once(chat)
    assert not run.success
    (failure,) = run.failures
    assert failure.startswith(f"ready: GET {chat.ready_url}: expected 200, got 503 (body: ")


async def test_an_unreachable_service_fails_the_probe_with_cannot_connect() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/chat"
    probe = ProbeConfig.model_validate({"service": "chatbot", "url": url, "timeout": "2s"})
    runs = await run_probes_once({"chat": probe})
    (failure,) = runs["chat"].failures
    assert failure == f"POST {url}: cannot connect: Connection refused"


async def test_an_oversized_answer_is_not_read_past_the_limit(chat: ChatServer) -> None:
    probe = config(chat)
    client = ProbeClient("chat", probe, max_body=16)
    try:
        exchange = await client.chat()
    finally:
        await client.close()
    assert exchange.status == 200 and exchange.truncated and len(exchange.body) <= 16


async def test_a_redirect_is_not_followed_and_fails_the_status_assertion(chat: ChatServer) -> None:
    run = await probe_once(chat, url=f"{chat.url}/moved")
    assert run.failures[0].startswith("status: expected 200, got 302")
