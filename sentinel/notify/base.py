"""What a notifier is, and the notification payload every notifier receives.

A payload groups the alerts of one service that changed the same way in one cycle;
it is plain JSON because it is stored in the outbox before delivery.
"""

from __future__ import annotations

from typing import Any, Protocol

from sentinel.alerting.store import OutboxEntry
from sentinel.health import DependencyHealth


class Notifier(Protocol):
    name: str
    kind: str
    min_severity: str
    health: DependencyHealth

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        """Deliver one outbox entry or raise NotifyRetryable / NotifyRejected.

        `uncertain` is True when an earlier attempt may have reached the receiver
        (the process died mid-send): the notifier must not deliver twice.
        """

    async def close(self) -> None: ...


def fmt_value(alert: dict[str, Any], value: float | None) -> str:
    if value is None:
        return "no data"
    kind = alert.get("sli_kind")
    if kind in ("ratio", "log_ratio"):
        return f"{value * 100:.3g} %"
    if kind == "latency":
        return f"{value:.3g} s"
    return f"{value:.4g}"


def summary_line(alert: dict[str, Any]) -> str:
    value, threshold = alert.get("value"), alert["threshold"]
    below = alert.get("good_when", "below") == "below"
    breached = value is not None and (value > threshold if below else value < threshold)
    op = (">" if below else "<") if breached else ("<=" if below else ">=")
    window = alert.get("window_text", "")
    return (
        f"{alert['slo']} = {fmt_value(alert, alert.get('value'))} {op} "
        f"{fmt_value(alert, alert.get('threshold'))} over {window}"
    )
