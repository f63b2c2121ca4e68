"""Instances that vanished: a `group_by` value no answer holds any more (a deleted pod, a
retired service) is reported as no_data by the engine so its alert follows the rule's
no-data policy. Once it has been absent for `evaluation.forget_after` and every alert of
it is quiet, it is forgotten: no more no_data results, no alert-state rows, so a cluster
that churns pods does not grow Sentinel's memory, state file and results without bound.
A firing or pending instance is never forgotten here: forgetting must not change an
alert's outcome (its no-data policy, e.g. `no_data: alerting`, decides).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sentinel.alerting.manager import AlertManager
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import InstanceKey, SLOResult, Status
from sentinel.logs import fields
from sentinel.rules.model import RuleGroup, SLIKind
from sentinel.units import format_duration

log = logging.getLogger("sentinel.daemon")


@dataclass
class Vanished:
    """One absent instance of one SLO and the alert keys of its results (the SLO's own and
    each burn tier's)."""

    slo_key: str
    instance: InstanceKey
    alert_keys: list[str] = field(default_factory=list)


def vanished(
    group: RuleGroup,
    results: Sequence[SLOResult],
    last_seen: Callable[[str, InstanceKey], float | None],
    is_quiet: Callable[[str], bool],
    cutoff: float,
    remembered: Callable[[str], int],
) -> list[Vanished]:
    """The instances of `results` absent from every answer since before `cutoff` (their
    SLO's result is no_data) whose alerts, the burn tiers' included, are all quiet (pure:
    the engine's memory and the alert states come in as functions). Runs after every
    cycle: one pass testing each result's status, a second only when something is due."""
    slos = {slo.name: slo for slo in group.slos if slo.group_by}
    no_data, burn = Status.NO_DATA, SLIKind.BURN_RATE

    def where(result: SLOResult) -> tuple[str, InstanceKey] | None:
        slo = slos.get(result.slo)
        if slo is None:
            return None
        return slo.key, tuple(result.labels.get(label, "") for label in slo.group_by)

    due: dict[tuple[str, InstanceKey], Vanished] = {}
    for result in results:
        if result.status is not no_data or result.kind == burn:
            continue
        found = where(result)
        if found is not None:
            seen = last_seen(*found)
            if seen is not None and seen < cutoff:
                due[found] = Vanished(*found)
    # When every instance an SLO remembers is gone, nothing is forgotten: that is all of
    # its data missing (a renamed metric, a stopped exporter), which its instances'
    # no_data shows better than one "no data at all" result would — and that result's
    # alert would have no instance to end it when the data returns.
    per_slo: dict[str, int] = {}
    for slo_key, _ in due:
        per_slo[slo_key] = per_slo.get(slo_key, 0) + 1
    for where_ in [w for w in due if per_slo[w[0]] >= remembered(w[0])]:
        del due[where_]
    if not due:
        return []
    kept: set[tuple[str, InstanceKey]] = set()
    # Only the SLOs with something due are walked again (the rest cost a set lookup).
    due_slos = {slo_key for slo_key, _ in due}
    names = {slo.name for slo in slos.values() if slo.key in due_slos}
    for result in results:
        if result.slo not in names:
            continue
        found = where(result)
        entry = due.get(found) if found is not None else None
        if entry is None:
            continue
        if is_quiet(result.key):
            entry.alert_keys.append(result.key)
        else:
            kept.add((entry.slo_key, entry.instance))
    return [v for found, v in due.items() if found not in kept]


ResultHook = Callable[[RuleGroup, list[SLOResult], float], Awaitable[None]]


@dataclass
class StartSweep:
    """The quiet alert rows no result stepped since this process started (instances that
    vanished while Sentinel was stopped), deleted once."""

    started: float | None = None
    done: bool = False

    async def run(self, manager: AlertManager, delete: bool, after: float) -> None:
        stale = [k for k in list(manager.alerts) if k not in manager.slo_of]
        stale = [k for k in stale if manager.is_quiet(k)]
        dropped = await manager.forget(stale, delete) if stale else []
        if len(dropped) < len(stale):
            return  # the store failed: the next cycle tries again
        self.done = True
        if dropped:
            log.info(
                f"forgot {len(dropped)} quiet alert state(s) no result produced in the "
                f"{format_duration(after)} since the start (instances that vanished while "
                "Sentinel was stopped)"
            )


def forget_hook(
    forget_after: Callable[[], float | None],
    engine: Callable[[], Engine],
    manager: AlertManager,
    leads: Callable[[], bool],
    all_cycled: Callable[[], bool],
) -> ResultHook:
    """The daemon's result hook (after the alert manager's): forget what vanished. The
    leader deletes the alert rows; every replica stops its engine reporting them.

    Instances that vanished while Sentinel was stopped are never reported again (which
    instances existed is not kept across a restart), so their quiet alert rows would stay
    for ever: once, when the process has run `forget_after` and every group has cycled,
    the quiet rows no result stepped since the start are deleted too."""
    sweep = StartSweep()

    async def forget_vanished(group: RuleGroup, results: list[SLOResult], now: float) -> None:
        after = forget_after()
        if after is None:
            return
        if sweep.started is None:
            sweep.started = now
        if not sweep.done and now - sweep.started >= after and all_cycled():
            await sweep.run(manager, leads(), after)
        current = engine()
        gone = vanished(
            group, results, current.last_seen, manager.is_quiet, now - after, current.remembered
        )
        if not gone:
            return
        dropped = set(await manager.forget([k for v in gone for k in v.alert_keys], leads()))
        forgotten = [v for v in gone if all(k in dropped for k in v.alert_keys)]
        for v in forgotten:
            current.forget_instances(v.slo_key, [v.instance])
        if forgotten:
            names = ", ".join(v.alert_keys[0] for v in forgotten[:5])
            more = f" and {len(forgotten) - 5} more" if len(forgotten) > 5 else ""
            log.info(
                f"forgot {len(forgotten)} instance(s) absent for {format_duration(after)} "
                f"with quiet alerts: {names}{more}",
                extra=fields(group=group.name, instances=len(forgotten)),
            )

    return forget_vanished
