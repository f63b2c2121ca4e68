"""Slack notifier (slack-sdk async clients).

Bot token: `chat.postMessage` when an incident fires, `chat.update` of the same message
when it changes, thread replies for reminders and the resolve. Incoming-webhook URL: post
only.

Alerts of one service that fire in the same cycle share one message. That message always
shows the group's true state: it is re-rendered from every incident it holds (their
latest payloads, kept with the message reference, and their resolve times from the
incidents table), so it says FIRING, with which alerts resolved and which still fire,
until the last one resolves. Thread replies name what resolved and what still fires.

Every message carries Slack message metadata with the outbox idempotency key, so after a
crash mid-send (or a retry after a partial delivery) the notifier looks the message up
(`conversations.history` / `conversations.replies`) instead of posting it twice.

429 (a Retry-After of at most 5 s waited in place), 5xx and connection errors are retried
by slack-sdk's retry handlers, then by the outbox (honouring Retry-After, capped at 1 h);
so are Slack's transient codes (RETRYABLE_ERRORS) and answers that are not Slack's JSON (a
proxy's page); permanent errors (`invalid_auth`, `channel_not_found`) are rejected with
Slack's error code and shown in /health/detailed.

Charts (`charts: true`, bot token only): once the message is delivered, a PNG of each
alert's SLI (`notify/chart.py`) is uploaded into the incident's thread with
`files_upload_v2`, at firing and at resolve. That runs as a background task after the
outbox entry is done: a slow Prometheus or a failing render delays no message and a
failed upload is logged, never retried (a picture never blocks a page, and a retry must
not post the text twice).

Buttons: while any of its alerts fires, a message carries "Silence 1h", "Silence 4h",
"Acknowledge" and "Open dashboard"; Slack sends the clicks to `POST /slack/interactions`
(`web/slack_api.py`, which acts through the silences and the alert manager and then calls
`refresh`). The message says who silenced or acknowledged, and until when.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from sentinel.alerting.silences import alert_labels
from sentinel.alerting.store import OutboxEntry, SlackMember
from sentinel.alerting.store_api import StateStore
from sentinel.config import SlackNotifierConfig
from sentinel.errors import ChartUnavailable, NotifyRejected, NotifyRetryable
from sentinel.evaluate.slo import rfc3339
from sentinel.health import DependencyHealth
from sentinel.notify.base import summary_line
from sentinel.notify.chart import ChartMaker
from sentinel.notify.slack_actions import ACK_ACTION, OPEN_ACTION
from sentinel.units import format_measure

# Block Kit limits (api.slack.com/reference/block-kit/blocks): header text 150 chars,
# section text 3,000 chars, 50 blocks per message.
HEADER_MAX, SECTION_MAX, MAX_ALERT_SECTIONS = 150, 3000, 20
# Slack's error codes for conditions that pass (docs.slack.dev: "transient", "until the
# migration is complete", rate and message limits); every other code is permanent.
RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",  # chat.postMessage: more than about one message a second a channel
        "message_limit_exceeded",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
        "org_login_required",
    }
)
# A 429 is retried in place only when its Retry-After is this short; a longer (or
# unreadable) one goes back to the outbox, which waits it out without holding a delivery.
INLINE_RETRY_MAX = 5.0
# The longest Retry-After honoured: a larger value is a broken proxy, not a rate limit.
RETRY_AFTER_MAX = 3600.0
EVENT_TYPE = "sentinel_alert"
ICONS = {"firing": "🔴", "repeat": "🔁", "resolved": "✅"}
MAX_CHARTS = 4  # per notification: a group of many alerts gets the first few charted
# A message of several services' alerts (`group_by: slo`) lists each in one line, this many
# at most (sections of SECTION_MAX characters), then how many more.
MAX_SERVICE_LINES = 60

log = logging.getLogger("sentinel.notify.slack")


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as delta-seconds (what Slack sends), capped at RETRY_AFTER_MAX; None
    when absent or not a number of seconds >= 0 (a date, garbage, NaN)."""
    for key, value in (headers or {}).items():
        if str(key).lower() != "retry-after":
            continue
        raw = value[0] if isinstance(value, list) and value else value
        try:
            seconds = float(str(raw).strip())
        except ValueError:
            return None
        return min(seconds, RETRY_AFTER_MAX) if seconds >= 0 else None  # NaN fails >= too
    return None


class _RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's 429 handler reads Retry-After with int() and sleeps that long: a date
    or garbage raised ValueError out of the API call, and an hour's Retry-After held the
    delivery for its whole timeout. Here a 429 is retried in place only after a short,
    readable Retry-After; otherwise it becomes NotifyRetryable for the outbox."""

    async def _can_retry_async(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        seconds = retry_after_seconds(response.headers)
        return seconds is not None and seconds <= INLINE_RETRY_MAX

    async def prepare_for_next_attempt_async(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> None:
        state.next_attempt_requested = True
        await asyncio.sleep((retry_after_seconds(response.headers) or 1.0) + random.random())
        state.increment_current_attempt()


def _retry_handlers() -> list[Any]:
    return [
        _RateLimitRetry(max_retry_count=1),
        AsyncServerErrorRetryHandler(max_retry_count=2),
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# An alert shown in a message, with its state there: "firing", "repeat" or "resolved".
Member = tuple[dict[str, Any], str]


def render_blocks(entry: OutboxEntry, state: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for an outbox entry, every alert in one state."""
    kind = state or entry.kind
    members = [(alert, kind) for alert in entry.payload["alerts"]]
    return render_message(entry.service, entry.payload.get("env"), members)


def render_message(
    service: str,
    env: str | None,
    members: list[Member],
    notes: Sequence[str] = (),
    buttons: bool = False,
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for a message holding these alerts. When some resolved
    and others still fire, the message is FIRING and says which are which. `buttons`
    only where clicks can be verified and acted on (a bot with a signing secret)."""
    kind, mixed, alerts, firing = _shape(members)
    services = services_of(members, service)
    if len(services) > 1:
        return _render_services(service, services, members, notes, buttons)
    service = services[0]
    title = f"{ICONS.get(kind, '')} {kind.upper()}: {service}"
    if mixed:
        title += f" — {len(firing)} of {len(alerts)} SLOs still firing"
    else:
        title += f" — {alerts[0]['slo']}" if len(alerts) == 1 else f" — {len(alerts)} SLOs"
    # The header is plain text; everything below is mrkdwn, where what the alerts carry
    # (labels, services, reasons, queries) is escaped: a label value `<!channel>` would
    # otherwise notify the whole channel, and `<https://x|y>` would be a link.
    members, service, env = _shown_members(members), _md(service), _md(env) if env else env
    kind, mixed, alerts, firing = _shape(members)
    severity = _severity(firing or alerts)
    context = f"*Severity:* {severity}  *Service:* {service}  *Env:* {env or '-'}"
    if mixed:
        resolved = [alert_name(a) for a, k in members if k == "resolved"]
        context += f"\n*Still firing:* {', '.join(map(alert_name, firing))}"
        context += f"  *Resolved:* {', '.join(resolved)}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(title, HEADER_MAX), "emoji": True},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]},
    ]
    for alert, state in members[:MAX_ALERT_SECTIONS]:
        text = _alert_text(alert, state)
        if mixed:
            text = ("✅ *Resolved* · " if state == "resolved" else "🔴 *Still firing* · ") + text
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}}
        )
    _more_and_notes(blocks, len(members) - MAX_ALERT_SECTIONS, notes)
    if firing and buttons:
        blocks.append(
            _buttons(next((a["dashboard_url"] for a in firing if a.get("dashboard_url")), None))
        )
    lines = [
        summary_line(a) + (" (resolved)" if mixed and k == "resolved" else "")
        for a, k in members[:5]
    ]
    return _cut(f"{_md(title)}: " + "; ".join(lines), 3000), blocks


def _md(text: str) -> str:
    """Text for Slack mrkdwn: `&`, `<` and `>` escaped, as Slack's formatting docs ask of
    anything not meant as a link, mention or date."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Payload fields that are links Sentinel writes as `<url|text>`: not escaped.
_LINKS = frozenset({"runbook_url", "dashboard_url"})


def _shown(alert: dict[str, Any]) -> dict[str, Any]:
    """A copy of an alert payload to show in mrkdwn: its strings and labels escaped."""
    out = {k: _md(v) if isinstance(v, str) and k not in _LINKS else v for k, v in alert.items()}
    labels = alert.get("labels")
    if isinstance(labels, dict):
        out["labels"] = {_md(str(k)): _md(str(v)) for k, v in labels.items()}
    return out


def _shown_members(members: list[Member]) -> list[Member]:
    return [(_shown(alert), state) for alert, state in members]


def _shape(
    members: list[Member],
) -> tuple[str, bool, list[dict[str, Any]], list[dict[str, Any]]]:
    """(the message's state, whether its alerts are in several states, its alerts, those
    still firing)."""
    kinds = {kind for _, kind in members}
    mixed = len(kinds) > 1
    alerts = [alert for alert, _ in members]
    firing = [a for a, k in members if k != "resolved"]
    return "firing" if mixed else next(iter(kinds)), mixed, alerts, firing


def services_of(members: list[Member], service: str) -> list[str]:
    """The services a message's alerts are of (`alert_service`), sorted."""
    return sorted({alert_service(a, service) for a, _ in members})


def alert_service(alert: dict[str, Any], service: str) -> str:
    """The service an alert is of: its own (payloads since `group_by: slo`), else the
    entry's (an entry grouped by service holds alerts of that service only)."""
    own = alert.get("service")
    return own if isinstance(own, str) and own else service


def _severity(alerts: list[dict[str, Any]]) -> str:
    return max((str(a["severity"]) for a in alerts), key=("info", "ticket", "page").index)


def _render_services(
    fallback: str,
    services: list[str],
    members: list[Member],
    notes: Sequence[str],
    buttons: bool,
) -> tuple[str, list[dict[str, Any]]]:
    """A message of several services' alerts (`group_by: slo`): what they share once (the
    SLO, and its description, objective, runbook and env where every alert agrees: SLOs of
    one name in several rule files share a message), then one line per alert, firing ones
    first."""
    kind, mixed, alerts, firing = _shape(members)

    def shared(*keys: str) -> bool:
        return all(len({repr(a.get(k)) for a in alerts}) == 1 for k in keys)

    slos = sorted({str(a["slo"]) for a in alerts})
    what = slos[0] if len(slos) == 1 else f"{len(slos)} SLOs"
    title = f"{ICONS.get(kind, '')} {kind.upper()}: {what} on {len(services)} services"
    if mixed:
        title += f" — {len(firing)} of {len(alerts)} alerts still firing"
    members, fallback = _shown_members(members), _md(fallback)  # mrkdwn below (render_message)
    kind, mixed, alerts, firing = _shape(members)
    envs = sorted({str(e) for a in alerts if (e := a.get("labels", {}).get("env") or a.get("env"))})
    context = (
        f"*Severity:* {_severity(firing or alerts)}  *Services:* {len(services)}  "
        f"*Env:* {', '.join(envs) or '-'}"
    )
    first = alerts[0]
    about = [f"*{_md(what)}*"]
    if shared("slo", "description") and first.get("description"):
        about[0] += f" — {first['description']}"
    if shared("slo", "objective", "threshold", "sli_kind") and first.get("objective") is not None:
        threshold = format_measure(first.get("sli_kind", ""), first["threshold"])
        about.append(f"Objective: {first['objective'] * 100:g} % (threshold {threshold})")
    if shared("runbook_url") and first.get("runbook_url"):
        about.append(f"<{first['runbook_url']}|Runbook>")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(title, HEADER_MAX), "emoji": True},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut("\n".join(about), SECTION_MAX)},
        },
    ]
    order = sorted(members, key=lambda m: (m[1] == "resolved", alert_service(m[0], fallback)))

    def measured(alert: dict[str, Any]) -> str:
        """`2 % > 0.5 % over 5m`: the SLO's name, said once above, not on every line."""
        line = summary_line(alert)
        prefix = f"{alert['slo']} = "
        return line[len(prefix) :] if len(slos) == 1 and line.startswith(prefix) else line

    lines = [
        f"{ICONS.get(state, '')} *{alert_service(alert, fallback)}* · {measured(alert)}"
        + (f" `{_instance(alert)}`" if _instance(alert) else "")
        for alert, state in order[:MAX_SERVICE_LINES]
    ]
    chunk: list[str] = []
    for line in lines:
        line = _cut(line, 500)
        if chunk and sum(len(c) + 1 for c in chunk) + len(line) > SECTION_MAX:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
    _more_and_notes(blocks, len(members) - MAX_SERVICE_LINES, notes)
    if firing and buttons:
        # A dashboard link only when every alert shown links the same one.
        dashboard = firing[0].get("dashboard_url") if shared("dashboard_url") else None
        blocks.append(_buttons(dashboard))
    summary = "; ".join(
        f"{alert_service(a, fallback)}: {summary_line(a)}"
        + (" (resolved)" if k == "resolved" else "")
        for a, k in order[:5]
    )
    return _cut(f"{_md(title)}: {summary}", 3000), blocks


def _more_and_notes(blocks: list[dict[str, Any]], more: int, notes: Sequence[str]) -> None:
    """A message's closing context blocks: how many alerts it did not list, its notes."""
    for text in ([f"…and {more} more"] if more > 0 else []) + (["\n".join(notes)] if notes else []):
        element = {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}
        blocks.append({"type": "context", "elements": [element]})


def _short_name(alert: dict[str, Any], service: str) -> str:
    """An alert of a message of one SLO's alerts of several services: its service, and
    its other instance labels if any."""
    instance = _instance(alert)
    return alert_service(alert, service) + (f" ({instance})" if instance else "")


def _instance(alert: dict[str, Any]) -> str:
    """The alert's instance labels other than its service (a region, a burn tier)."""
    labels = alert.get("labels", {})
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "service")


def _buttons(dashboard: str | None) -> dict[str, Any]:
    def button(action_id: str, text: str, **extra: Any) -> dict[str, Any]:
        label = {"type": "plain_text", "text": text}
        return {"type": "button", "action_id": action_id, "text": label, **extra}

    elements = [
        button("sentinel_silence_1h", "Silence 1h"),
        button("sentinel_silence_4h", "Silence 4h"),
        button(ACK_ACTION, "Acknowledge", style="primary"),
    ]
    if dashboard:
        elements.append(button(OPEN_ACTION, "Open dashboard", url=dashboard))
    return {"type": "actions", "block_id": "sentinel_actions", "elements": elements}


def alert_name(alert: dict[str, Any]) -> str:
    """The SLO, with the instance labels when it is one of several instances."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
    return f"{alert['slo']}{{{labels}}}" if labels else str(alert["slo"])


def _member(m: SlackMember) -> Member | None:
    """An incident of a shared message as (alert, state); resolved per the incidents
    table, which the resolve commits with its notification."""
    alert, incident = m.alert, m.incident
    if alert is None:
        if incident is None:
            return None
        # A reference stored before payloads were kept (schema < 4): what the row knows.
        alert = {
            "incident_id": m.incident_id,
            "service": incident["service"],
            "slo": incident["slo"],
            "severity": incident["severity"],
            "labels": incident["labels"],
            "value": incident["last_value"],
            "threshold": incident["threshold"],
            "started_at": incident["started_at"],
            "started_at_text": rfc3339(incident["started_at"]),
        }
    if "service" not in alert and incident is not None:
        # Stored before payloads named their service: the incident row does.
        alert = {**alert, "service": incident["service"]}
    resolved_at = incident["resolved_at"] if incident else None
    if alert.get("resolved_at_text") is None and resolved_at is not None:
        alert = {**alert, "resolved_at_text": rfc3339(resolved_at)}
    return alert, "resolved" if alert.get("resolved_at_text") else "firing"


def _alert_text(alert: dict[str, Any], kind: str) -> str:
    lines = [
        f"*{alert['slo']}*" + (f" — {alert['description']}" if alert.get("description") else "")
    ]
    labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
    if labels:
        lines.append(f"Instance: `{labels}`")
    lines.append(f"Measured: *{summary_line(alert)}*")
    if alert.get("objective") is not None:
        threshold = format_measure(alert.get("sli_kind", ""), alert["threshold"])
        lines.append(f"Objective: {alert['objective'] * 100:g} % (threshold {threshold})")
    started = int(alert["started_at"])
    lines.append(
        f"Firing since: <!date^{started}^{{date_short_pretty}} {{time}}|{alert['started_at_text']}>"
    )
    if kind == "resolved" and alert.get("resolved_at_text"):
        lines.append(f"Resolved at: {alert['resolved_at_text']}")
    links = []
    if alert.get("dashboard_url"):
        links.append(f"<{alert['dashboard_url']}|Dashboard>")
    if alert.get("runbook_url"):
        links.append(f"<{alert['runbook_url']}|Runbook>")
    if links:
        lines.append(" · ".join(links))
    if alert.get("query"):
        lines.append(f"```{_cut(alert['query'], 900)}```")
    return "\n".join(lines)


class UnreadableAnswer(Exception):
    """Slack answered `ok` without a field Sentinel reads, or with the wrong type."""


def _answer_text(answer: Any, key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value:
        raise UnreadableAnswer(f"answer without a {key!r} string (got {value!r:.40})")
    return value


def _raised_in_slack_sdk(exc: BaseException) -> bool:
    """Whether `exc` was raised inside slack-sdk (its reading of an answer that is not an
    object: `1`, `[]`), rather than by Sentinel's own code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "slack_sdk" in tb.tb_frame.f_code.co_filename


def _error_code(response: Any) -> str:
    """Slack's `error` code; `unknown_error` when the body was no JSON object (a proxy's
    HTML or plain-text 5xx page: slack-sdk then holds the text, and `.get` would raise)."""
    data = getattr(response, "data", None)
    return str(data.get("error", "unknown_error")) if isinstance(data, dict) else "unknown_error"


class SlackNotifier:
    kind = "slack"

    def __init__(
        self,
        name: str,
        config: SlackNotifierConfig,
        store: StateStore,
        charts: ChartMaker | None = None,
    ) -> None:
        self.name = name
        self.charts = charts if config.charts else None
        # Buttons only when Slack's clicks can be verified (and never on incoming webhooks).
        self.buttons = config.signing_secret is not None
        self._chart_tasks: set[asyncio.Task[None]] = set()
        self.config = config
        self.min_severity: str = config.min_severity
        # Read by the alert manager: which alerts share a message (and an outbox queue).
        self.group_by: str = config.group_by
        self.store = store
        target = "webhook" if config.webhook_url else f"{config.base_url} {config.channel or ''}"
        self.health = DependencyHealth(name=f"notifier:{name}", target=target.strip())
        self._web: AsyncWebClient | None = None
        self._hook: AsyncWebhookClient | None = None
        if config.token is not None:
            self._web = AsyncWebClient(
                token=config.token.get_secret_value(),
                base_url=config.base_url,
                timeout=10,
                retry_handlers=_retry_handlers(),
            )
        elif config.webhook_url is not None:
            self._hook = AsyncWebhookClient(
                config.webhook_url.get_secret_value(), timeout=10, retry_handlers=_retry_handlers()
            )

    async def close(self) -> None:
        for task in list(self._chart_tasks):
            task.cancel()
        await self.charts_done()
        for client in (self._web, self._hook):
            session = getattr(client, "session", None)
            if session is not None:
                await session.close()

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        started = time.monotonic()
        try:
            if self._web is not None:
                await self._deliver_bot(self._web, entry, uncertain)
            elif self._hook is not None:
                await self._deliver_webhook(self._hook, entry)
            else:
                raise NotifyRejected(self.name, "neither token nor webhook_url is configured")
        except SlackApiError as exc:
            error = self._translate(exc)
            self.health.record_failure(time.monotonic() - started, error.detail)
            raise error from exc
        except (aiohttp.ClientError, TimeoutError, SlackRequestError) as exc:
            self.health.record_failure(time.monotonic() - started, f"{type(exc).__name__}: {exc}")
            raise NotifyRetryable(self.name, f"{type(exc).__name__}: {exc}") from exc
        except (UnreadableAnswer, AttributeError, TypeError, KeyError, ValueError) as exc:
            # An answer that is JSON but not Slack's (a number, `ok` without `ts`): slack-sdk
            # or our reading of it fails. Translated here, at the boundary, only when it
            # was the answer's reading that failed; anything else is a bug and propagates.
            if not isinstance(exc, UnreadableAnswer) and not _raised_in_slack_sdk(exc):
                raise
            detail = f"unreadable answer from Slack: {type(exc).__name__}: {exc}"[:300]
            self.health.record_failure(time.monotonic() - started, detail)
            raise NotifyRetryable(self.name, detail) from exc
        except (NotifyRetryable, NotifyRejected) as exc:
            self.health.record_failure(time.monotonic() - started, exc.detail)
            raise
        self.health.record_success(time.monotonic() - started)

    def notes(self, service: str, members: list[Member], now: float) -> list[str]:
        """Who acknowledged which alert, and which are silenced by whom until when; a
        resolved alert keeps the silences of its incident, as it keeps its acknowledgement
        (the record of who handled it stays on the message)."""
        acks = self.store.acknowledgements(a["incident_id"] for a, _ in members)
        silences = self.store.silences()
        active = [s for s in silences if s.active(now)]
        out = []
        several = len(services_of(members, service)) > 1
        # A message of several services' alerts (hundreds) says each acknowledgement and
        # silence once, with how many of its alerts it covers.
        counted: dict[str, set[str]] = {}  # note -> the incidents it covers
        for alert, state in members:
            who = acks.get(alert["incident_id"])
            view = _shown(alert)
            name = _short_name(view, _md(service)) if several else alert_name(view)
            if who is not None and several:
                note = f"✋ acknowledged by {_md(who[0])} at {rfc3339(who[1])}"
                counted.setdefault(note, set()).add(alert["incident_id"])
            elif who is not None:
                out.append(f"✋ {name}: acknowledged by {_md(who[0])} at {rfc3339(who[1])}")
            shown = active
            if state == "resolved":
                began = alert.get("started_at")
                began = float(began) if isinstance(began, int | float) else now
                ended = _timestamp(alert.get("resolved_at_text")) or now
                shown = [s for s in silences if s.starts_at <= ended and s.ends_at > began]
            labels = alert_labels(
                alert_service(alert, service), alert["slo"], alert["severity"], alert["labels"]
            )
            for silence in shown:
                if not silence.matches(labels):
                    continue
                until = f"silenced by {_md(silence.author)} until {rfc3339(silence.ends_at)}"
                if several:
                    # Once per alert: two silences alike (a double click) are one note.
                    counted.setdefault(f"🔕 {until}", set()).add(alert["incident_id"])
                else:
                    out.append(f"🔕 {name}: {until}")
        total = len(members)
        out += [f"{note} ({len(ids)} of {total} alerts)" for note, ids in counted.items()]
        return out

    async def refresh(
        self, channel: str, ts: str, service: str, env: str | None, now: float
    ) -> None:
        """Re-render a message from its incidents (after a button acted on them)."""
        if self._web is None:
            return
        members = [m for m in map(_member, self.store.slack_members(self.name, channel, ts)) if m]
        if not members:
            return
        notes = self.notes(service, members, now)
        text, blocks = render_message(service, env, members, notes, self.buttons)
        await self._web.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    async def charts_done(self) -> None:
        """Wait for the chart uploads started so far (tests, shutdown)."""
        while self._chart_tasks:
            await asyncio.gather(*self._chart_tasks, return_exceptions=True)

    def _chart_later(
        self,
        client: AsyncWebClient,
        entry: OutboxEntry,
        alerts: list[dict[str, Any]],
        message: tuple[str, str],
    ) -> None:
        """Upload the alerts' charts into the message's thread, after this delivery."""
        if self.charts is None or not alerts:
            return
        task = asyncio.create_task(self._upload_charts(client, entry, alerts, message))
        self._chart_tasks.add(task)
        task.add_done_callback(self._chart_tasks.discard)

    async def _upload_charts(
        self,
        client: AsyncWebClient,
        entry: OutboxEntry,
        alerts: list[dict[str, Any]],
        message: tuple[str, str],
    ) -> None:
        assert self.charts is not None
        channel, ts = message
        resolved = entry.kind == "resolved"
        for alert in alerts[:MAX_CHARTS]:
            name = alert_name(alert)
            service = alert_service(alert, entry.service)
            try:
                png = await self.charts.png(service, alert, entry.created_at, resolved)
                await client.files_upload_v2(
                    channel=channel,
                    thread_ts=ts,
                    file=png,
                    filename=f"{alert['slo']}-{entry.kind}.png",
                    title=f"{service} {name} ({entry.kind})",
                    alt_txt=_cut(f"{entry.kind}: {summary_line(alert)}", 1000),
                )
            except ChartUnavailable as exc:
                log.warning(f"no chart for {service}/{name}: {exc}")
            except Exception as exc:
                # Best effort, never retried: any failure, including slack-sdk's own on an
                # odd answer (an ok without upload_url raised TypeError), is one warning.
                error = _error_code(exc.response) if isinstance(exc, SlackApiError) else exc
                log.warning(f"chart of {service}/{name} not uploaded to Slack: {error!r}")

    def _translate(self, exc: SlackApiError) -> NotifyRetryable | NotifyRejected:
        response = exc.response
        status = getattr(response, "status_code", 0)
        code = _error_code(response)
        detail = f"Slack API error {code} (HTTP {status})"
        # A body that is no JSON object with Slack's `ok` did not come from Slack's API (a
        # proxy's or a captive portal's page, a cut-short answer; slack-sdk then holds {}
        # or the text): nothing permanent was said, so retry.
        data = getattr(response, "data", None)
        not_slack = not isinstance(data, dict) or "ok" not in data
        if status == 429 or status >= 500 or code in RETRYABLE_ERRORS or not_slack:
            retry_after = retry_after_seconds(getattr(response, "headers", None))
            return NotifyRetryable(self.name, detail, retry_after)
        return NotifyRejected(self.name, detail)

    async def _deliver_webhook(self, hook: AsyncWebhookClient, entry: OutboxEntry) -> None:
        text, blocks = render_blocks(entry)
        response = await hook.send(text=text, blocks=blocks)
        if response.status_code == 429 or response.status_code >= 500:
            raise NotifyRetryable(
                self.name, f"webhook HTTP {response.status_code}: {response.body}"
            )
        if response.status_code >= 400:
            raise NotifyRejected(self.name, f"webhook HTTP {response.status_code}: {response.body}")

    async def _deliver_bot(
        self, client: AsyncWebClient, entry: OutboxEntry, uncertain: bool
    ) -> None:
        alerts: list[dict[str, Any]] = entry.payload["alerts"]
        # A retry may follow a partial delivery (one message updated, the next failed):
        # look before posting again.
        uncertain = uncertain or entry.attempts > 0
        if entry.kind == "firing":
            await self._post_root(client, entry, alerts, uncertain)
            return
        refs = {
            a["incident_id"]: self.store.slack_message(self.name, a["incident_id"]) for a in alerts
        }
        orphans = [a for a in alerts if refs[a["incident_id"]] is None]
        if orphans:
            # The firing message was never posted here (silenced then, or another notifier).
            await self._post_root(client, entry, orphans, uncertain)
        threaded = [a for a in alerts if refs[a["incident_id"]] is not None]
        if not threaded:
            return
        self.store.update_slack_alerts(self.name, threaded)
        for channel, ts in sorted({ref for ref in refs.values() if ref is not None}):
            mine = [a for a in threaded if refs[a["incident_id"]] == (channel, ts)]
            members = [
                m for m in map(_member, self.store.slack_members(self.name, channel, ts)) if m
            ] or [(a, entry.kind) for a in mine]
            if entry.kind == "resolved":
                notes = self.notes(entry.service, members, entry.created_at)
                env = entry.payload.get("env")
                text, blocks = render_message(entry.service, env, members, notes, self.buttons)
                await client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            sent = await self._post_reply(client, entry, mine, members, (channel, ts), uncertain)
            if sent and entry.kind == "resolved":
                self._chart_later(client, entry, mine, (channel, ts))

    def _metadata(self, entry: OutboxEntry) -> dict[str, Any]:
        return {
            "event_type": EVENT_TYPE,
            "event_payload": {"idempotency_key": entry.idempotency_key},
        }

    async def _post_root(
        self,
        client: AsyncWebClient,
        entry: OutboxEntry,
        alerts: list[dict[str, Any]],
        uncertain: bool,
    ) -> None:
        channel = self.config.channel
        if not channel:
            raise NotifyRejected(self.name, "channel is not configured")
        if uncertain:
            found = await self._find_sent(client, entry, channel, None)
            if found is not None:
                self.store.save_slack_message(self.name, alerts, found[0], found[1])
                return
        env = entry.payload.get("env")
        members = [(a, entry.kind) for a in alerts]
        text, blocks = render_message(entry.service, env, members, buttons=self.buttons)
        resp = await client.chat_postMessage(
            channel=channel,
            text=text,
            blocks=blocks,
            metadata=self._metadata(entry),
            unfurl_links=False,
        )
        message = (_answer_text(resp, "channel"), _answer_text(resp, "ts"))
        self.store.save_slack_message(self.name, alerts, *message)
        if entry.kind == "firing":
            self._chart_later(client, entry, alerts, message)

    async def _post_reply(
        self,
        client: AsyncWebClient,
        entry: OutboxEntry,
        mine: list[dict[str, Any]],
        members: list[Member],
        message: tuple[str, str],
        uncertain: bool,
    ) -> bool:
        """One thread reply: what this entry changed, and what of the group still fires.
        False when it had been sent already (before a crash)."""
        channel, ts = message
        if uncertain and await self._find_sent(client, entry, channel, ts) is not None:
            return False
        verb = {"resolved": "Resolved", "repeat": "Still firing"}.get(entry.kind, entry.kind)
        # A message of several services' alerts names each line's service. What the
        # alerts carry is escaped for mrkdwn (`render_message`).
        several = len(services_of(members, entry.service)) > 1
        mine, members, service = (
            [_shown(a) for a in mine],
            _shown_members(members),
            _md(entry.service),
        )
        lines = [
            f"{ICONS.get(entry.kind, '')} {verb}: "
            + (f"{alert_service(a, service)}: " if several else "")
            + summary_line(a)
            for a in mine
        ]
        tail = ""
        if entry.kind == "resolved" and len(members) > 1:
            ids = {a["incident_id"] for a in mine}
            still = [
                _short_name(a, service) if several else alert_name(a)
                for a, k in members
                if k != "resolved" and a["incident_id"] not in ids
            ]
            if still:
                tail = _cut(
                    f"{ICONS['firing']} Still firing ({len(still)} of {len(members)}): "
                    + ", ".join(still),
                    1000,
                )
            else:
                tail = f"All {len(members)} alerts of this message have resolved."
        # The closing line is kept whole when a storm's lines run past the message's length.
        body = (
            _cut("\n".join(lines), 3000 - len(tail) - 1) if tail else _cut("\n".join(lines), 3000)
        )
        await client.chat_postMessage(
            channel=channel,
            thread_ts=ts,
            text=f"{body}\n{tail}" if tail else body,
            metadata=self._metadata(entry),
        )
        return True

    async def _find_sent(
        self, client: AsyncWebClient, entry: OutboxEntry, channel: str, thread_ts: str | None
    ) -> tuple[str, str] | None:
        """Look for a message carrying this entry's idempotency key (sent before a crash)."""
        oldest = f"{entry.created_at - 60:.6f}"
        if thread_ts is None:
            resp = await client.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=200
            )
        else:
            resp = await client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=200
            )
        messages: Any = resp.get("messages", []) or []
        if not isinstance(messages, list):
            raise UnreadableAnswer(f"messages is {type(messages).__name__}, not a list")
        for message in messages:
            meta = message.get("metadata") if isinstance(message, dict) else None
            payload = meta.get("event_payload") if isinstance(meta, dict) else None
            key = payload.get("idempotency_key") if isinstance(payload, dict) else None
            if key == entry.idempotency_key:
                return str(resp.get("channel", channel)), _answer_text(message, "ts")
        await asyncio.sleep(0)
        return None


def _timestamp(text: Any) -> float | None:
    """An RFC 3339 time as the payloads carry it ("2026-11-20T13:08:00Z"), or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
