"""Fuzzing what Slack answers, through the real Slack notifier (slack-sdk's async client
with Sentinel's retry handlers) and a real SQLite store: every error code Slack documents
for chat.postMessage, chat.update and the file-upload methods (plus the Web API's common
errors), codes it never documented, HTTP 429 with any Retry-After (seconds, a date,
garbage, negative, huge), 5xx and 4xx statuses, HTML pages, plain text, truncated JSON,
and `ok: true` answers missing the fields Sentinel reads.

What must hold: `deliver` either succeeds — only on a well-formed `ok: true` — or raises
NotifyRetryable (the outbox retries it: rate limits, Slack's transient errors, 5xx, bodies
that are not Slack's JSON) or NotifyRejected (a permanent error, dead-lettered and shown
in /health/detailed), naming Slack's error code; never another exception (which the
dispatcher would log as a notifier bug). A Retry-After it reports is a finite number of
seconds >= 0. A failed chart upload never raises out of its background task.

Error codes: docs.slack.dev reference pages of chat.postMessage, chat.update,
files.getUploadURLExternal and files.completeUploadExternal, and the Web API's common
errors, as of 2026-11.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import SecretStr

from sentinel.alerting.store import OutboxEntry, Store
from sentinel.config import SlackNotifierConfig
from sentinel.errors import NotifyRejected, NotifyRetryable
from sentinel.notify.slack import RETRYABLE_ERRORS, SlackNotifier
from support.fuzzing import counted, fuzz_settings
from support.threaded import ThreadedServer

TOKEN = "xoxb-fuzz"
CHANNEL = "C0FUZZ"

# Errors every Web API method may return (docs.slack.dev, "Common errors").
COMMON_ERRORS = [
    "access_denied", "accesslimited", "account_inactive", "deprecated_endpoint",
    "ekm_access_denied", "enterprise_is_restricted", "fatal_error", "internal_error",
    "invalid_arg_name", "invalid_arguments", "invalid_array_arg", "invalid_auth",
    "invalid_charset", "invalid_form_data", "invalid_post_type", "is_bot",
    "method_deprecated", "missing_post_type", "missing_scope", "no_permission",
    "not_allowed_token_type", "not_authed", "org_login_required", "ratelimited",
    "request_timeout", "service_unavailable", "team_access_not_granted",
    "team_added_to_org", "token_expired", "token_revoked", "two_factor_setup_required",
]  # fmt: skip
POST_MESSAGE_ERRORS = [
    "as_user_not_supported", "attachment_payload_limit_exceeded", "cannot_reply_to_message",
    "channel_not_found", "duplicate_channel_not_found", "duplicate_message_not_found",
    "invalid_blocks", "invalid_blocks_format", "invalid_metadata_format",
    "invalid_metadata_schema", "is_archived", "message_limit_exceeded",
    "messages_tab_disabled", "metadata_must_be_sent_from_app", "metadata_too_large",
    "msg_blocks_too_long", "msg_too_long", "no_text", "not_in_channel", "rate_limited",
    "restricted_action", "restricted_action_non_threadable_channel",
    "restricted_action_read_only_channel", "restricted_action_thread_locked",
    "restricted_action_thread_only_channel", "slack_connect_canvas_sharing_blocked",
    "slack_connect_file_link_sharing_blocked", "team_not_found", "too_many_attachments",
    "too_many_contact_cards",
]  # fmt: skip
UPDATE_ERRORS = [
    "block_mismatch", "cant_update_message", "channel_not_found", "edit_window_closed",
    "external_channel_migrating", "invalid_attachments", "invalid_blocks",
    "invalid_metadata_format", "invalid_metadata_schema", "is_inactive",
    "message_not_found", "metadata_must_be_sent_from_app", "metadata_too_large",
    "msg_too_long", "no_dual_broadcast_content_update", "too_many_attachments",
    "update_failed",
]  # fmt: skip
UPLOAD_ERRORS = [
    "channel_not_found", "file_not_found", "file_update_failed", "file_upload_error",
    "invalid_channel", "not_in_channel", "posting_to_general_channel_denied",
    "restricted_action", "storage_limit_reached", "file_size_exceeded",
]  # fmt: skip
# Transient by Slack's own description: retried. Everything else documented is a
# configuration or content problem a retry cannot fix: rejected.
TRANSIENT = {
    "ratelimited",  # HTTP 429, the Web API's rate limit
    "rate_limited",  # chat.postMessage: "posted too many messages" (1 a second a channel)
    "message_limit_exceeded",  # the workspace's message limit, per period
    "internal_error",  # "likely due to a transient issue on our end"
    "fatal_error",  # "some aspect may have succeeded": retried with the idempotency lookup
    "service_unavailable",
    "request_timeout",  # "the POST data was either missing or truncated"
    "team_added_to_org",  # "intermittently unavailable until the transition is complete"
    "org_login_required",  # "not available until migration is complete"
}


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def ok(**data: Any) -> Answer:
    return Answer(body=json.dumps({"ok": True, **data}).encode())


class ScriptedSlack(ThreadedServer):
    """Slack's Web API paths, each answering its script (default: a well-formed ok)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Answer] = {}
        self.queued: dict[str, list[Answer]] = {}  # answered first, one each, in order
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def defaults(self, method: str) -> Answer:
        return {
            "chat.postMessage": ok(channel=CHANNEL, ts="1795176000.000100"),
            "chat.update": ok(channel=CHANNEL, ts="1795176000.000100"),
            "conversations.history": ok(messages=[]),
            "conversations.replies": ok(messages=[]),
            "files.getUploadURLExternal": ok(upload_url=f"{self.url}/upload/F1", file_id="F1"),
            "upload": Answer(body=b"OK - 3", content_type="text/plain"),
            "files.completeUploadExternal": ok(files=[{"id": "F1", "title": "chart"}]),
        }.get(method, Answer(404, b'{"ok": false, "error": "unknown_method"}'))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_route("*", "/upload/{id}", self._upload)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        await request.read()
        return self._answer(request.match_info["method"])

    async def _upload(self, request: web.Request) -> web.Response:
        await request.read()
        return self._answer("upload")

    def _answer(self, method: str) -> web.Response:
        with self.lock:
            self.calls.append(method)
            queue = self.queued.get(method)
            answer = queue.pop(0) if queue else self.scripts.get(method) or self.defaults(method)
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=answer.headers,
        )


@pytest.fixture(scope="module")
def slack() -> Iterator[ScriptedSlack]:
    server = ScriptedSlack().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    opened = Store(tmp_path_factory.mktemp("fuzz-slack") / "state.db")
    yield opened
    opened.close()


def entry(kind: str, incident: str) -> OutboxEntry:
    alert = {
        "incident_id": incident,
        "repeat": 0,
        "slo": "http-5xx-ratio",
        "description": "",
        "severity": "page",
        "sli_kind": "ratio",
        "good_when": "below",
        "value": 0.2,
        "threshold": 0.01,
        "objective": 0.99,
        "window": 60,
        "window_text": "1m",
        "events": 300,
        "labels": {},
        "env": "prod",
        "reason": "20 % > 1 %",
        "query": "sum(...)",
        "runbook_url": None,
        "dashboard_url": None,
        "started_at": 1795176000.0,
        "started_at_text": "2026-11-20T12:00:00Z",
        "resolved_at_text": "2026-11-20T12:10:00Z" if kind == "resolved" else None,
    }
    return OutboxEntry(
        1,
        f"oncall:{kind}:{incident}",
        "oncall",
        kind,
        "chatbot-backend",
        {"alerts": [alert], "env": "prod"},
        1795176000.0,
        0,
        None,
        None,
    )


# --- strategies -------------------------------------------------------------------------

DOCUMENTED = sorted(set(COMMON_ERRORS + POST_MESSAGE_ERRORS + UPDATE_ERRORS + UPLOAD_ERRORS))
CODES = st.one_of(
    st.sampled_from(DOCUMENTED),
    st.text(max_size=20),  # a code Slack never documented
)
RETRY_AFTER = st.one_of(
    st.integers(0, 1).map(str),  # waited in place (short, to keep the run short)
    st.sampled_from(
        ["", "abc", "-5", "0.5", "nan", "inf", "1e400", "99999999999", "30", "3600", "0x10",
         "Wed, 21 Oct 2026 07:28:00 GMT"]
    ),
)  # fmt: skip
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    kind = draw(st.integers(0, 9))
    if kind <= 3:  # Slack's usual failure: HTTP 200, ok false, a code
        body: Any = {"ok": False, "error": draw(CODES)}
        if draw(st.booleans()):
            body["response_metadata"] = {"messages": [draw(st.text(max_size=20))]}
        return Answer(body=json.dumps(body).encode())
    if kind == 4:  # rate limited, Retry-After anything
        headers = {"Retry-After": draw(RETRY_AFTER)} if draw(st.integers(0, 4)) else {}
        return Answer(429, b'{"ok": false, "error": "ratelimited"}', headers=headers)
    if kind == 5:
        status = draw(st.sampled_from([400, 401, 403, 404, 405, 410, 413, 500, 502, 503, 504]))
        body_bytes = draw(st.sampled_from([HTML, b"", b"upstream connect error", b'{"ok":false}']))
        return Answer(status, body_bytes, "text/html")
    if kind == 6:  # HTML or text with 200: a captive proxy, a login page
        return Answer(200, draw(st.sampled_from([HTML, b"", b"OK"])), "text/html")
    if kind == 7:  # truncated JSON
        full = json.dumps({"ok": True, "channel": CHANNEL, "ts": "1.2"}).encode()
        return Answer(body=full[: draw(st.integers(0, len(full) - 1))])
    if kind == 8:  # ok true without the fields Sentinel reads, or with odd types
        data = draw(
            st.dictionaries(
                st.sampled_from(["channel", "ts", "message", "error", "files", "upload_url"]),
                st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.none())),
                max_size=3,
            )
        )
        return Answer(body=json.dumps({"ok": True, **data}).encode())
    return Answer(
        body=json.dumps(draw(st.one_of(st.none(), st.integers(), st.lists(st.none())))).encode()
    )


# --- the property -----------------------------------------------------------------------


def expected(answer: Answer) -> str:
    """What the notifier must do with this answer: 'ok', 'retry', 'reject' or 'typed'
    (either typed error: the answer is not a Slack answer at all)."""
    if answer.status == 429 or answer.status >= 500:
        return "retry"
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "retry"  # a proxy's page, a cut-short answer: transient, ask again
    if not isinstance(body, dict):
        return "retry"
    if answer.status != 200:
        return "typed"
    if body.get("ok") is True:
        return "typed"  # ok, unless a field Sentinel needs is missing (then retry)
    code = body.get("error")
    return "retry" if code in TRANSIENT else "reject"


async def deliver(slack: ScriptedSlack, store: Store, method: str, answer: Answer) -> Any:
    config = SlackNotifierConfig(
        type="slack", token=SecretStr(TOKEN), channel=CHANNEL, base_url=f"{slack.url}/api/",
        charts=False,
    )  # fmt: skip
    notifier = SlackNotifier("oncall", config, store)
    incident = f"inc-{len(slack.calls)}"
    try:
        if method == "chat.update":  # the firing message first, then its resolve
            await notifier.deliver(entry("firing", incident), uncertain=False)
        with slack.lock:
            slack.scripts = {method: answer}
        kind = "firing" if method == "chat.postMessage" else "resolved"
        try:
            await notifier.deliver(entry(kind, incident), uncertain=False)
        except (NotifyRetryable, NotifyRejected) as exc:
            return exc
        return None
    finally:
        with slack.lock:
            slack.scripts, slack.queued = {}, {}
        await notifier.close()


@given(method=st.sampled_from(["chat.postMessage", "chat.update"]), answer=answers())
@example(method="chat.postMessage", answer=Answer(body=b'{"ok": false, "error": "rate_limited"}'))
@example(method="chat.postMessage", answer=Answer(429, headers={"Retry-After": "soon"}))
@example(method="chat.postMessage", answer=Answer(429, headers={"Retry-After": "1e400"}))
@example(method="chat.postMessage", answer=ok())
@example(method="chat.update", answer=Answer(200, HTML, "text/html"))
@fuzz_settings(1.0)
@counted("Slack answers (deliver)")
def test_fuzz_every_slack_answer_is_delivered_retried_or_rejected_as_documented(
    slack: ScriptedSlack, store: Store, method: str, answer: Answer
) -> None:
    outcome = asyncio.run(deliver(slack, store, method, answer))
    want = expected(answer)
    assert outcome is None or isinstance(outcome, NotifyRetryable | NotifyRejected), outcome
    if want == "retry":
        assert isinstance(outcome, NotifyRetryable), (answer, outcome)
    elif want == "reject":
        assert isinstance(outcome, NotifyRejected), (answer, outcome)
        code = json.loads(answer.body)["error"]
        assert str(code)[:20] in outcome.detail or code == "", outcome.detail
    if outcome is None:
        body = json.loads(answer.body)
        assert answer.status == 200 and body.get("ok") is True, answer
    if isinstance(outcome, NotifyRetryable) and outcome.retry_after is not None:
        assert math.isfinite(outcome.retry_after) and outcome.retry_after >= 0, outcome


def test_every_transient_code_sentinel_retries_is_one_slack_documents() -> None:
    """The retry list holds no typo: each code in it is a documented Slack error."""
    assert set(RETRYABLE_ERRORS) <= set(DOCUMENTED)
    assert set(RETRYABLE_ERRORS) == TRANSIENT


class StubCharts:
    """The chart maker's part in an upload: a PNG (drawing is tested in test_chart.py)."""

    async def png(self, *args: Any, **kwargs: Any) -> bytes:
        return b"\x89PNG\r\n\x1a\nfuzz"


@given(
    method=st.sampled_from(
        ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    ),
    answer=answers(),
)
@fuzz_settings(0.3)
@counted("Slack answers (chart upload)")
def test_fuzz_a_failed_chart_upload_never_fails_the_alert_or_escapes_its_task(
    slack: ScriptedSlack, store: Store, method: str, answer: Answer
) -> None:
    async def run() -> None:
        config = SlackNotifierConfig(
            type="slack", token=SecretStr(TOKEN), channel=CHANNEL, base_url=f"{slack.url}/api/"
        )
        notifier = SlackNotifier("oncall", config, store, charts=StubCharts())  # type: ignore[arg-type]
        with slack.lock:
            slack.scripts = {method: answer}
        try:
            await notifier.deliver(entry("firing", f"chart-{len(slack.calls)}"), uncertain=False)
            tasks = list(notifier._chart_tasks)
            await notifier.charts_done()
            for task in tasks:
                assert task.exception() is None, task.exception()
        finally:
            with slack.lock:
                slack.scripts = {}
            await notifier.close()

    asyncio.run(run())


def test_the_harness_delivers_a_well_formed_answer(slack: ScriptedSlack, store: Store) -> None:
    assert (
        asyncio.run(deliver(slack, store, "chat.postMessage", ok(channel=CHANNEL, ts="1.2")))
        is None
    )
    assert asyncio.run(deliver(slack, store, "chat.update", ok(channel=CHANNEL, ts="1.2"))) is None


# --- regressions found by the fuzzing (each failed before its fix) ----------------------


@pytest.mark.parametrize(
    "code", ["rate_limited", "message_limit_exceeded", "team_added_to_org", "org_login_required"]
)
def test_slack_rate_and_migration_errors_are_retried_not_dead_lettered(
    slack: ScriptedSlack, store: Store, code: str
) -> None:
    """chat.postMessage's own `rate_limited` (about one message a second a channel) was
    rejected as permanent: an alert storm lost the alerts over that rate for good."""
    body = json.dumps({"ok": False, "error": code}).encode()
    outcome = asyncio.run(deliver(slack, store, "chat.postMessage", Answer(body=body)))
    assert isinstance(outcome, NotifyRetryable), outcome
    assert code in outcome.detail


@pytest.mark.parametrize(
    ("header", "retry_after"),
    [("soon", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None), ("nan", None),
     ("7200", 3600.0), ("1e400", 3600.0), ("30", 30.0)],
)  # fmt: skip
def test_a_429_whose_retry_after_is_long_or_unreadable_goes_back_to_the_outbox_at_once(
    slack: ScriptedSlack, store: Store, header: str, retry_after: float | None
) -> None:
    """slack-sdk read Retry-After with int(): a date or garbage raised ValueError out of
    the API call (logged as a notifier bug), and a long one was slept through inside the
    delivery until its timeout. Now: one call, then NotifyRetryable with the wait capped at
    an hour (None when unreadable: the outbox's backoff applies)."""
    answer = Answer(429, b'{"ok": false, "error": "ratelimited"}', headers={"Retry-After": header})

    async def run() -> Any:
        return await asyncio.wait_for(deliver(slack, store, "chat.postMessage", answer), 60)

    before = len(slack.calls)
    outcome = asyncio.run(run())
    assert isinstance(outcome, NotifyRetryable), outcome
    assert outcome.retry_after == retry_after
    assert slack.calls[before:] == ["chat.postMessage"]


def test_a_429_with_a_short_retry_after_is_waited_once_in_place(
    slack: ScriptedSlack, store: Store
) -> None:
    limited = Answer(429, b'{"ok": false, "error": "ratelimited"}', headers={"Retry-After": "0"})
    slack.queued = {"chat.postMessage": [limited]}
    before = len(slack.calls)
    assert (
        asyncio.run(deliver(slack, store, "chat.postMessage", ok(channel=CHANNEL, ts="9.1")))
        is None
    )
    assert slack.calls[before:] == ["chat.postMessage", "chat.postMessage"]


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, HTML, "text/html"),
        Answer(200, b"1"),
        Answer(200, b"[]"),
        Answer(200, b'{"ok": true}'),
        Answer(200, b'{"ok": true, "channel": "C1", "ts": 5}'),
    ],
    ids=["html-page", "json-number", "json-list", "ok-without-ts", "ts-not-a-string"],
)
def test_an_answer_that_is_not_slacks_is_retried_never_dead_or_a_crash(
    slack: ScriptedSlack, store: Store, answer: Answer
) -> None:
    """A 200 HTML page (a proxy) was rejected for good as `unknown_error`; JSON that is no
    object crashed slack-sdk (AttributeError) and `ok` without `ts` crashed Sentinel
    (KeyError): both logged as notifier bugs with a traceback."""
    outcome = asyncio.run(deliver(slack, store, "chat.postMessage", answer))
    assert isinstance(outcome, NotifyRetryable), outcome


def test_a_chart_upload_answer_without_upload_url_is_one_warning(
    slack: ScriptedSlack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """slack-sdk's files_upload_v2 raised TypeError on `ok` without `upload_url`; the
    upload task died with it, unlogged."""

    async def run() -> None:
        config = SlackNotifierConfig(
            type="slack", token=SecretStr(TOKEN), channel=CHANNEL, base_url=f"{slack.url}/api/"
        )
        notifier = SlackNotifier("oncall", config, store, charts=StubCharts())  # type: ignore[arg-type]
        slack.scripts = {"files.getUploadURLExternal": ok()}
        try:
            await notifier.deliver(entry("firing", "chart-regression"), uncertain=False)
            tasks = list(notifier._chart_tasks)
            await notifier.charts_done()
            assert [t.exception() for t in tasks] == [None]
        finally:
            slack.scripts = {}
            await notifier.close()

    with caplog.at_level("WARNING", logger="sentinel.notify.slack"):
        asyncio.run(run())
    assert any("not uploaded to Slack: TypeError" in r.getMessage() for r in caplog.records)
