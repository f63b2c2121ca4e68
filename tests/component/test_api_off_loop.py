"""The JSON APIs that grow with the rule set are encoded off the event loop: health checks
and the gate are answered meanwhile (at 1,000 services x 3 SLOs, /api/v1/slos is 5.5 MB
and held the loop ~250 ms per request, /api/v1/alerts 75-90 ms)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.evaluate.slo import SLOResult
from sentinel.web import alerts_api, ui_data
from sentinel.web.app import WEB_POOL
from support.gatestack import GateClient, running_gate
from support.held import Held


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GateClient]:
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        daemon = client.built.daemon
        for group in daemon.rules.groups:  # Prometheus is down: every result is no_data
            await daemon.run_group(group.name, daemon.clock())
        assert daemon.latest()
        yield client


async def health_while(client: GateClient, held: Held, path: str) -> Any:
    asked = asyncio.ensure_future(client.get(path))
    await held.wait_started()
    status, _, _ = await client.get("/health/live")
    held.release()
    assert status == 200
    return await asked


async def test_health_is_answered_while_the_slos_api_encodes_its_answer(
    client: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(SLOResult.to_json)
    monkeypatch.setattr(SLOResult, "to_json", lambda self: held(self))
    status, body, _ = await health_while(client, held, "/api/v1/slos")
    assert held.released == [True], "/api/v1/slos held the event loop"
    assert status == 200 and len(body) == len(client.built.daemon.latest())
    assert {r["status"] for r in body} == {"no_data"}


async def test_health_is_answered_while_the_alerts_api_encodes_its_answer(
    client: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(alerts_api.alerts_json)
    monkeypatch.setattr(alerts_api, "alerts_json", held)
    status, body, _ = await health_while(client, held, "/api/v1/alerts")
    assert held.released == [True], "/api/v1/alerts held the event loop"
    assert status == 200 and set(body) == {"alerts", "incidents"}


async def test_the_slos_api_still_filters_and_refuses_a_bad_status(client: GateClient) -> None:
    status, body, _ = await client.get("/api/v1/slos", status="breach")
    assert status == 200 and body == []
    status, body, _ = await client.get("/api/v1/slos", service="chatbot-backend")
    assert status == 200 and body and {r["service"] for r in body} == {"chatbot-backend"}
    status, body, _ = await client.get("/api/v1/slos", status="firing")
    assert status == 400 and "expected ok, breach or no_data" in body["error"]


async def test_health_is_answered_while_the_overview_builds_its_rows(
    client: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(ui_data.rows)
    monkeypatch.setattr(ui_data, "rows", held)
    asked = asyncio.ensure_future(client.session.get(client.server.make_url("/")))
    await held.wait_started()
    status, _, _ = await client.get("/health/live")
    held.release()
    assert status == 200
    async with await asked as page:
        assert page.status == 200
        text = await page.text()
    assert held.released == [True], "the overview held the event loop"
    assert "chat-latency-p95" in text


async def test_a_burst_of_large_answers_leaves_the_shared_worker_threads_free(
    client: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared pool also runs SLO evaluation, answer parsing and the leader's lease
    # renewal: unauthenticated requests for large answers must not fill it.
    held = Held(SLOResult.to_json, every=True)
    monkeypatch.setattr(SLOResult, "to_json", lambda self: held(self))
    asked = [asyncio.ensure_future(client.get("/api/v1/slos")) for _ in range(12)]
    await held.wait_started()  # one is encoding, held
    pool = client.server.app[WEB_POOL]
    for _ in range(200):  # every request has been answered 503 or is waiting its turn
        if pool.queued == pool.MAX_QUEUED and sum(a.done() for a in asked) == 4:
            break
        await asyncio.sleep(0.05)
    # Work for the shared pool still runs at once, and so does a scrape of /metrics.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), 5) == "ran"
    async with client.session.get(client.server.make_url("/metrics")) as scrape:
        assert scrape.status == 200 and "sentinel_build_info" in await scrape.text()
    held.release()
    answers = [await a for a in asked]
    # At most 8 wait for the thread; the rest are told to come back (the queue is bounded).
    assert [status for status, _, _ in answers].count(200) == 8
    for status, body, headers in answers:
        if status == 200:
            assert body and headers["Content-Type"] == "application/json; charset=utf-8"
        else:
            assert status == 503 and headers["Retry-After"] == "1"
            assert body["error"].startswith("busy: 8 large answers queued")
    assert held.released[0] is True


async def test_people_opening_the_overview_together_share_one_build(
    client: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(ui_data.rows)
    monkeypatch.setattr(ui_data, "rows", held)
    url = client.server.make_url("/")
    pages = [asyncio.ensure_future(client.session.get(url)) for _ in range(5)]
    await held.wait_started()
    await asyncio.sleep(0.3)  # the others ask while the first build runs
    held.release()
    for page in pages:
        async with await page as answer:
            assert answer.status == 200
    assert held.calls == 1
