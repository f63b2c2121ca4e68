"""Security properties of the daemon's HTTP server (SECURITY.md): every secret a caller
sends is compared in constant time and a hostile one is refused, never a 500; request
line, header and body sizes are bounded before any handler runs; and what a webhook
receiver needs to verify a delivery (signature and replay window) works as documented
against real signed deliveries — docs/verify_webhook.py, run here as the receiver."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import io
import re
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pydantic import SecretStr

from conftest import REPO
from sentinel.alerting.store import OutboxEntry
from sentinel.config import WebhookNotifierConfig
from sentinel.notify.webhook import WebhookNotifier
from sentinel.web.app import (
    MAX_HEADER_FIELD,
    MAX_HEADERS,
    MAX_REQUEST_BODY,
    MAX_REQUEST_LINE,
    build_app,
    build_runner,
)
from sentinel.web.routes import api_routes
from sentinel.web.ui_auth import SESSION_COOKIE
from support.gatestack import TOKEN, GateClient, running_gate
from support.promserver import free_port

SIGNING_SECRET = "slack-signing-secret-for-tests"
SECRETISH = re.compile(r"token|secret|signature|csrf|password|digest|nonce", re.I)
# Comparisons of two values Sentinel holds itself (no caller chose either side).
NOT_AUTHENTICATION = {
    ("sentinel/daemon/confdiff.py", "old.server.api_token != new.server.api_token")
}


def test_no_secret_is_compared_with_equality_anywhere() -> None:
    """`==` on a token, signature or CSRF value returns as soon as a byte differs, so its
    time tells an attacker how much of a guess was right: each must go through
    hmac.compare_digest (sentinel/web/compare.py). This walks every comparison in the
    package whose sides name a secret."""
    found = set()
    for path in sorted((REPO / "sentinel").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) for side in sides):
                continue  # `token == "stale"`: a keyword, not a secret
            names = [
                n.id if isinstance(n, ast.Name) else n.attr
                for side in sides
                for n in ast.walk(side)
                if isinstance(n, ast.Name | ast.Attribute)
            ]
            if any(SECRETISH.search(name) for name in names):
                found.add((str(path.relative_to(REPO)), ast.unparse(node)))
    assert found == NOT_AUTHENTICATION


# --- a daemon's HTTP server as `sentinel run` builds it --------------------------------


class Server:
    def __init__(self, client: GateClient, port: int) -> None:
        self.client, self.port = client, port
        self.url = f"http://127.0.0.1:{port}"

    async def raw(self, request: bytes) -> bytes:
        """Send raw bytes; the status line of the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(request)
            await writer.drain()
            return (await reader.readline()).strip()
        finally:
            writer.close()

    async def status(self, method: str, path: str, **kwargs: object) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, allow_redirects=False, **kwargs) as r,  # type: ignore[arg-type]
        ):
            return r.status


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setenv("FUZZ_SLACK_SIGNING", SIGNING_SECRET)
    extra = textwrap.dedent(
        """\
        notifiers:
          oncall:
            type: slack
            token: xoxb-unused
            channel: C0SEC
            base_url: http://127.0.0.1:9/api/
            charts: false
            signing_secret: ${FUZZ_SLACK_SIGNING}
        """
    )
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch, extra) as client:
        runner = build_runner(build_app(client.built.daemon, api_routes(client.built)))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Server(client, port)
        finally:
            await runner.cleanup()


async def test_hostile_credentials_are_refused_never_a_500(server: Server) -> None:
    """A cookie signature, a CSRF token or a Slack signature holding non-ASCII text made
    hmac.compare_digest raise TypeError: a 500 (and a traceback) instead of a refusal."""
    origin = {"Origin": server.url}
    # The session cookie of the status UI, its signature forged with non-ASCII text.
    for path in ("/", "/silences"):
        request = (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {SESSION_COOKIE}=9999999999.abcd.é\r\n\r\n"
        )
        status_line = await server.raw(request.encode())
        assert b" 200 " in status_line or b" 303 " in status_line, (path, status_line)
    # The login and silence forms' CSRF token.
    for path in ("/login", "/silences"):
        status = await server.status(
            "POST", path, data={"csrf": "é", "token": TOKEN}, headers=origin
        )
        assert status == 403, path
    # Slack's signature on a button click.
    headers = {"X-Slack-Request-Timestamp": "1795176000", "X-Slack-Signature": "v0=é"}
    assert (
        await server.status("POST", "/slack/interactions", data=b"payload=%7B%7D", headers=headers)
        == 401
    )
    # The API token.
    for given in ("é", "\ufffd", TOKEN + "é", " "):
        headers = {"Authorization": f"Bearer {given}"}
        assert (
            await server.status("GET", "/api/v1/gate?service=chatbot-backend", headers=headers)
            == 401
        )
        assert await server.status("POST", "/api/v1/silences", json={}, headers=headers) == 401


async def test_a_request_line_or_header_over_8_kib_is_refused_before_any_handler(
    server: Server,
) -> None:
    target = "/api/v1/gate?service=" + "a" * (MAX_REQUEST_LINE + 10)
    assert (await server.raw(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())).split()[
        1
    ] == b"400"
    header = "X-Big: " + "b" * (MAX_HEADER_FIELD + 10)
    request = f"GET /health/live HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode()
    assert (await server.raw(request)).split()[1] == b"400"
    many = "".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADERS + 10))
    request = f"GET /health/live HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode()
    assert (await server.raw(request)).split()[1] == b"400"
    # Just inside the limits, the same request is served.
    ok = f"GET /health/live?{'a' * 7000} HTTP/1.1\r\nHost: x\r\nX-Ok: {'b' * 7000}\r\n\r\n"
    assert (await server.raw(ok.encode())).split()[1] == b"200"


async def test_a_body_over_1_mib_is_413_on_every_endpoint_that_reads_one(server: Server) -> None:
    def big() -> io.BytesIO:
        return io.BytesIO(b"x" * (MAX_REQUEST_BODY + 1))

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert await server.status("POST", "/api/v1/silences", data=big(), headers=headers) == 413
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert await server.status("POST", "/login", data=big(), headers=form) == 413
    slack = {**form, "X-Slack-Request-Timestamp": "1795176000", "X-Slack-Signature": "v0=00"}
    assert await server.status("POST", "/slack/interactions", data=big(), headers=slack) == 413
    # The gate's Flagger endpoint refuses far less: 64 KiB (a 400 naming the body).
    assert (
        await server.status("POST", "/api/v1/gate", data=b"x" * (65 * 1024), headers=headers) == 400
    )


def test_the_limits_are_those_the_documentation_states() -> None:
    security = (REPO / "SECURITY.md").read_text()
    for text in ("1 MiB", "8190", "128 headers", "64 KiB"):
        assert text in security, text
    assert (MAX_REQUEST_BODY, MAX_REQUEST_LINE, MAX_HEADER_FIELD, MAX_HEADERS) == (
        1024 * 1024,
        8190,
        8190,
        128,
    )


# --- webhook receivers: the documented verification against real signed deliveries ----


def load_snippet() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "verify_webhook", REPO / "examples" / "verify_webhook.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Received:
    headers: CIMultiDict[str]
    body: bytes


def rollback_entry(incident: str) -> OutboxEntry:
    alert = {
        "incident_id": incident, "slo": "http-5xx-ratio", "severity": "page", "value": 0.2,
        "threshold": 0.01, "window": 60, "started_at_text": "2026-11-20T12:00:00Z",
        "labels": {}, "reason": "20 % > 1 %",
    }  # fmt: skip
    payload = {"alerts": [alert], "env": "prod"}
    return OutboxEntry(
        1, f"hook:{incident}", "hook", "firing", "chatbot-backend", payload, 0.0, 0, None, None
    )


async def test_the_documented_verification_accepts_once_and_refuses_replays_and_forgeries() -> None:
    """examples/verify_webhook.py (quoted in SECURITY.md) as a receiver of real deliveries
    by the webhook notifier: the first is acted on; its retry, a replay (even with a forged
    Idempotency-Key), a replay after the window, a tampered body and a wrong secret are not."""
    snippet = load_snippet()
    secret = "rollback-secret"
    received: list[Received] = []
    acted_on: set[str] = set()
    verdicts: list[object] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        received.append(Received(CIMultiDict(request.headers), body))
        try:
            verdicts.append(snippet.verify(secret, request.headers, body, acted_on))
        except snippet.Refused as exc:
            verdicts.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/rollback", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = WebhookNotifierConfig(
        type="webhook", url=f"http://127.0.0.1:{port}/rollback", secret=SecretStr(secret)
    )
    notifier = WebhookNotifier("hook", config)
    try:
        await notifier.deliver(rollback_entry("inc-1"), uncertain=False)
        await notifier.deliver(rollback_entry("inc-1"), uncertain=False)  # the outbox's retry
        await notifier.deliver(rollback_entry("inc-2"), uncertain=False)
    finally:
        await notifier.close()
        await runner.cleanup()
    assert verdicts == [True, False, True]
    first = received[0]
    stamp = int(first.headers["X-Sentinel-Timestamp"])

    def check(
        headers: CIMultiDict[str], body: bytes, now: float = stamp, key: str = secret
    ) -> object:
        try:
            return snippet.verify(key, headers, body, acted_on, now=now)
        except snippet.Refused as exc:
            return str(exc)

    assert check(first.headers, first.body) is False  # a replay inside the window
    forged = CIMultiDict(first.headers)
    forged["Idempotency-Key"] = "inc-999"
    assert check(forged, first.body) is False  # the header is not what is deduplicated
    stale = "timestamp outside the replay window"
    assert check(first.headers, first.body, now=stamp + snippet.MAX_AGE + 1) == stale
    assert check(first.headers, first.body, now=stamp - snippet.MAX_AGE - 1) == stale
    tampered = first.body.replace(b"inc-1", b"inc-3")
    assert check(first.headers, tampered) == "bad signature"
    assert check(first.headers, first.body, key="another-secret") == "bad signature"
    unsigned = CIMultiDict(first.headers)
    del unsigned["X-Sentinel-Signature"]
    assert check(unsigned, first.body) == "bad signature"
    moved = CIMultiDict(first.headers)
    moved["X-Sentinel-Timestamp"] = str(stamp + 1000)  # a replay re-dated by the attacker
    assert check(moved, first.body, now=stamp + 1000) == "bad signature"
    assert acted_on == {"inc-1", "inc-2"}


def test_security_md_quotes_the_verification_snippet_as_tested() -> None:
    source = inspect.getsource(load_snippet().verify)
    assert source in (REPO / "SECURITY.md").read_text()
