"""Secrets in URLs never reach an output anyone can read: `/health/detailed` (which needs
no token), `/metrics`, `/api/v1/slos` and the daemon's log.

Deploy hooks carry their token in the query string (GitLab pipeline triggers), proxies
in `user:password@`. Every source and notifier kind is configured with secret-looking
URLs pointing at a backend that answers with a redirect loop, so the errors (which
aiohttp words with the URL it failed on) reach health and log too.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sentinel.logs import ConsoleFormatter, JSONFormatter, fields
from sentinel.redact import redact_text, redact_url
from support.procs import REPO, Proc, http, start_sentinel, wait_for
from support.promserver import free_port
from support.threaded import ThreadedServer


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("https://prom.example.com/prometheus/", "https://prom.example.com/prometheus/"),
        ("http://host/hook?token=s3cret", "http://host/hook?<redacted>"),
        ("https://u:pw@host:8443/x?a=1&b=2#frag", "https://host:8443/x?<redacted>#<redacted>"),
        ("http://user:p@ss@host/", "http://host/"),
        (
            "https://gitlab.example.com/api/v4/projects/7/trigger/pipeline?token=glptt-abc&ref=main",
            "https://gitlab.example.com/api/v4/projects/7/trigger/pipeline?<redacted>",
        ),
    ],
    ids=[
        "plain",
        "path-kept",
        "query",
        "userinfo-query-fragment",
        "at-in-password",
        "gitlab-trigger",
    ],
)
def test_urls_are_shown_without_credentials_query_or_fragment(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "TooManyRedirects: 10, message='', url='http://h/hook?token=s3cret'",
            "TooManyRedirects: 10, message='', url='http://h/hook?<redacted>'",
        ),
        (
            "InvalidUrlClientError: hooks.example.com/x?token=s3cret",
            "InvalidUrlClientError: hooks.example.com/x?<redacted>",
        ),
        ("http://u:pw@h/api/?token=q #alerts", "http://h/api/?<redacted> #alerts"),
        ('status=~"5..?" is fine', 'status=~"5..?" is fine'),
        ("cannot connect: Connection refused", "cannot connect: Connection refused"),
    ],
    ids=["aiohttp-error", "schemeless", "slack-target-with-channel", "regex-untouched", "no-url"],
)
def test_urls_inside_messages_are_redacted_and_the_rest_kept(text: str, shown: str) -> None:
    assert redact_text(text) == shown
    assert redact_text(shown) == shown  # health and log both redact: twice changes nothing


SECRETS = {
    "prometheus password": "PromPass0731",
    "loki query token": "LokiQueryTok0731",
    "slack webhook path": "SlackHookPath0731",
    "slack webhook query": "SlackHookQuery0731",
    "slack bot token": "xoxb-SlackBotTok0731",
    "slack base_url query": "SlackBaseQuery0731",
    "webhook password": "HookPass0731",
    "webhook query token": "HookQueryTok0731",
    "webhook fragment": "HookFragment0731",
    "webhook signing secret": "HookSigningSecret0731",
    "grafana_url query": "GrafanaQuery0731",
    "grafana token": "GrafanaTok0731",
}


class HostileBackend(ThreadedServer):
    """A Prometheus under /good (vector(1): every SLO breaches), a redirect loop anywhere
    else, so every other client fails with an error that quotes its URL."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/good/api/v1/query", self._query)
        app.router.add_route("*", "/{tail:.*}", self._redirect_loop)
        return app

    async def _query(self, request: web.Request) -> web.Response:
        answer = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
        }
        return web.json_response(answer)

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.rel_url))


RULES = """\
version: sentinel/v1
service: checkout
interval: 1s
slos:
  - name: always-breaching
    sli: {promql: {query: "vector(1)"}}
    threshold: 0.5
    window: 1m
    severity: page
    notify: [hook-chat, bot-chat, rollback]
    alert: {rollback: true}
  - name: log-errors
    sli: {log_ratio: {selector: '{app="checkout"}', bad: '|= "error"'}}
    objective: 99%
    window: 1m
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Proc]]:
    backend = HostileBackend().start()
    b = f"127.0.0.1:{backend.port}"
    s = SECRETS
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "checkout.yaml").write_text(RULES)
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://sentinel:{s["prometheus password"]}@{b}/good", retries: 0, timeout: 2s}}
            loki: {{url: "http://{b}/loki?token={s["loki query token"]}", retries: 0, timeout: 2s}}
            rules: [rules/*.yaml]
            evaluation: {{interval: 1s}}
            server: {{listen: "127.0.0.1:{port}"}}
            state: {{path: "{tmp_path / "state.db"}"}}
            notifiers:
              hook-chat:
                type: slack
                webhook_url: "http://{b}/services/T0/B0/{s["slack webhook path"]}?t={s["slack webhook query"]}"
              bot-chat:
                type: slack
                token: "{s["slack bot token"]}"
                channel: "#checkout"
                base_url: "http://{b}/api/?k={s["slack base_url query"]}"
              rollback:
                type: webhook
                url: "http://ci:{s["webhook password"]}@{b}/hook?token={s["webhook query token"]}#{s["webhook fragment"]}"
                secret: "{s["webhook signing secret"]}"
                max_attempts: 3
            dashboards:
              templates: "{REPO / "dashboards"}"
              grafana_url: "http://{b}/grafana?auth={s["grafana_url query"]}"
              grafana_token: "{s["grafana token"]}"
              push: true
            """
        )
    )
    proc = start_sentinel(tmp_path / "config.yaml")
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()
        backend.stop()


def _all_failed(url: str) -> dict[str, Any] | None:
    body = http("GET", f"{url}/health/detailed")[1]
    checks = body["checks"]
    wanted = ("loki", "notifier:hook-chat", "notifier:bot-chat", "notifier:rollback", "grafana")
    if all(checks.get(name, {}).get("last_error") for name in wanted):
        return dict(body)
    return None


def test_no_secret_from_any_url_shows_in_health_metrics_api_or_log(
    daemon: tuple[str, Proc],
) -> None:
    url, proc = daemon
    try:
        health = wait_for(lambda: _all_failed(url), 60, "every backend but Prometheus to fail")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ndaemon log:\n{proc.log()[-3000:]}") from None
    time.sleep(1.5)  # a few more cycles and retries: more chances to leak
    outputs = {
        "/health/detailed": json.dumps(http("GET", f"{url}/health/detailed")[1]),
        "/metrics": str(http("GET", f"{url}/metrics")[1]),
        "/api/v1/slos": json.dumps(http("GET", f"{url}/api/v1/slos")[1]),
        "log": proc.log(),
    }
    leaks = [
        f"{what} in {where}"
        for where, text in outputs.items()
        for what, secret in SECRETS.items()
        if secret in text
    ]
    assert not leaks, leaks
    # What identifies each backend is still there for the on-call reading it.
    checks = health["checks"]
    assert checks["loki"]["target"].endswith("/loki?<redacted>")
    assert checks["notifier:rollback"]["target"].endswith("/hook?<redacted>#<redacted>")
    assert checks["notifier:bot-chat"]["target"].endswith("/api/?<redacted> #checkout")
    assert checks["notifier:hook-chat"]["target"] == "webhook"
    assert checks["grafana"]["target"].endswith("/grafana?<redacted>")
    assert "redirect" in checks["notifier:rollback"]["last_error"].lower()


def test_secrets_the_config_holds_are_redacted_wherever_they_appear(tmp_path: Path) -> None:
    """A secret in a URL path (Slack's incoming webhooks) or echoed by a server has no
    recognisable shape: every secret the loaded config holds is replaced by value."""
    from sentinel.config import load_config

    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            """\
            prometheus:
              url: http://127.0.0.1:9
              headers: {X-Scope-OrgID: tenant-checkout, Authorization: Bearer hdr-tok-4711}
              basic_auth: {username: sentinel, password: basic-pw-4711}
            notifiers:
              chat: {type: slack, webhook_url: "https://hooks.slack.com/services/T1/B1/path4711"}
            """
        )
    )
    load_config(tmp_path / "config.yaml")
    text = (
        "POST https://hooks.example/services/T1/B1/path4711 failed; server said: "
        "bad credentials basic-pw-4711 / Bearer hdr-tok-4711 for tenant-checkout"
    )
    shown = redact_text(text)
    for secret in ("path4711", "basic-pw-4711", "hdr-tok-4711"):
        assert secret not in shown
    assert "tenant-checkout" in shown  # not a credential: stays readable
    assert shown.startswith("POST https://hooks.example<redacted> failed")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_both_log_formats_redact_urls_in_message_fields_and_tracebacks(fmt: str) -> None:
    formatter = JSONFormatter() if fmt == "json" else ConsoleFormatter()
    try:
        raise RuntimeError("POST http://ci/hook?token=tb-4711 failed")
    except RuntimeError:
        record = logging.LogRecord(
            "sentinel.notify",
            logging.WARNING,
            __file__,
            1,
            "delivery to http://u:pw-4711@ci/hook?token=msg-4711 failed",
            None,
            sys.exc_info(),
        )
    record.__dict__.update(
        fields(target="http://ci/hook#frag-4711", errors=["hooks.example/x?token=list-4711"])
    )
    line = formatter.format(record)
    for secret in ("tb-4711", "pw-4711", "msg-4711", "frag-4711", "list-4711"):
        assert secret not in line
    assert "http://ci/hook?<redacted>" in line
