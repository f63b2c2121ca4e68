"""What a notifier is, and the notification payload every notifier receives.

A payload groups the alerts of one service that changed the same way in one cycle;
it is plain JSON because it is stored in the outbox before delivery.
"""

from __future__ import annotations

from typing import Any, Protocol

from sentinel.alerting.store import OutboxEntry
from sentinel.evaluate.probe_check import KIND as PROBE_KIND
from sentinel.health import DependencyHealth
from sentinel.units import comparison, format_measure


class Notifier(Protocol):
    name: str
    kind: str
    min_severity: str
    group_by: str  # which alerts share a notification: `service`, or `slo` (Slack only)
    health: DependencyHealth

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        """Deliver one outbox entry or raise NotifyRetryable / NotifyRejected.

        `uncertain` is True when an earlier attempt may have reached the receiver
        (the process died mid-send): the notifier must not deliver twice.
        """

    async def close(self) -> None: ...


def summary_line(alert: dict[str, Any]) -> str:
    value, threshold = alert.get("value"), alert["threshold"]
    if alert.get("sli_kind") == PROBE_KIND:
        # A synthetic probe's measure is its failing assertion, not `0 < 1`.
        verdict = "failed: " if value == 0 else ("no data: " if value is None else "")
        return f"{alert['slo']} {verdict}{alert.get('reason', '')}"
    good_when = alert.get("good_when", "below")
    below = good_when != "above"
    breached = value is not None and (value > threshold if below else value < threshold)
    kind = alert.get("sli_kind", "")
    window = alert.get("window_text", "")
    measured = (
        f"{format_measure(kind, value)} {comparison(good_when, breached)} "
        f"{format_measure(kind, threshold)} over {window}"
    )
    if alert.get("resolved_because"):
        # Resolved without a new measure (its SLO was removed from the rules).
        return f"{alert['slo']}: {alert['resolved_because']} (last measured {measured})"
    return f"{alert['slo']} = {measured}"
