"""Edges of the HTTP API that an unauthenticated client can reach: odd Authorization
headers, limits, bodies with odd times, and malformed HTTP that must not flood the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentinel.errors import StateStoreReadError
from sentinel.web.app import BadRequestLogFilter, install_bad_request_filter
from support.gatestack import TOKEN, GateClient, make_client
from support.scenario import at


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GateClient]:
    # Nothing here reaches a source: an unroutable URL keeps these tests independent.
    async for client in make_client(tmp_path, "http://127.0.0.1:9", monkeypatch):
        yield client


async def raw_request(client: GateClient, data: bytes) -> bytes:
    """Send bytes as they are (clients refuse to send what these tests need)."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_non_ascii_authorization_header_is_401_not_500(api: GateClient) -> None:
    for value in ("Bearer tökén".encode(), b"Bearer \xff\xfe", "Bärer x".encode()):
        answer = await raw_request(
            api,
            b"GET /api/v1/gate/history HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + value
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert status_of(answer) == 401, answer[:200]
        assert b"missing or invalid bearer token" in answer


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "beArer"])
async def test_the_bearer_scheme_is_case_insensitive(api: GateClient, scheme: str) -> None:
    async with api.session.get(
        api.server.make_url("/api/v1/gate/history"),
        headers={"Authorization": f"{scheme} {TOKEN}"},
    ) as r:
        assert r.status == 200


@pytest.mark.parametrize("header", ["Basic Z2F0ZTp4", "Bearer", "Bearer  ", TOKEN])
async def test_other_schemes_or_a_bare_token_are_401(api: GateClient, header: str) -> None:
    async with api.session.get(
        api.server.make_url("/api/v1/gate/history"), headers={"Authorization": header}
    ) as r:
        assert r.status == 401


@pytest.mark.parametrize("limit", ["-1", "0", "abc", "1e3", "²", "99999999999999999999"])
async def test_history_limit_outside_1_to_1000_is_a_400(api: GateClient, limit: str) -> None:
    status, body, _ = await api.get("/api/v1/gate/history", limit=limit)
    assert status == 400
    assert body["error"].startswith("limit: expected an integer from 1 to 1000")


async def test_history_limit_above_1000_is_capped(api: GateClient) -> None:
    rows = [(at(0) + i, "svc", "pass", f'{{"n": {i}}}', "{}") for i in range(1200)]
    api.built.store.record_gates(rows)
    status, body, _ = await api.get("/api/v1/gate/history", limit="5000")
    assert status == 200
    assert len(body) == 1000
    assert body[0]["inputs"] == {"n": 1199}


@pytest.mark.parametrize(
    "starts_at", ["nan", "inf", "-1e20", "0001-01-01T00:00:00+01:00", "-9223372036854775808"]
)
async def test_a_silence_with_an_odd_time_is_a_400(api: GateClient, starts_at: str) -> None:
    payload = {
        "matchers": [{"name": "service", "value": "chatbot-backend"}],
        "starts_at": starts_at,
        "duration": "1h",
        "author": "oncall",
    }
    status, body, _ = await api.post(
        payload, "/api/v1/silences", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 400, body
    assert "expected" in body["error"]


# -- malformed HTTP in the log (21.10) --------------------------------------------------


class FakeMonotonic:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_oversized_request_lines_log_one_short_line_not_a_traceback_each(
    api: GateClient, caplog: pytest.LogCaptureFixture
) -> None:
    log_filter = install_bad_request_filter()
    clock = FakeMonotonic()
    log_filter.clock, log_filter._next, log_filter.suppressed = clock, float("-inf"), 0
    line = b"GET /api/v1/gate?service=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        for _ in range(50):
            answer = await raw_request(api, line)
            assert status_of(answer) == 400
        logged = [r for r in caplog.records if r.name == "aiohttp.server"]
        assert len(logged) == 1
        (record,) = logged
        assert record.exc_info is None and record.levelno == logging.WARNING
        text = record.getMessage()
        assert text.startswith("malformed HTTP request from 127.0.0.1: LineTooLong: ")
        assert len(text) < 300
        clock.now += log_filter.interval
        await raw_request(api, line)
        later = [r for r in caplog.records if r.name == "aiohttp.server"][1:]
        assert [r.getMessage().endswith("(49 more suppressed)") for r in later] == [True]


def test_the_filter_is_installed_once_however_many_apps_are_built() -> None:
    first = install_bad_request_filter()
    assert install_bad_request_filter() is first
    logger = logging.getLogger("aiohttp.server")
    assert sum(isinstance(f, BadRequestLogFilter) for f in logger.filters) == 1


def test_other_aiohttp_server_errors_keep_their_traceback() -> None:
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), None
    )
    try:
        raise RuntimeError("a bug in a handler")
    except RuntimeError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    assert BadRequestLogFilter().filter(record) is True
    assert record.exc_info is not None and record.msg == "Error handling request"


async def test_a_state_store_that_cannot_be_read_is_a_503_naming_it_on_every_route(
    api: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared PostgreSQL that is down: what needs it answers 503 with the reason and a
    Retry-After (answered per route, and by the gate itself, since there is no app-wide
    middleware), never a 500 or a gate decision."""

    def unreadable(*args: object, **kwargs: object) -> object:
        raise StateStoreReadError("postgresql://db", "server closed the connection")

    monkeypatch.setattr(api.built.store, "incidents", unreadable)
    monkeypatch.setattr(api.built.gate, "check", unreadable)
    for path in ("/api/v1/alerts", "/api/v1/gate?service=chatbot-backend"):
        async with api.session.get(
            api.server.make_url(path), headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            body = await r.json()
            assert r.status == 503, (path, body)
            assert r.headers["Retry-After"] == "5"
            assert body["error"] == (
                "state store unavailable: postgresql://db: server closed the connection"
            )
    # Everything else still answers.
    async with api.session.get(api.server.make_url("/health/live")) as r:
        assert r.status == 200
