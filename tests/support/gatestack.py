"""A running gate for tests: the daemon's assembly (store, alert manager, gate) served by
aiohttp over real loopback HTTP, with an injected clock the test moves.

The daemon is not started (no scheduler): tests call `run_group` themselves when they
need scheduled cycles.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from conftest import REPO
from sentinel.config import load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.rules.loader import load_rules
from sentinel.web.app import build_app
from sentinel.web.routes import api_routes
from support.scenario import at

TOKEN = "gate-test-token"


class Clock:
    def __init__(self, now: float = at(40)) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class GateClient:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession, built: Assembly) -> None:
        self.server, self.session, self.built = server, session, built
        self.clock: Clock = built.daemon.clock  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    async def get(
        self, path: str = "/api/v1/gate", token: str | None = TOKEN, **params: str
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(
            self.server.make_url(path), params=params, headers=headers
        ) as r:
            return r.status, await r.json(), r.headers

    async def post(
        self, body: Any, path: str = "/api/v1/gate", headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        async with self.session.post(self.server.make_url(path), json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None), r.headers


async def make_client(
    tmp_path: Path,
    prom_url: str,
    monkeypatch: pytest.MonkeyPatch,
    gate_extra: str = "",
    loki_url: str = "http://127.0.0.1:9",
    rules: dict[str, str] | None = None,
    source_extra: str = "retries: 0, timeout: 2s",
) -> AsyncIterator[GateClient]:
    """The chatbot rules (or `rules`: file name -> text) behind a gate with a token."""
    monkeypatch.setenv("SENTINEL_GATE_TEST_TOKEN", TOKEN)
    (tmp_path / "rules").mkdir()
    if rules is None:
        shutil.copy(REPO / "rules" / "chatbot.yaml", tmp_path / "rules")
    for name, text in (rules or {}).items():
        (tmp_path / "rules" / name).write_text(textwrap.dedent(text))
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prom_url}", {source_extra}}}
            loki: {{url: "{loki_url}", {source_extra}}}
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            server: {{api_token: "${{SENTINEL_GATE_TEST_TOKEN}}"}}
            """
        )
        + textwrap.dedent(gate_extra)
    )
    config = load_config(tmp_path / "config.yaml")
    built = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), Clock())
    server = TestServer(build_app(built.daemon, api_routes(built)), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield GateClient(server, session, built)
    finally:
        await server.close()
        await built.cleanup()
        await built.daemon.stop()


# `async with running_gate(...) as gate:` where a fixture does not fit.
running_gate = asynccontextmanager(make_client)
