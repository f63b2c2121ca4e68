"""The daemon's probe schedule (sentinel/daemon/probes.py) against a chat runtime over
loopback and a real SQLite state store: runs are stored, counted in Sentinel's own
metrics, handed on as the probe's SLO result, never overlap, and stop when told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from sentinel.alerting.store import Store
from sentinel.config import ProbeConfig
from sentinel.daemon.probes import ProbeSchedule
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.model import RuleGroup
from sentinel.selfmetrics import SelfMetrics
from support.chatserver import ChatServer

EXPECT = {"json": {"answer_mode": {"equals": "llm-summary"}}}


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def probe(server: ChatServer, **overrides: Any) -> ProbeConfig:
    return ProbeConfig.model_validate(
        {
            "service": "chatbot",
            "url": server.chat_url,
            "ready_url": server.ready_url,
            "interval": "1s",
            "timeout": "1s",
            "body": {"message": "có được nghỉ thứ 7 không?"},
            "expect": EXPECT,
            **overrides,
        }
    )


@pytest.fixture
async def schedule(tmp_path: Path, chat: ChatServer) -> AsyncIterator[ProbeSchedule]:
    store = Store(tmp_path / "state.db")
    built = ProbeSchedule({"chat": probe(chat)}, SelfMetrics(), store)
    yield built
    await built.stop()
    store.close()


async def requests_seen(chat: ChatServer, count: int) -> None:
    """Until the chat runtime (in its own thread) has received `count` requests."""
    for _ in range(1000):
        if len(chat.requests) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the chat runtime saw {len(chat.requests)} requests, not {count}")


def metric(schedule: ProbeSchedule, line_start: str) -> str:
    text = generate_latest(schedule.metrics.registry).decode()
    return next(line for line in text.splitlines() if line.startswith(line_start))


async def test_a_run_is_stored_counted_and_handed_on_as_the_probes_slo_result(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    seen: list[tuple[RuleGroup, list[SLOResult]]] = []

    async def hook(group: RuleGroup, results: list[SLOResult], now: float) -> None:
        seen.append((group, results))

    schedule.result_hooks.append(hook)
    (before,) = schedule.results()
    assert (before.slo, before.status, before.reason) == (
        "probe-chat",
        Status.NO_DATA,
        "the probe has not run yet",
    )
    chat.mode = "fallback"
    run = await schedule.run_once("chat")
    assert run is not None and not run.success

    ((group, (result,)),) = seen
    assert group.slos[0].key == "chatbot/probe-chat" and group.service == "chatbot"
    assert result.status is Status.BREACH
    assert result.explanation() == 'answer_mode: expected "llm-summary", got "snippet-fallback"'
    assert schedule.results()[0].status is Status.BREACH
    assert schedule.store is not None
    (stored,) = schedule.store.probe_runs("chat")
    assert (stored.success, stored.reason, stored.status) == (False, run.reason, 200)
    assert metric(schedule, 'sentinel_probe_success{probe="chat"}').endswith(" 0.0")
    assert metric(schedule, 'sentinel_probe_duration_seconds_count{probe="chat"}').endswith(" 1.0")
    assert metric(schedule, 'sentinel_slo_breached{instance="",service="chatbot",slo="probe-chat"}')

    chat.mode = "none"
    await schedule.run_once("chat")
    assert metric(schedule, 'sentinel_probe_success{probe="chat"}').endswith(" 1.0")
    assert [r.success for r in schedule.store.probe_runs("chat")] == [True, False]


async def test_health_shows_each_probes_last_outcome_without_degrading_sentinel(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    assert schedule.health()["probe:chat"]["outcome"] == "not_run"
    chat.mode = "unready"
    await schedule.run_once("chat")
    check = schedule.health()["probe:chat"]
    assert check["status"] == "healthy"  # the runtime fails, the probe works
    assert check["outcome"] == "fail" and check["consecutive_failures"] == 1
    assert check["last_run"]["failure"].startswith(f"ready: GET {chat.ready_url}: expected 200")


async def test_the_gate_judges_only_runs_after_the_deploy_and_only_the_services_probes(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    chat.mode = "error"
    run = await schedule.run_once("chat")
    assert run is not None
    (after,) = schedule.gate_results("chatbot", run.at - 10, run.at + 1)
    assert after.status is Status.BREACH and after.reason.startswith(
        "status: expected 200, got 500"
    )
    (before,) = schedule.gate_results("chatbot", run.at + 1, run.at + 2)
    assert before.status is Status.NO_DATA and before.reason.startswith("no run since deploy")
    assert schedule.gate_results("other-service", None, run.at) == []


async def test_runs_never_overlap_a_second_request_while_one_runs_is_skipped(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    chat.mode = "stall"
    first = asyncio.ensure_future(schedule.run_once("chat"))
    await requests_seen(chat, 1)
    assert await schedule.run_once("chat") is None  # skipped, not stacked
    run = await first
    assert run is not None and "no answer within 1s" in run.reason
    assert len(chat.requests) == 1


async def test_the_schedule_runs_on_its_interval_and_stop_cancels_a_run_in_flight(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    schedule.start()
    await requests_seen(chat, 2)  # the first run right away, the second an interval later
    assert schedule.latest["chat"].success
    chat.mode = "stall"
    await requests_seen(chat, 3)
    await asyncio.wait_for(schedule.stop(), 0.5)  # does not wait out the stalled request


async def test_a_reload_restarts_changed_probes_and_forgets_removed_ones(
    schedule: ProbeSchedule, chat: ChatServer
) -> None:
    await schedule.run_once("chat")
    await schedule.reconfigure({"chat": probe(chat)})  # unchanged: the last run stays
    assert "chat" in schedule.latest
    await schedule.reconfigure({"chat": probe(chat, timeout="2s")})
    assert "chat" not in schedule.latest  # changed: judged afresh
    await schedule.run_once("chat")
    await schedule.reconfigure({})
    assert schedule.results() == []
    text = generate_latest(schedule.metrics.registry).decode()
    assert 'probe="chat"' not in text and 'slo="probe-chat"' not in text


async def test_stored_runs_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    from sentinel.evaluate.probe_check import ProbeRun

    store = Store(tmp_path / "state.db")
    try:
        for at in (1000.0, 2000.0, 9000.0):
            store.record_probe_run(ProbeRun("chat", at, 0.1, True))
        store.record_probe_run(ProbeRun("other", 1000.0, 0.1, True))
        assert store.prune_probe_runs("chat", older_than=2500.0) == 2
        assert [r.at for r in store.probe_runs("chat")] == [9000.0]
        assert len(store.probe_runs("other")) == 1
    finally:
        store.close()


async def test_a_probe_that_stopped_running_makes_its_health_check_unhealthy(
    chat: ChatServer,
) -> None:
    now = [1_795_000_000.0]
    schedule = ProbeSchedule({"chat": probe(chat)}, SelfMetrics(), clock=lambda: now[0])
    try:
        await schedule.run_once("chat")
        now[0] += 3 * 1.0 + 1.0 + 5.0  # within 3 intervals + timeout + margin
        assert schedule.health()["probe:chat"]["status"] == "healthy"
        now[0] += 1.0
        check = schedule.health()["probe:chat"]
        assert (check["status"], check["last_error"]) == ("unhealthy", "probe has stopped running")
        assert check["outcome"] == "pass"  # the last outcome is still shown
    finally:
        await schedule.stop()
