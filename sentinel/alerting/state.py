"""The alert state machine, pure and clock-injected.

    inactive ──breach──▶ pending ──held for `for`──▶ firing ──ok for `keep_firing_for`──▶ resolved
        ▲                   │ok                                                              │
        └───────────────────┴──────────────────────────────◀─────────────────────────────────┘

`no_data` follows the rule's policy: `keep_state` (default) changes nothing, `alerting`
counts as a breach, `ok` as recovery. With `no_data_for`, data missing for longer than
that counts as a breach whatever the policy. Each firing episode is an incident with a
stable id derived from the instance key and the time it fired. A firing alert's last
breach (`last_breach_at`) moves at each breach only when `keep_firing_for` holds it from
then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any

import orjson

from sentinel import jsonenc
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.model import AlertPolicy, NoDataPolicy


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class TransitionKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    REPEAT = "repeat"


# Enum members read once: in CPython 3.11 a member read through its class costs ~75 ns
# (the enum metaclass's `__getattr__` defeats the type attribute cache), and the state
# machine reads several per result, for thousands of results a cycle.
_BREACH, _OK, _NO_DATA = Status.BREACH, Status.OK, Status.NO_DATA
_INACTIVE, _PENDING = AlertState.INACTIVE, AlertState.PENDING
_FIRING, _RESOLVED = AlertState.FIRING, AlertState.RESOLVED
_QUIET = (_INACTIVE, _RESOLVED)


@dataclass(frozen=True, slots=True)
class Alert:
    # Slots: the daemon holds one per SLO instance and burn tier (70,000 at 10,000
    # services x 3 SLIs), and an instance __dict__ was two thirds of each (~16 MB there).
    key: str
    state: AlertState = AlertState.INACTIVE
    since: float = 0.0
    pending_since: float | None = None
    last_breach_at: float | None = None
    no_data_since: float | None = None
    incident_id: str | None = None
    fired_at: float | None = None
    last_notified_at: float | None = None
    repeats: int = 0
    # Resolved because its SLO left the rules of the replica that led then: a replica
    # whose rules changed last before this (an old one, mid rolling deploy) leaves it be.
    retired_at: float | None = None


def alert_fields(alert: Alert) -> dict[str, Any]:
    """An Alert's fields as a dict, as stored: they are flat (numbers, strings, an enum),
    so without asdict()'s recursive copy (most of a commit's CPU when hundreds of firing
    alerts are saved each cycle)."""
    return dict(zip(ALERT_FIELDS, _alert_values(alert), strict=True))


ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_alert_values = attrgetter(*ALERT_FIELDS)


def alert_data(alert: Alert) -> str:
    """An Alert as its store row's `data` (JSON): a function of its fields alone, since an
    Alert is frozen, so it may be encoded ahead of the write that saves it.

    orjson first, not `jsonenc`: a firing alert held by keep_firing_for has its row
    written every cycle (its last breach), 3.7 -> 1.3 us a row. The fields are flat
    (strings, an enum, numbers, None), and orjson writes a non-finite float as null too,
    so the rule `jsonenc` keeps holds.
    It refuses a str that is not UTF-8 (a lone surrogate) and an integer beyond 64 bits.
    Neither reaches an Alert today (label values come from answers orjson decoded, names
    from rules pydantic checked); should one, `jsonenc` writes the row as before."""
    row = alert_fields(alert)
    try:
        return orjson.dumps(row).decode()
    except TypeError:
        return jsonenc.dumps(row)


_FIELD_AT = {name: i for i, name in enumerate(ALERT_FIELDS)}


def evolve(alert: Alert, **changes: Any) -> Alert:
    """`dataclasses.replace` for the state machine's hot path, at half its cost (it walks
    the class's fields on every call); the same Alert (tested field by field)."""
    values = list(_alert_values(alert))
    for name, value in changes.items():
        at = _FIELD_AT.get(name)
        if at is None:
            raise TypeError(f"Alert has no field {name!r}")  # as replace() says it
        values[at] = value
    return Alert(*values)


def alerts_data(alerts: Sequence[Alert], given: Sequence[str] | None = None) -> Sequence[str]:
    """Each alert's `alert_data`: `given` when the caller encoded them already (one per
    alert, in order: the stores zip them with `strict=True`), else encoded here."""
    return [alert_data(a) for a in alerts] if given is None else given


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    alert: Alert
    result: SLOResult
    # Why a RESOLVED happened when it is not the SLO's own measure (the SLO was removed
    # from the rules): shown instead of the last measurement.
    because: str = ""


def incident_id(key: str, fired_at: float) -> str:
    return hashlib.sha256(f"{key}@{fired_at:.3f}".encode()).hexdigest()[:16]


def _breaching(alert: Alert, result: SLOResult, policy: AlertPolicy, now: float) -> bool | None:
    """True/False, or None to keep the current state."""
    if result.status is _BREACH:
        return True
    if result.status is _OK:
        return False
    since = alert.no_data_since if alert.no_data_since is not None else now
    if policy.no_data_for is not None and now - since >= policy.no_data_for:
        return True
    if policy.no_data is NoDataPolicy.ALERTING:
        return True
    if policy.no_data is NoDataPolicy.OK:
        return False
    return None


def step(
    prev: Alert | None, result: SLOResult, policy: AlertPolicy, now: float
) -> tuple[Alert, Transition | None]:
    alert = prev or Alert(key=result.key, since=now)
    no_data_since = (
        (alert.no_data_since if alert.no_data_since is not None else now)
        if result.status is _NO_DATA
        else None
    )
    # A new Alert costs microseconds: every firing alert is stepped every cycle, and its
    # no_data_since rarely changes.
    if no_data_since != alert.no_data_since:
        alert = evolve(alert, no_data_since=no_data_since)
    breaching = _breaching(alert, result, policy, now)
    if breaching is None:
        return alert, None
    if alert.state in _QUIET:
        if not breaching:
            return alert, None
        pending = evolve(alert, state=_PENDING, since=now, pending_since=now)
        if policy.for_ <= 0:
            return _fire(pending, result, now)
        return pending, None
    if alert.state is _PENDING:
        if not breaching:
            return evolve(alert, state=_INACTIVE, since=now, pending_since=None), None
        assert alert.pending_since is not None
        if now - alert.pending_since >= policy.for_:
            return _fire(alert, result, now)
        return alert, None
    # FIRING
    if breaching:
        last = alert.last_notified_at
        if last is None:
            last = alert.fired_at if alert.fired_at is not None else now
        if now - last >= policy.repeat_interval:
            alert = evolve(
                alert, last_breach_at=now, last_notified_at=now, repeats=alert.repeats + 1
            )
            return alert, Transition(TransitionKind.REPEAT, alert, result)
        if policy.keep_firing_for > 0:
            return evolve(alert, last_breach_at=now), None
        # Without keep_firing_for the last breach decides nothing: it stays the time the
        # alert last notified (fired or repeated), so a still-firing alert is the same
        # Alert every cycle and its row is not written again (830 rows a cycle at 1,000
        # services with 830 firing; an UPDATE each on a PostgreSQL leader). Not None:
        # an earlier version reading the row would hold it for ever under
        # keep_firing_for. A row of such a version, or of rules that had
        # keep_firing_for, is brought to that once.
        if alert.last_breach_at != alert.last_notified_at:
            return evolve(alert, last_breach_at=alert.last_notified_at), None
        return alert, None
    if policy.keep_firing_for > 0:
        last_breach = alert.last_breach_at
        if last_breach is None or last_breach == alert.last_notified_at:
            # Not known to have breached since it last notified (its rules had no
            # keep_firing_for until a reload, a restart or a new leader): held from now,
            # never less than from its last breach.
            return evolve(alert, last_breach_at=now), None
        if now - last_breach < policy.keep_firing_for:
            return alert, None
    resolved = evolve(alert, state=_RESOLVED, since=now, pending_since=None)
    return resolved, Transition(TransitionKind.RESOLVED, resolved, result)


def _fire(alert: Alert, result: SLOResult, now: float) -> tuple[Alert, Transition]:
    fired = evolve(
        alert,
        state=AlertState.FIRING,
        since=now,
        incident_id=incident_id(alert.key, now),
        fired_at=now,
        last_breach_at=now,
        last_notified_at=now,
        repeats=0,
    )
    return fired, Transition(TransitionKind.FIRING, fired, result)
