"""Slack's interactivity endpoint: the buttons of alert messages (`POST /slack/interactions`).

Every request is checked with slack-sdk's `SignatureVerifier` against the signing secret
of each Slack notifier (HMAC-SHA256 of `v0:<timestamp>:<body>`), with the daemon's clock:
a timestamp more than 5 minutes away is refused, so a captured request cannot be
replayed later. A bad or missing signature answers 401, a payload, action or message
Sentinel does not know 400 — both before anything changes; no signing secret configured
answers 404.

A verified click acts through the same code as the API: "Silence 1h/4h" makes one silence
per firing alert of the message (`create_silence`, matchers `service`, `slo` and the
instance labels, author the clicking user), or, on a message of several services' alerts
(`group_by: slo`), one per SLO and set of its other instance labels (a burn tier) with
`service=~` the services shown;
"Acknowledge" goes to the alert manager in one write (reminders stop, who and when
recorded). "Open dashboard" is a link; its click changes
nothing. Slack wants an answer within 3 s: the handler writes to the local store
(milliseconds) and answers; the message update (`chat.update`) follows in a background
task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiohttp import web

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store import SlackMember
from sentinel.alerting.store_api import StateStore
from sentinel.config import Config, SlackNotifierConfig
from sentinel.errors import StateStoreWriteError
from sentinel.notify.slack_actions import ACK_ACTION, OPEN_ACTION, SILENCE_ACTIONS
from sentinel.web.alerts_api import create_silence
from sentinel.web.app import json_response

if TYPE_CHECKING:
    from sentinel.notify.slack import SlackNotifier

log = logging.getLogger("sentinel.slack")


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def verified(secrets: list[str], body: bytes, headers: Mapping[str, str], now: float) -> bool:
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    if not timestamp.isdigit():
        return False  # slack-sdk would raise on a timestamp that is not an integer
    signature = headers.get("X-Slack-Signature")
    if signature is None or not signature.isascii():
        return False  # slack-sdk's compare_digest of str would raise TypeError (a 500)
    # Loaded at the first click: a daemon without a Slack notifier never needs it.
    from slack_sdk.signature import Clock, SignatureVerifier

    class DaemonClock(Clock):
        def now(self) -> float:
            return now

    clock = DaemonClock()
    return any(
        SignatureVerifier(secret, clock).is_valid(body, timestamp, signature) for secret in secrets
    )


def _actor(payload: dict[str, Any]) -> str:
    user = payload.get("user") or {}
    return str(user.get("username") or user.get("name") or user.get("id") or "unknown")


def slack_routes(
    manager: AlertManager,
    store: StateStore,
    config: Callable[[], Config],
    notifiers: Callable[[], Mapping[str, object]],
    clock: Callable[[], float] = time.time,
) -> list[web.RouteDef]:
    refreshes: set[asyncio.Task[None]] = set()

    def secrets() -> list[str]:
        return [
            nc.signing_secret.get_secret_value()
            for nc in config().notifiers.values()
            if isinstance(nc, SlackNotifierConfig) and nc.signing_secret is not None
        ]

    async def interactions(request: web.Request) -> web.Response:
        body = await request.read()
        known = secrets()
        if not known:
            return _error(404, "Slack interactivity is not configured (signing_secret)")
        now = clock()
        if not verified(known, body, request.headers, now):
            return _error(401, "invalid or expired Slack signature")
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
            action = payload["actions"][0]["action_id"]
            channel = payload["container"]["channel_id"]
            ts = payload["container"]["message_ts"]
        except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError):
            return _error(400, "not a Slack block_actions payload")
        if payload.get("type") != "block_actions":
            return _error(400, f"unsupported interaction type {payload.get('type')!r}")
        if action == OPEN_ACTION:
            return json_response({})  # a link button: Slack opened the dashboard
        if action not in SILENCE_ACTIONS and action != ACK_ACTION:
            return _error(400, f"unknown action {action!r}")
        incidents = store.slack_message_incidents(str(channel), str(ts))
        if not incidents:
            return _error(400, "not a message of an alert Sentinel sent")
        name = incidents[0][0]
        # The open incidents of the message: each is acknowledged; those whose alert was
        # stored (all since schema 4) are what a silence is made from.
        open_ = [
            m
            for m in store.slack_members(name, channel, ts)
            if m.incident is None or m.incident["resolved_at"] is None
        ]
        members = [m for m in open_ if m.alert is not None]
        actor = _actor(payload)
        try:
            if action == ACK_ACTION:
                # One write for every incident of the message (hundreds, grouped by SLO).
                manager.acknowledge_many([m.incident_id for m in open_], actor, now)
            elif len({_service(m) for m in members}) > 1:
                _silence_services(action, members, actor, now)
            else:
                for member in members:
                    _act(action, member, actor, now)
        except StateStoreWriteError as exc:
            return _error(503, f"state store: {exc.error}")
        except ValueError as exc:
            return _error(400, str(exc))
        from sentinel.notify.slack import SlackNotifier  # configured, so loaded already

        notifier = notifiers().get(name)
        if isinstance(notifier, SlackNotifier) and members:
            first = members[0]
            service = first.incident["service"] if first.incident else ""
            env = (first.alert or {}).get("env")
            task = asyncio.create_task(_refresh(notifier, channel, ts, service, env, now))
            refreshes.add(task)
            task.add_done_callback(refreshes.discard)
        return json_response({})

    def _act(action: str, member: SlackMember, actor: str, now: float) -> None:
        alert = member.alert or {}
        matchers = {**_matchable(alert), "service": _service(member), "slo": alert["slo"]}
        body = {
            "matchers": matchers,
            "duration": SILENCE_ACTIONS[action],
            "author": actor,
            "comment": f"from Slack (incident {member.incident_id})",
        }
        create_silence(store, body, now)

    def _silence_services(action: str, members: list[SlackMember], actor: str, now: float) -> None:
        """A message of several services' alerts (`group_by: slo`): one silence per SLO and
        instance labels other than the service (a burn tier, a region) of it, for exactly
        the services it shows with them, as the per-alert silences would match (a silence
        per alert would be hundreds after a platform-wide breach, each matched against
        every alert of every cycle)."""
        groups: dict[tuple[str, tuple[tuple[str, str], ...]], set[str]] = {}
        for member in members:
            alert = member.alert or {}
            rest = tuple(sorted((str(k), str(v)) for k, v in _matchable(alert).items()))
            groups.setdefault((str(alert["slo"]), rest), set()).add(_service(member))
        for (slo, rest), services in sorted(groups.items()):
            body = {
                "matchers": [
                    *({"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in rest),
                    {"name": "slo", "value": slo, "isRegex": False, "isEqual": True},
                    {
                        "name": "service",
                        "value": "|".join(re.escape(s) for s in sorted(services)),
                        "isRegex": True,
                        "isEqual": True,
                    },
                ],
                "duration": SILENCE_ACTIONS[action],
                "author": actor,
                "comment": f"from Slack ({len(services)} services of one message)",
            }
            create_silence(store, body, now)

    return [web.post("/slack/interactions", interactions)]


def _matchable(alert: dict[str, Any]) -> dict[str, str]:
    """An alert's instance labels a silence can match: not `service`, `slo` and `severity`,
    which `alert_labels` sets from the alert itself over any label of those names (a
    matcher on such a label's own value would never match, and silence nothing)."""
    labels = alert.get("labels", {})
    return {str(k): str(v) for k, v in labels.items() if k not in ("service", "slo", "severity")}


def _service(member: SlackMember) -> str:
    if member.incident:
        return str(member.incident["service"])
    return str((member.alert or {}).get("service", ""))


async def _refresh(
    notifier: SlackNotifier, channel: str, ts: str, service: str, env: str | None, now: float
) -> None:
    try:
        await notifier.refresh(channel, ts, service, env, now)
    except Exception as exc:  # the click has acted; only the message lags behind
        log.warning(f"Slack message {channel}/{ts} not updated after a button: {exc}")
