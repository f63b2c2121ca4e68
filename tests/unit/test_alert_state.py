"""The alert state machine, table-driven with an explicit clock."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace

import pytest

from sentinel.alerting.state import Alert, AlertState, TransitionKind, alert_data, evolve, step
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.model import AlertPolicy, NoDataPolicy


def result(status: str) -> SLOResult:
    return SLOResult(
        service="svc",
        slo="p95",
        status=Status(status),
        value=None if status == "no_data" else 1.0,
        threshold=1.0,
        objective=None,
        window=300,
        evaluated_at=0,
    )


def run(policy: AlertPolicy, statuses: str, every: float = 60) -> tuple[list[str], list[str]]:
    """Feed one status per step ('B' breach, 'O' ok, 'N' no_data); return states and transitions."""
    alert, states, transitions = None, [], []
    codes = {"B": "breach", "O": "ok", "N": "no_data"}
    for i, code in enumerate(statuses):
        alert, tr = step(alert, result(codes[code]), policy, now=i * every)
        states.append(alert.state.value[0].upper())
        if tr is not None:
            transitions.append(f"{i}:{tr.kind.value}")
    return states, transitions


@pytest.mark.parametrize(
    ("policy", "statuses", "states", "transitions"),
    [
        (AlertPolicy(), "OBBO", "IFFR", ["1:firing", "3:resolved"]),
        (AlertPolicy(for_=120), "BBBBO", "PPFFR", ["2:firing", "4:resolved"]),
        (AlertPolicy(for_=120), "BOBOBO", "PIPIPI", []),
        (AlertPolicy(keep_firing_for=180), "BOBOBOOOO", "FFFFFFFRR", ["0:firing", "7:resolved"]),
        (AlertPolicy(), "BNNNO", "FFFFR", ["0:firing", "4:resolved"]),
        (AlertPolicy(no_data=NoDataPolicy.ALERTING), "ONNO", "IFFR", ["1:firing", "3:resolved"]),
        (
            AlertPolicy(no_data=NoDataPolicy.OK),
            "BNB",
            "FRF",
            ["0:firing", "1:resolved", "2:firing"],
        ),
        (AlertPolicy(no_data_for=120), "ONNNO", "IIIFR", ["3:firing", "4:resolved"]),
        (AlertPolicy(repeat_interval=120), "BBBBB", "FFFFF", ["0:firing", "2:repeat", "4:repeat"]),
    ],
    ids=[
        "a breach fires at once without `for`, and resolves on recovery",
        "`for` holds the alert pending until the breach lasted long enough",
        "a breach shorter than `for` never fires",
        "flapping inside keep_firing_for pages once and resolves once",
        "no_data keeps the state by default",
        "no_data can be alerting",
        "no_data can count as ok",
        "no data for longer than no_data_for fires",
        "reminders every repeat_interval while firing",
    ],
)
def test_transitions(
    policy: AlertPolicy, statuses: str, states: str, transitions: list[str]
) -> None:
    got_states, got_transitions = run(policy, statuses)
    assert "".join(got_states) == states
    assert got_transitions == transitions


def test_each_firing_episode_is_a_new_incident_with_a_stable_id() -> None:
    policy = AlertPolicy()
    a1, t1 = step(None, result("breach"), policy, 0)
    a2, _ = step(a1, result("ok"), policy, 60)
    a3, t3 = step(a2, result("breach"), policy, 120)
    assert t1 is not None and t3 is not None
    assert t1.kind is TransitionKind.FIRING and t3.kind is TransitionKind.FIRING
    assert a1.incident_id and a3.incident_id and a1.incident_id != a3.incident_id
    assert a3.state is AlertState.FIRING
    again, _ = step(None, result("breach"), policy, 0)
    assert again.incident_id == a1.incident_id  # derived, not random


def test_an_alert_changed_in_the_hot_path_is_the_one_replace_would_make() -> None:
    # `evolve` builds the Alert from its fields by position: a field added, removed or
    # reordered in Alert must not shift a value into the wrong one.
    base = Alert(
        key="svc/p95",
        state=AlertState.FIRING,
        since=1.0,
        pending_since=2.0,
        last_breach_at=3.0,
        no_data_since=4.0,
        incident_id="i-1",
        fired_at=5.0,
        last_notified_at=6.0,
        repeats=7,
        retired_at=8.0,
    )
    other: dict[str, object] = {
        "key": "other/p95",
        "state": AlertState.RESOLVED,
        "incident_id": "i-2",
        "repeats": 9,
    }
    for field in fields(Alert):
        value = other.get(field.name, 100.0)
        assert evolve(base, **{field.name: value}) == replace(base, **{field.name: value})
    assert evolve(base) == base
    assert evolve(base, since=0.5, repeats=1) == replace(base, since=0.5, repeats=1)


def test_a_stored_alert_row_reads_back_as_the_alert() -> None:
    alert = Alert(key='svc/p95{path="/ä"}', state=AlertState.FIRING, since=1.5, repeats=2)
    data = json.loads(alert_data(alert))
    data["state"] = AlertState(data["state"])
    assert Alert(**data) == alert
    # Never NaN or Infinity in a stored document (RFC 8259 has neither).
    odd = json.loads(alert_data(evolve(alert, since=math.nan, last_breach_at=math.inf)))
    assert odd["since"] is None and odd["last_breach_at"] is None
    # What orjson refuses (not UTF-8; beyond 64 bits) is still written, and read back.
    for odd_alert in (evolve(alert, key="svc/p95{path=\ud800}"), evolve(alert, repeats=2**70)):
        data = json.loads(alert_data(odd_alert))
        data["state"] = AlertState(data["state"])
        assert Alert(**data) == odd_alert


def test_a_firing_alert_keeps_its_last_breach_only_when_keep_firing_for_holds_it() -> None:
    """Without keep_firing_for a still-firing alert stays the same Alert at each breach
    (nothing for the state store to write again), its last breach the time it last
    notified; with it, each breach moves its last breach, which the hold counts from."""
    plain, held = AlertPolicy(), AlertPolicy(keep_firing_for=180)
    fired, _ = step(None, result("breach"), plain, now=0)
    again, tr = step(fired, result("breach"), plain, now=60)
    assert again is fired and tr is None
    assert fired.last_breach_at == fired.last_notified_at == 0

    kept, _ = step(None, result("breach"), held, now=0)
    kept, _ = step(kept, result("breach"), held, now=60)
    assert kept.last_breach_at == 60
    # Its rules lose keep_firing_for: the time goes back to its last notice once, then
    # nothing changes.
    dropped, _ = step(kept, result("breach"), plain, now=120)
    assert dropped.last_breach_at == 0
    assert step(dropped, result("breach"), plain, now=180)[0] is dropped


def test_keep_firing_for_added_while_firing_holds_from_the_first_ok() -> None:
    """Fired under rules without keep_firing_for, then judged under rules with it (a
    reload, a restart, a new leader): when it last breached is not known, so the hold
    counts from its first ok, never resolving it at once."""
    held = AlertPolicy(keep_firing_for=180)
    fired, _ = step(None, result("breach"), AlertPolicy(), now=0)
    fired, _ = step(fired, result("breach"), AlertPolicy(), now=540)
    waiting, tr = step(fired, result("ok"), held, now=600)
    assert (waiting.state, waiting.last_breach_at, tr) == (AlertState.FIRING, 600, None)
    assert step(waiting, result("ok"), held, now=779)[1] is None
    resolved, tr = step(waiting, result("ok"), held, now=780)
    assert resolved.state is AlertState.RESOLVED
    assert tr is not None and tr.kind is TransitionKind.RESOLVED


def test_a_burn_tier_takes_its_policy_from_the_slo_it_belongs_to_now() -> None:
    """A burn tier needs no `for` and only a page tier may roll back; its policy is
    derived from the SLO's once per SLO policy, so a reload that changes the SLO's
    repeat interval or rollback must reach the tiers at once."""
    from sentinel.alerting.manager import policy_for
    from sentinel.rules.model import SLO, LatencySLI, Selector, SLIKind

    slo = SLO(
        service="svc",
        name="p95",
        sli=LatencySLI(Selector("h"), 0.95),
        threshold=1.0,
        window=300,
        alert=AlertPolicy(for_=600, repeat_interval=900, rollback=True),
    )

    def tier(severity: str) -> SLOResult:
        return replace(result("breach"), kind=SLIKind.BURN_RATE, severity=severity)

    assert policy_for(slo, result("breach")) is slo.alert
    page, ticket = policy_for(slo, tier("page")), policy_for(slo, tier("ticket"))
    assert (page.for_, page.repeat_interval, page.rollback) == (0.0, 900, True)
    assert (ticket.for_, ticket.repeat_interval, ticket.rollback) == (0.0, 900, False)
    assert policy_for(slo, tier("page")) == page
    reloaded = replace(slo, alert=AlertPolicy(for_=600, repeat_interval=60, rollback=False))
    again = policy_for(reloaded, tier("page"))
    assert (again.repeat_interval, again.rollback) == (60, False)
    assert policy_for(slo, tier("page")).rollback  # the old SLO's policy is its own still
