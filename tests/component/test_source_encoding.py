"""Answers from a backend on the same host come uncompressed: gzip there costs both
processes CPU (the backend compressing, Sentinel inflating) and saves no bandwidth. A
header the config sets wins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sentinel.config import PrometheusConfig
from sentinel.sources.prometheus import PrometheusSource

ANSWER = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1, "2.5"]}]},
}


@pytest.fixture
async def backend() -> AsyncIterator[tuple[TestServer, list[str]]]:
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        response = web.json_response(ANSWER)
        response.enable_compression()  # compresses when the client accepts it
        return response

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, seen
    finally:
        await server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_backend_on_this_host_is_asked_for_an_uncompressed_answer(
    backend: tuple[TestServer, list[str]], host: str
) -> None:
    server, seen = backend
    source = PrometheusSource(PrometheusConfig(url=f"http://{host}:{server.port}", retries=0))
    try:
        samples = await source.instant("up", 1.0)
    finally:
        await source.close()
    assert [s.value for s in samples] == [2.5]
    assert seen == ["identity"]


async def test_an_accept_encoding_the_config_sets_is_sent_as_set(
    backend: tuple[TestServer, list[str]],
) -> None:
    server, seen = backend
    config = PrometheusConfig(
        url=f"http://127.0.0.1:{server.port}", retries=0, headers={"accept-encoding": "gzip"}
    )
    source = PrometheusSource(config)
    try:
        samples = await source.instant("up", 1.0)
    finally:
        await source.close()
    assert [s.value for s in samples] == [2.5]  # inflated as before
    assert seen == ["gzip"]
