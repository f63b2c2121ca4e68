"""`/api/v1/slos` and `/api/v1/alerts` are written as they are encoded, a chunk at a time:
at 10,000 services x 3 SLOs they are 76 MB and 37 MB, which joined, encoded and handed to
the transport whole held the event loop ~300 ms and twice their size in memory."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sentinel.alerting.manager import alerts_json
from sentinel.alerting.state import AlertState
from sentinel.daemon.runstate import GroupStatus
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.web import app as web_app
from sentinel.web.app import build_app, build_runner
from sentinel.web.routes import api_routes
from support.gatestack import GateClient, running_gate

RESULTS = 20_000  # ~8 MB of JSON: more than loopback's socket buffers hold


def result(i: int, now: float) -> SLOResult:
    return SLOResult(
        f"svc-{i:05d}",
        "http-5xx-ratio",
        Status.BREACH if i % 1000 == 0 else Status.OK,
        0.0001 * (i % 7),
        0.001,
        0.999,
        300.0,
        now,
        {"service": f"svc-{i:05d}", "note": "x" * 200},
        5000.0,
        kind="ratio",
    )


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GateClient]:
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        daemon = client.built.daemon
        now = daemon.clock()
        group = daemon.rules.groups[0]
        daemon.results[group.name] = [result(i, now) for i in range(RESULTS)]
        daemon.group_status[group.name] = GroupStatus(last_finished_at=now, cycles=1)
        yield client


async def test_the_slos_answer_arrives_in_chunks_and_is_the_whole_document(
    api: GateClient,
) -> None:
    url = api.server.make_url("/api/v1/slos")
    async with api.session.get(url) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        assert answer.headers["Transfer-Encoding"] == "chunked"
        pieces = [chunk async for chunk, _ in answer.content.iter_chunks()]
    body = b"".join(pieces)
    assert len(body) > 4 * web_app.STREAM_CHUNK and len(pieces) > 1
    listed = json.loads(body)
    assert listed == [r.to_json() for r in api.built.daemon.latest()]
    # Filters still apply to every result, and an empty answer is still a JSON list.
    async with api.session.get(url, params={"status": "breach"}) as answer:
        assert [r["service"] for r in await answer.json()] == [
            f"svc-{i:05d}" for i in range(0, RESULTS, 1000)
        ]
    async with api.session.get(url, params={"service": "nobody"}) as answer:
        assert answer.status == 200 and await answer.json() == []


@asynccontextmanager
async def production_server(api: GateClient) -> AsyncIterator[str]:
    """The daemon's app served as `sentinel run` serves it (build_runner: handlers are not
    cancelled when a client leaves, unlike the test server's)."""
    runner = build_runner(build_app(api.built.daemon, api_routes(api.built)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def counting_to_json(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[str]:
    encoded: list[str] = []
    to_json = SLOResult.to_json

    def counted(self: SLOResult) -> object:
        encoded.append(self.service)
        if fail_at is not None and len(encoded) == fail_at:
            raise RuntimeError("a bug met mid-answer")
        return to_json(self)

    monkeypatch.setattr(SLOResult, "to_json", counted)
    return encoded


async def settled(encoded: list[str]) -> int:
    count = -1
    for _ in range(50):  # the server notices at its next write; then nothing more
        await asyncio.sleep(0.1)
        if len(encoded) == count:
            break
        count = len(encoded)
    return count


async def test_a_client_that_leaves_stops_the_encoding_without_an_error(
    api: GateClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    encoded = counting_to_json(monkeypatch)
    async with production_server(api) as url:
        async with (  # closed mid-answer
            aiohttp.ClientSession() as session,
            session.get(f"{url}/api/v1/slos") as answer,
        ):
            assert (await answer.content.readany()).startswith(b"[")
        assert await settled(encoded) < RESULTS, "the whole answer was encoded for nobody"
        # Anyone may ask this answer without a token: a disconnect is not an error line.
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/slos") as answer:
            assert len(await answer.json()) == RESULTS  # the next one is whole


async def test_a_failure_mid_answer_cuts_the_body_and_logs_one_line(
    api: GateClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    counting_to_json(monkeypatch, fail_at=RESULTS // 2)
    async with (
        production_server(api) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v1/slos") as answer,
    ):
        assert answer.status == 200  # sent before the failure
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.read()  # never a valid JSON document cut short silently
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "/api/v1/slos: answer cut short: RuntimeError: a bug met mid-answer"
    ]
    assert errors[0].exc_info is None


async def test_a_head_request_gets_headers_only_and_the_connection_stays_usable(
    api: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = counting_to_json(monkeypatch)
    async with production_server(api) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        ask = "{} {} HTTP/1.1\r\nHost: sentinel\r\n\r\n"
        for path in ("/api/v1/slos", "/api/v1/alerts"):
            writer.write(ask.format("HEAD", path).encode())
        writer.write(ask.format("GET", "/health/live").encode())  # the same connection
        await writer.drain()
        heads = [await reader.readuntil(b"\r\n\r\n") for _ in range(2)]
        for head in heads:
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"application/json; charset=utf-8" in head
        # What follows the two HEAD answers is the third answer, not a body.
        third = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert third.startswith(b"HTTP/1.1 200 OK\r\n"), third[:200]
        writer.close()
        await writer.wait_closed()
    assert encoded == []  # nothing was encoded for them


async def test_the_alerts_snapshot_keeps_the_states_of_its_moment(api: GateClient) -> None:
    # The snapshot copies the maps on the loop; the thread formats it later: what the
    # loop changes meanwhile (an alert replaced, the map emptied) must not show.
    daemon, manager = api.built.daemon, api.built.manager
    group = daemon.rules.groups[0]
    now = daemon.clock()
    manager.observe_sync(group, [result(i, now) for i in range(3)], now)
    snapshot = manager.snapshot()
    before = manager.to_json()
    assert [a["service"] for a in before] == [f"svc-{i:05d}" for i in range(3)]
    assert [a["state"] for a in before] == ["pending", "inactive", "inactive"]
    key = before[0]["key"]
    manager.alerts[key] = replace(manager.alerts[key], state=AlertState.FIRING)
    manager.alerts.clear()
    assert list(alerts_json(snapshot)) == before
    # Formatted one alert at a time, as the answer is written.
    assert isinstance(alerts_json(snapshot), Iterator)
