"""What a still-firing alert writes to the state store each cycle, and what a restart
then holds: a real SQLite file, the real alert manager, plain results."""

from __future__ import annotations

from pathlib import Path

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store import Store
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.notify.log import LogNotifier
from sentinel.rules.model import SLO, AlertPolicy, LatencySLI, RuleGroup, Selector

HELD = 300.0  # keep_firing_for of SLO `held`
INTERVAL = 30.0


def group(plain_held: float = 0.0) -> RuleGroup:
    """SLO `plain` (keep_firing_for `plain_held`, default none) and SLO `held`."""

    def slo(name: str, keep_firing_for: float) -> SLO:
        policy = AlertPolicy(keep_firing_for=keep_firing_for, repeat_interval=600.0)
        sli = LatencySLI(Selector("h"), 0.95)
        return SLO(service="svc", name=name, sli=sli, threshold=1, window=60, alert=policy)

    return RuleGroup("g", "g.yaml", "svc", INTERVAL, (slo("plain", plain_held), slo("held", HELD)))


def observe(manager: AlertManager, status: Status, at: float, plain_held: float = 0.0) -> None:
    value = 2.0 if status is Status.BREACH else 0.5
    results = [
        SLOResult("svc", name, status, value, 1.0, None, 60, at, kind="latency")
        for name in ("plain", "held")
    ]
    manager.observe_sync(group(plain_held), results, at)


def written(store: Store) -> dict[str, float]:
    """Alert key -> when its row was last written."""
    rows = store.db.execute("SELECT key, updated_at FROM alerts").fetchall()
    return {row["key"]: row["updated_at"] for row in rows}


def manager_of(store: Store) -> AlertManager:
    return AlertManager(store, {"log": LogNotifier("log")}, {})


def sent(store: Store) -> list[tuple[str, str]]:
    """(kind, SLO) of each alert in the notifications queued (one per service a cycle)."""
    return [(e.kind, a["slo"]) for e in store.due(1e9, limit=100) for a in e.payload["alerts"]]


START = 1_000.0


def breaching(path: Path, cycles: int) -> tuple[Store, AlertManager, float]:
    """A store and manager after `cycles` breaching cycles from START; the last one's time."""
    store = Store(path)
    manager = manager_of(store)
    for n in range(cycles):
        observe(manager, Status.BREACH, START + n * INTERVAL)
    return store, manager, START + (cycles - 1) * INTERVAL


def test_a_firing_alert_without_keep_firing_for_is_not_rewritten_every_cycle(
    tmp_path: Path,
) -> None:
    """Breaching for 20 cycles: the row of the alert whose last breach decides nothing is
    written when it fires (and at each repeat), not every cycle; the one held by
    keep_firing_for is written each cycle, so that a restart holds it from its latest
    breach. After the restart each resolves when it should."""
    store, _, last = breaching(tmp_path / "state.db", 20)
    start = START
    rows = written(store)
    assert rows["svc/plain"] == start  # fired, then not written again
    assert rows["svc/held"] == last
    assert sorted(sent(store)) == [("firing", "held"), ("firing", "plain")]

    restarted = manager_of(store)
    assert restarted.alerts["svc/held"].last_breach_at == last
    # A time, not None, in the row: an earlier version reading it under keep_firing_for
    # would hold an alert without one for ever.
    assert restarted.alerts["svc/plain"].last_breach_at == start
    observe(restarted, Status.OK, last + INTERVAL)
    kinds = sent(store)
    assert ("resolved", "plain") in kinds  # no keep_firing_for: the first ok resolves
    assert ("resolved", "held") not in kinds  # held from its latest breach, not its firing
    observe(restarted, Status.OK, last + HELD)
    assert ("resolved", "held") in sent(store)


def test_a_repeat_of_a_firing_alert_is_still_saved(tmp_path: Path) -> None:
    """A repeat reminder changes what a restart must know (when it last reminded): its
    row is written, with keep_firing_for or without, and a restart does not remind again
    before the interval."""
    store, _, _ = breaching(tmp_path / "state.db", 25)  # a repeat of each at 1,600
    start = START
    rows = written(store)
    assert rows["svc/plain"] == 1_600.0  # the repeat, then not again
    assert rows["svc/held"] == start + 24 * INTERVAL
    for slo in ("plain", "held"):
        assert [k for k, s in sent(store) if s == slo] == ["firing", "repeat"]
    restarted = manager_of(store)
    assert restarted.alerts["svc/plain"].last_notified_at == 1_600.0
    assert restarted.alerts["svc/held"].last_notified_at == 1_600.0
    observe(restarted, Status.BREACH, start + 25 * INTERVAL)
    assert len(sent(store)) == 4


def test_keep_firing_for_added_by_a_restart_holds_the_alert_not_pages_it_again(
    tmp_path: Path,
) -> None:
    """A firing alert's last breach is not kept without keep_firing_for; when a restart
    (or a new leader) brings rules that add it, the alert is held for it, from its first
    ok at the latest (one interval more than from its last breach), never resolved at
    once nor paged again. (Keeping the time in memory only resolved it at once after the
    restart: the row held the time it fired.)"""
    store, _, last = breaching(tmp_path / "state.db", 20)

    restarted = manager_of(store)  # its rules hold `plain` for HELD now
    observe(restarted, Status.OK, last + INTERVAL, plain_held=HELD)
    observe(restarted, Status.OK, last + 2 * INTERVAL, plain_held=HELD)
    assert ("resolved", "plain") not in sent(store)
    again = manager_of(store)  # restarted again during the hold: still held
    observe(again, Status.OK, last + HELD - 1, plain_held=HELD)
    assert ("resolved", "plain") not in sent(store)
    observe(again, Status.OK, last + INTERVAL + HELD, plain_held=HELD)
    assert [k for k, slo in sent(store) if slo == "plain"] == ["firing", "resolved"]


def test_keep_firing_for_added_by_a_reload_holds_the_alert_across_a_restart(
    tmp_path: Path,
) -> None:
    """The same in one process: the first step under the new rules starts the hold (at
    its breach, or at its ok), and the state store has it for a restart."""
    store, manager, last = breaching(tmp_path / "state.db", 5)
    first_ok = last + INTERVAL
    observe(manager, Status.OK, first_ok, plain_held=HELD)  # the reload's first step
    assert ("resolved", "plain") not in sent(store)
    restarted = manager_of(store)
    observe(restarted, Status.OK, last + HELD - 1, plain_held=HELD)
    assert ("resolved", "plain") not in sent(store)
    observe(restarted, Status.OK, first_ok + HELD, plain_held=HELD)
    assert [k for k, slo in sent(store) if slo == "plain"] == ["firing", "resolved"]
