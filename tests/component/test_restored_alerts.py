"""Alert keys name a service and an SLO, not the rule file. Firing alerts loaded from the
state file at a restart, before any cycle has stepped them: what the gate counts
(`AlertManager.firing`); and two files' SLOs of one name producing one key. A real
SQLite state file; results made by hand, as a cycle would hand them to the alert
manager."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.state import AlertState
from sentinel.alerting.store import Store
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.notify.log import LogNotifier
from sentinel.rules.model import SLO, LatencySLI, RuleGroup, Selector, Severity

AT = 1_795_176_000.0


def slo(
    service: str, severity: Severity = Severity.PAGE, group_by: tuple[str, ...] = ("service",)
) -> SLO:
    """An SLO named `errors` in each team's rule file, grouping by service."""
    return SLO(
        service=service,
        name="errors",
        sli=LatencySLI(Selector("h"), 0.95),
        threshold=1.5,
        window=300,
        group_by=group_by,
        severity=severity,
    )


def result(owner: SLO, service: str | None, status: Status, at: float) -> SLOResult:
    """One instance's result (`service` None: an answer that named no instance)."""
    labels = {"service": service} if service else {}
    value = 2.0 if status is Status.BREACH else (1.0 if status is Status.OK else None)
    return SLOResult(
        service or owner.service,
        owner.name,
        status,
        value,
        owner.threshold,
        None,
        owner.window,
        at,
        labels,
        reason="" if service else "prometheus unavailable: connection refused",
        severity=owner.severity.value,
    )


def firing(manager: AlertManager, service: str) -> list[tuple[str, str]]:
    """What the gate reads: the firing alerts' SLO names and severities."""
    return [(s.name, s.severity.value) for _, s in manager.firing(service)]


def test_restored_alerts_count_until_every_slo_that_may_produce_them_answers(
    tmp_path: Path,
) -> None:
    """Two rule files each have an SLO named `errors`. After a restart both teams' firing
    alerts count. A key does not say which file's SLO made it: team A's SLO answering
    without `a-1` does not settle it while B's (its source down) may still produce it,
    also across a reload; `b-1`, stepped by B, counts as any other alert; `a-1` settles
    once B has answered too."""
    a, b = slo("team-a"), slo("team-b")
    group_a = RuleGroup("a", "a.yaml", "team-a", 60, (a,))
    group_b = RuleGroup("b", "b.yaml", "team-b", 60, (b,))
    store = Store(tmp_path / "state.db")
    first = AlertManager(store, {"log": LogNotifier("log")}, {})
    first.observe_sync(group_a, [result(a, "a-1", Status.BREACH, AT)], AT)
    first.observe_sync(group_b, [result(b, "b-1", Status.BREACH, AT)], AT)
    assert firing(first, "a-1") == [("errors", "page")]
    store.close()

    store = Store(tmp_path / "state.db")
    restarted = AlertManager(store, {"log": LogNotifier("log")}, {})
    assert firing(restarted, "a-1") == []  # the rules not known yet: as before
    restarted.recognise([a, b])
    assert firing(restarted, "a-1") == [("errors", "page")]
    assert firing(restarted, "b-1") == [("errors", "page")]

    def cycle(
        group: RuleGroup, results: list[SLOResult], failed: frozenset[str] = frozenset()
    ) -> None:
        """What a cycle does: the step, then the daemon's settle hook."""
        restarted.observe_sync(group, results, results[0].evaluated_at)
        restarted.settle_restored(group, failed)

    later = AT + 60
    cycle(group_b, [result(b, None, Status.NO_DATA, later)], frozenset({b.key}))
    assert firing(restarted, "b-1") == [("errors", "page")]  # B's source down: undecided
    cycle(group_a, [result(a, "a-2", Status.OK, later)])
    assert firing(restarted, "a-1") == [("errors", "page")]  # B may still produce it
    restarted.recognise([a, b])  # a reload: A has answered, it is not waited for again
    assert firing(restarted, "b-1") == [("errors", "page")]

    then = later + 60
    cycle(group_b, [result(b, "b-1", Status.BREACH, then)])
    assert firing(restarted, "b-1") == [("errors", "page")]  # stepped: counts as any other
    assert firing(restarted, "a-1") == []  # neither SLO produces it any more: gone
    assert restarted._restored == {}
    store.close()


def test_an_answer_that_names_no_instance_without_failing_settles_a_restored_alert(
    tmp_path: Path,
) -> None:
    """The metric stopped being exported while Sentinel was stopped: the SLO answers, empty
    but without error. The restored alert of an instance it no longer has must not block
    its service's releases for ever."""
    a = slo("team-a")
    group = RuleGroup("a", "a.yaml", "team-a", 60, (a,))
    store = Store(tmp_path / "state.db")
    AlertManager(store, {"log": LogNotifier("log")}, {}).observe_sync(
        group, [result(a, "a-1", Status.BREACH, AT)], AT
    )
    store.close()
    store = Store(tmp_path / "state.db")
    restarted = AlertManager(store, {"log": LogNotifier("log")}, {})
    restarted.recognise([a])
    assert firing(restarted, "a-1") == [("errors", "page")]
    restarted.observe_sync(group, [result(a, None, Status.NO_DATA, AT + 60)], AT + 60)
    restarted.settle_restored(group, {a.key})  # failed: still counted
    assert firing(restarted, "a-1") == [("errors", "page")]
    restarted.settle_restored(group, set())  # answered, empty: settled
    assert firing(restarted, "a-1") == []
    store.close()


def test_a_restored_alert_of_an_ambiguous_slo_counts_as_the_most_severe(tmp_path: Path) -> None:
    """Which of two SLOs named `errors` (one a ticket, one a page) produced a restored key
    of a service neither file names cannot be told from the key: the page one, so the
    gate does not let a release pass on what may be a page."""
    ticket, page = slo("team-a", Severity.TICKET), slo("team-b")
    store = Store(tmp_path / "state.db")
    first = AlertManager(store, {"log": LogNotifier("log")}, {})
    group = RuleGroup("a", "a.yaml", "team-a", 60, (ticket,))
    first.observe_sync(group, [result(ticket, "shared", Status.BREACH, AT)], AT)
    assert firing(first, "shared") == [("errors", "ticket")]
    store.close()

    store = Store(tmp_path / "state.db")
    restarted = AlertManager(store, {"log": LogNotifier("log")}, {})
    restarted.recognise([ticket, page])
    assert firing(restarted, "shared") == [("errors", "page")]
    # A reload that removed both SLOs: the alert waits for no answer any more.
    restarted.recognise([])
    assert firing(restarted, "shared") == []
    assert restarted._restored == {}
    store.close()


def test_a_restored_burn_tier_alert_of_an_slo_without_group_by_counts(tmp_path: Path) -> None:
    """A budget's page tier fires under `service/slo{tier=page}`: labels, but no group_by."""
    budget = slo("team-a", group_by=())
    group = RuleGroup("a", "a.yaml", "team-a", 60, (budget,))
    tier = SLOResult(
        "team-a", "errors", Status.BREACH, 14.4, 14.4, None, 3600, AT, {"tier": "page"}
    )
    store = Store(tmp_path / "state.db")
    AlertManager(store, {"log": LogNotifier("log")}, {}).observe_sync(group, [tier], AT)
    store.close()
    store = Store(tmp_path / "state.db")
    restarted = AlertManager(store, {"log": LogNotifier("log")}, {})
    restarted.recognise([budget])
    assert firing(restarted, "team-a") == [("errors", "page")]
    store.close()


# Two rule files, each with an SLO named `errors` grouping by service, both naming the
# service `shared`: one key, `shared/errors{shared}`, stepped by both (the alert follows
# whichever group ran last). Sentinel cannot tell which file the alert is for; it says so.
@pytest.mark.parametrize("order", ["a first", "b first"])
def test_two_files_producing_one_alert_key_are_named_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, order: str
) -> None:
    a = replace(slo("team-a"), source_file="rules/a.yaml")
    b = replace(slo("team-b"), source_file="rules/b.yaml")
    group_a = RuleGroup("a", "rules/a.yaml", "team-a", 60, (a,))
    group_b = RuleGroup("b", "rules/b.yaml", "team-b", 60, (b,))
    manager = AlertManager(Store(tmp_path / "state.db"), {"log": LogNotifier("log")}, {})
    manager.recognise([a, b])
    key = result(a, "shared", Status.OK, AT).key
    groups = [(group_a, a), (group_b, b)]
    if order == "b first":
        groups.reverse()
    with caplog.at_level(logging.WARNING, logger="sentinel.alerts"):
        for minute in range(5):
            now = AT + 60 * minute
            for group, owner in groups:
                manager.observe_sync(group, [result(owner, "shared", Status.OK, now)], now)
                manager.observe_sync(
                    group, [result(owner, f"{group.name}-only", Status.OK, now)], now
                )
    (warning,) = [r.getMessage() for r in caplog.records if "same alert" in r.getMessage()]
    assert "rules/a.yaml" in warning and "rules/b.yaml" in warning and key in warning
    assert manager.shared == {key: ("rules/a.yaml", "rules/b.yaml")}
    manager.recognise([a, b])  # a reload: said again if it still happens
    manager.observe_sync(group_a, [result(a, "shared", Status.OK, AT + 600)], AT + 600)
    manager.observe_sync(group_b, [result(b, "shared", Status.OK, AT + 600)], AT + 600)
    assert manager.shared == {key: ("rules/a.yaml", "rules/b.yaml")}


def test_an_slo_moved_to_another_file_by_a_reload_is_not_two_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = replace(slo("team-a"), source_file="rules/z.yaml")
    new = replace(old, source_file="rules/a.yaml")
    manager = AlertManager(Store(tmp_path / "state.db"), {"log": LogNotifier("log")}, {})
    manager.recognise([old])
    group = RuleGroup("z", "rules/z.yaml", "team-a", 60, (old,))
    manager.observe_sync(group, [result(old, "svc", Status.BREACH, AT)], AT)
    manager.recognise([new])  # the reload
    group = RuleGroup("a", "rules/a.yaml", "team-a", 60, (new,))
    with caplog.at_level(logging.WARNING, logger="sentinel.alerts"):
        manager.observe_sync(group, [result(new, "svc", Status.OK, AT + 60)], AT + 60)
    assert manager.shared == {}
    assert not [r for r in caplog.records if "same alert" in r.getMessage()]
    assert manager.alerts[result(new, "svc", Status.OK, AT).key].state is AlertState.RESOLVED
