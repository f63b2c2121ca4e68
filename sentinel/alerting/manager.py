"""Turns each cycle's results into alert transitions and outbox entries.

For every SLO instance: step the pure state machine; for every transition pick the
notifiers (the rule's `notify`, else every non-webhook notifier, else the log), drop
what a silence matches, apply the rollback guard rails, group by (notifier, service,
kind), and commit states + notifications in one transaction.

When that commit fails (disk full, I/O error) nothing of it is written; the changes stay
in memory, in order, and the next cycle commits them before its own — so a breach seen
while the store is unwritable is still announced, with the time it fired, and its
FIRING always reaches the outbox before its RESOLVED.

On the daemon's event loop (`observe`) the instances are stepped in slices that let the
loop answer requests in between (sentinel/slicing.py), and what a commit needs (the
notifications, incident rows, log lines, the rows' JSON) is built in slices too; the
changes are applied to memory in one piece, then committed, so a step stopped at a pause
leaves nothing half staged. Rule groups and probes share one manager, so each step holds
`lock` from its first instance to its commit: steps never interleave, and a commit holds
exactly the changes of the steps before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sentinel import jsonenc
from sentinel.alerting.silences import Silence, alert_labels
from sentinel.alerting.state import (
    Alert,
    AlertState,
    Transition,
    TransitionKind,
    alert_data,
    step,
)
from sentinel.alerting.store import NewNotification
from sentinel.alerting.store_api import StateStore
from sentinel.errors import StateStoreError, StateStoreWriteError
from sentinel.evaluate.slo import SLOResult, Status, rfc3339
from sentinel.logs import fields
from sentinel.rules.model import (
    SEVERITY_ORDER,
    SLO,
    AlertPolicy,
    NoDataPolicy,
    RuleGroup,
    SLIKind,
    severity_at_least,
)
from sentinel.slicing import ITEMS_PER_YIELD, Steps, drain, finish, finish_now, mapped, run
from sentinel.units import format_duration

log = logging.getLogger("sentinel.alerts")

# Alert rows a step changed without a transition (the last breach time of a firing alert
# held by keep_firing_for, the start of missing data) are saved after the commit that
# holds the transitions and their notifications, this many rows per transaction with the
# event loop's turn in between: at 1,000 firing instances one commit of every row held
# the loop ~60 ms each cycle. Each row is a whole state of its alert; no incident or
# outbox row depends on these.
QUIET_CHUNK = 250


def _incident_row(tr: Transition) -> dict[str, Any]:
    r = tr.result
    return {
        "id": tr.alert.incident_id,
        "alert_key": tr.alert.key,
        "service": r.service,
        "slo": r.slo,
        "severity": r.severity,
        "labels": json.dumps(dict(r.labels)),
        "started_at": tr.alert.fired_at,
        "last_value": r.value,
        "threshold": r.threshold,
    }


def _notification(
    name: str, kind: str, service: str, batch: list[dict[str, Any]], now: float
) -> Steps[NewNotification]:
    """One outbox entry (a step: its payload is encoded a few alerts at a time); its key
    names the incidents and reminder counts it carries, so a commit retried after a
    failure cannot enqueue it twice."""
    ids = ",".join(sorted(f"{a['incident_id']}#{a.get('repeat', 0)}" for a in batch))
    digest = hashlib.sha256(ids.encode()).hexdigest()[:20]
    env = batch[0]["labels"].get("env") or batch[0].get("env")
    payload = {"alerts": batch, "env": env}
    alerts = yield from mapped(jsonenc.dumps, batch)
    # The text `jsonenc.dumps(payload)` gives, element by element (json's separators).
    text = f'{{"alerts": [{", ".join(alerts)}], "env": {jsonenc.dumps(env)}}}'
    return NewNotification(f"{name}:{kind}:{digest}", name, kind, service, payload, now, text)


# A step's measurements of its firing alerts, for `last_firing` (None: no longer firing).
LastFiring = dict[str, SLOResult | None]

# The outbox queue of a notifier grouping by SLO is this and the SLO's name (`_queue`).
SLO_QUEUE = "slo:"


def _queue(notifier: Route, service: str, slo: str) -> str:
    """The outbox queue (an entry's `service`) of an alert's notifications to `notifier`,
    the same for every notification of one incident, which is what keeps them in order:
    the service; or, for a notifier grouping by SLO (Slack's `group_by: slo`), the SLO's
    name, so one entry (one message) carries every service's alerts of it."""
    if notifier.group_by == "slo":
        return f"{SLO_QUEUE}{slo}"
    return service


# How long a replica whose rules predate an SLO's removal leaves its retired alert be: a
# rolling deploy's length. Bounded, because an old replica that is never replaced (a
# rolled-back deploy) must page again once it is the one judging that SLO.
RETIRED_HOLD = 30 * 60.0


def _resolved(alert: Alert, now: float) -> Alert:
    """A firing alert resolved at `now` without a step (its SLO left the rules)."""
    return replace(alert, state=AlertState.RESOLVED, since=now, pending_since=None, retired_at=now)


def _produced_by(slos: Sequence[SLO], service: str, name: str) -> bool:
    """Whether an SLO of `slos` can still produce results of `service` named `name` (its
    own service, or any service when it groups by the `service` label)."""
    return bool(producers(slos, service, name))


def producers(slos: Iterable[SLO], service: str, name: str) -> list[SLO]:
    """The SLOs of `slos` that can produce results of `service` named `name`."""
    return [
        slo
        for slo in slos
        if slo.name == name and (slo.service == service or "service" in slo.group_by)
    ]


# In a result key, `service/slo` or `service/slo{labels}`: the first `/` followed by an SLO
# name (no `/`, `{` or `}` in one, see rules/spec.py) and then the end or labels `{...}`
# running to the end. A service may hold `/` (a `service` label `team/api`; the labels may
# too): splitting at the first `/` filed such a service's alerts under `team`, and the
# gate, asked about `team/api`, passed while they fired. (A service holding `/` and `{`
# and a key with labels may still read two ways; no SLO name can tell them apart.) Two
# patterns, each one linear pass: a lookahead for "labels to the end" (`\{.*\}\Z`) took
# 0.7 s on a 60 KB key of `/a{` repeated, trying each `/`.
_KEY_LABELLED = re.compile(r"/[a-zA-Z0-9][a-zA-Z0-9_.-]*(?=\{|\Z)")
_KEY_BARE = re.compile(r"/[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


def _slash(key: str) -> int:
    """Where a result key's service ends (-1: not a result key)."""
    slash = key.find("/")
    if slash >= 0 and key.find("/", slash + 1) < 0:  # the one `/`: most keys, no regex
        return slash
    found = (_KEY_LABELLED if key.endswith("}") else _KEY_BARE).search(key)
    return found.start() if found is not None else -1


def _named(key: str) -> tuple[str, str]:
    """(service, SLO name) of a result key (a key that is none: filed whole)."""
    slash = _slash(key)
    if slash < 0:
        return key, ""
    return key[:slash], key[slash + 1 :].partition("{")[0]


def service_of(key: str) -> str:
    """The service of a result key (`SLOResult.key`)."""
    slash = _slash(key)
    return key[:slash] if slash >= 0 else key


def instance_of(key: str) -> str:
    """`service/slo` of a result key, its labels cut off (a service may hold `{`)."""
    slash = _slash(key)
    brace = key.find("{", slash + 1) if slash >= 0 else -1
    return key[:brace] if brace >= 0 else key


def policy_for(slo: SLO, result: SLOResult) -> AlertPolicy:
    """Burn-rate tiers need no `for`: their windows already demand a sustained burn.
    Only the page tier may roll back."""
    if result.kind != _BURN_RATE:
        return slo.alert
    # One policy per SLO policy and tier kind, not one per result (~0.8 us to build a
    # frozen dataclass, for each burn tier not quiet, every cycle). Kept with the policy
    # it was derived from, so an id is never taken for another's.
    page = result.severity == "page"
    derived = _TIER_POLICIES.get((id(slo.alert), page))
    if derived is not None and derived[0] is slo.alert:
        return derived[1]
    policy = AlertPolicy(
        repeat_interval=slo.alert.repeat_interval, rollback=slo.alert.rollback and page
    )
    if len(_TIER_POLICIES) >= 10_000:  # reloads keep bringing new SLO objects
        _TIER_POLICIES.clear()
    _TIER_POLICIES[(id(slo.alert), page)] = (slo.alert, policy)
    return policy


_BURN_RATE = SLIKind.BURN_RATE
_TIER_POLICIES: dict[tuple[int, bool], tuple[AlertPolicy, AlertPolicy]] = {}


@dataclass(frozen=True)
class RollbackGuard:
    cooldown: float
    min_events: float


@dataclass
class Unsaved:
    """Alert changes not yet committed, oldest first; committed together, before newer ones."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[tuple[str, float]] = field(default_factory=list)
    notifications: list[NewNotification] = field(default_factory=list)
    failed_commits: int = 0

    def __bool__(self) -> bool:
        return bool(self.alerts or self.opened or self.resolved or self.notifications)

    def last_rollback_at(self, notifier: str, service: str) -> float | None:
        times = [
            n.created_at
            for n in self.notifications
            if n.notifier == notifier and n.service == service and n.kind == "firing"
        ]
        return max((t for t in times if t is not None), default=None)


class Route(Protocol):
    """What the manager needs of a notifier to route to it (notify/ implements it; the
    alerting layer does not import it)."""

    @property
    def kind(self) -> str: ...

    @property
    def group_by(self) -> str:
        """Which alerts share a notification, and so an outbox queue (`_queue`):
        `service`, or `slo` (Slack's `group_by`)."""
        ...

    @property
    def min_severity(self) -> str: ...


def _no_link(service: str) -> str | None:
    return None


@dataclass
class Restored:
    """A firing alert loaded at start, not stepped yet: the SLO it counts as for the gate,
    and the SLOs that may produce it and have not answered since."""

    slo: SLO
    candidates: list[SLO]


class AlertManager:
    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Route],
        guards: Mapping[str, RollbackGuard],
        dashboard_link: Callable[[str], str | None] = _no_link,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.guards = guards
        self.dashboard_link = dashboard_link
        self.on_commit = on_commit
        self.alerts: dict[str, Alert] = store.load_alerts()
        self.unsaved = Unsaved()
        self.slo_of: dict[str, SLO] = {}
        # The latest result of each firing alert this process stepped: what its RESOLVED
        # message shows when its SLO is removed from the rules (`retire_removed`).
        self.last_firing: dict[str, SLOResult] = {}
        # Held by a step from its first instance to its commit (and by a replica's adopt).
        self.lock = asyncio.Lock()
        # service -> keys of its firing alerts; the gate asks on every request.
        self._firing: dict[str, set[str]] = {}
        # Alerts of SLOs a reload removed whose resolve is still to be committed (a read
        # it needs failed): not counted by the gate meanwhile.
        self._retired: set[str] = set()
        # When this replica's rules last changed, as far as it knows (the daemon: -inf at
        # start, the time of each reload that changes them). An alert retired after that,
        # by a leader whose rules no longer have its SLO, is not stepped here for
        # RETIRED_HOLD: mid rolling deploy, an old replica that leads again would
        # otherwise page a removed SLO anew. Default: never skip.
        self.rules_changed_at = math.inf
        self._left_be: set[str] = set()
        for key, alert in self.alerts.items():
            if alert.state is AlertState.FIRING:
                self._firing.setdefault(service_of(key), set()).add(key)
        # Firing alerts loaded from the store that no result has stepped yet. Once the
        # rules are known (`recognise`), each is matched to the SLO that produces it, by
        # the SLO name in its key, and counts for the gate until that SLO answers. Without
        # this a page alert held by `keep_firing_for` over a restart was invisible to the
        # gate until a cycle stepped it, and a release could pass meanwhile.
        self._unstepped = set(self._firing_keys())
        self._restored: dict[str, dict[str, Restored]] = {}
        self._answered: set[tuple[str, str]] = set()  # (service, name) of SLOs that answered
        # (rule file, SLO name) of the SLOs of the rules (`recognise`), and the keys two
        # files' SLOs both step (`_note_shared`), with the two files.
        self._sources: set[tuple[str, str]] = set()
        self.shared: dict[str, tuple[str, str]] = {}
        self._warned: set[tuple[str, str]] = set()  # pairs of files named in a warning

    async def observe(self, group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        """`observe_sync` on the event loop: the instances are stepped in slices, and the
        whole step holds `lock`."""
        async with self.lock:
            await self.observe_locked(group, results, now)

    async def observe_locked(
        self, group: RuleGroup, results: Sequence[SLOResult], now: float
    ) -> None:
        """`observe` for a caller that holds `lock` already (the leader's result hook)."""
        # Changes an earlier failed commit left are saved first, whole, with this step's
        # transitions; only this step's quiet changes may follow in chunks.
        held = set(self.unsaved.alerts)
        changed: dict[str, Alert] = {}
        transitions: list[tuple[SLO, Transition]] = []
        last: LastFiring = {}
        await drain(self._steps(group, results, now, changed, transitions, last))
        moved = {tr.alert.key for _, tr in transitions}
        quiet = [a for k, a in changed.items() if k not in moved and k not in held]
        if len(quiet) <= QUIET_CHUNK:
            quiet = []
        if changed:
            # In slices too: a storm (7,000 alerts firing at once) built its notifications,
            # logged its transitions and staged its states in one ~80 ms piece.
            await drain(self._stage(changed, transitions, now))
        self._keep_last(last)  # with the changes, in the same piece
        if self.unsaved:
            later = {a.key for a in quiet}
            # The rows are encoded in slices first: the commit, one transaction, is then
            # only the database's work (7,000 new alerts after a start: 41 -> ~11 ms).
            prepared = await finish(self._encoded(later))
            if self._commit(now, later, prepared):
                await self._commit_quiet(quiet, now)

    def observe_sync(self, group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        """Step every instance, then commit the changes (after any a failed commit left),
        in one piece."""
        changed: dict[str, Alert] = {}
        transitions: list[tuple[SLO, Transition]] = []
        last: LastFiring = {}
        run(self._steps(group, results, now, changed, transitions, last))
        self._finish(changed, transitions, now, last)

    def _steps(
        self,
        group: RuleGroup,
        results: Sequence[SLOResult],
        now: float,
        changed: dict[str, Alert],
        transitions: list[tuple[SLO, Transition]],
        last: LastFiring,
    ) -> Iterator[None]:
        """Step every instance's state machine into `changed`, `transitions` and `last`
        (a generator: yields every few results). New states go into these scratch maps
        first: if building the notifications fails (a store read), or the step is
        stopped at a pause, nothing has changed and the next cycle makes the same steps."""
        slos = {slo.name: slo for slo in group.slos}
        alerts, slo_of = self.alerts, self.slo_of
        ok, quiet, firing = Status.OK, (AlertState.INACTIVE, AlertState.RESOLVED), AlertState.FIRING
        for n, result in enumerate(results, 1):
            if n % ITEMS_PER_YIELD == 0:
                yield
            slo = slos.get(result.slo)
            if slo is None:
                continue
            key = result.key
            owner = slo_of.get(key)
            if owner is not slo and owner is not None and owner.source_file != slo.source_file:
                self._note_shared(key, owner, slo)
            slo_of[key] = slo
            prev = changed.get(key) or alerts.get(key)
            if prev is not None and prev.retired_at is not None:
                if prev.retired_at > self.rules_changed_at and now - prev.retired_at < RETIRED_HOLD:
                    self._leave_be(key)
                    continue
                # Back in rules newer than its removal, or the hold is over: judged as any.
                prev = changed[key] = replace(prev, retired_at=None)
            if (
                result.status is ok
                and prev is not None
                and prev.state in quiet
                and prev.no_data_since is None
            ):
                # Ok and quiet before: `step` keeps the state as it is and makes no
                # transition. Most instances are here every cycle.
                continue
            alert, transition = step(prev, result, policy_for(slo, result), now)
            if alert.state is firing:
                last[key] = result
            elif key in self.last_firing or key in last:
                last[key] = None
            if alert != prev:
                changed[key] = alert
            if transition is not None:
                transitions.append((slo, transition))

    def _note_shared(self, key: str, owner: SLO, slo: SLO) -> None:
        """Warn, once per pair of files and reload, that `slo` steps `key`, which another
        rule file's SLO of the same name (`owner`, the last to step it) produces too: a
        key names its service and SLO, not its file, and two SLOs grouping by `service`
        can name one service. Both step it, so the alert follows whichever answered last
        (a page resolved by the other file's ok, fired by its next breach). Not settled
        here by picking one: the pick would keep an alert the other file now produces
        alone (its service moved there; the first file's instance no_data, kept firing)
        and hide the other's breaches. An owner gone from the rules (a reload moved the
        SLO) is no other file's SLO."""
        if (owner.source_file, owner.name) not in self._sources or key in self.shared:
            return
        first, second = sorted((owner.source_file, slo.source_file))
        pair = self.shared[key] = (first, second)
        if pair in self._warned:
            return
        self._warned.add(pair)
        log.warning(
            "SLOs named %r in %s and in %s produce the same alert %s (an SLO that groups "
            "by service may name another's service): both step it, and it follows "
            "whichever answered last; give one of them another name",
            slo.name,
            first or "(a probe)",
            second or "(a probe)",
            key,
            extra=fields(key=key),
        )

    def recognise(self, slos: Sequence[SLO]) -> None:
        """Match the restored firing alerts not stepped yet to the SLOs of `slos` (the
        rules' and the probes', at start and after each reload). A key names its service
        and SLO, not its rule file, and SLO names repeat across files: every SLO that may
        produce it is a candidate, the alert counts as the most severe of them (counted as
        a ticket when it may be a page, it could let a release pass), and it waits for each
        to answer (`settle_restored`). Alerts no SLO produces, or no longer firing, wait
        for nothing (`retire_orphans` resolves them)."""
        by_name: dict[str, list[SLO]] = {}
        for slo in slos:
            by_name.setdefault(slo.name, []).append(slo)
        self._sources = {(slo.source_file, slo.name) for slo in slos}
        self.shared, self._warned = {}, set()
        self._restored = {}
        for key in list(self._unstepped):
            alert = self.alerts.get(key)
            service, name = _named(key)
            candidates = [
                slo
                for slo in producers(by_name.get(name, ()), service, name)
                if (slo.service, slo.name) not in self._answered
            ]
            if alert is None or alert.state is not AlertState.FIRING or not candidates:
                self._unstepped.discard(key)
                continue
            worst = max(candidates, key=lambda slo: SEVERITY_ORDER[slo.severity.value])
            self._restored.setdefault(name, {})[key] = Restored(worst, candidates)

    def settle_restored(self, group: RuleGroup, failed: Collection[str] = ()) -> None:
        """After a cycle of `group` (rules or probes; `failed`: keys of its SLOs whose
        answer failed): a restored alert stepped since counts as any other (through
        `slo_of`); an SLO that answered, whatever it held, is no longer waited for; an
        alert that waits for none is settled: its instance is gone (a pod replaced while
        Sentinel was stopped), and counting it would block its service's releases for
        ever. An SLO whose answer failed (its source down) decided nothing."""
        if not self._restored:
            return
        answered = {(slo.service, slo.name) for slo in group.slos if slo.key not in failed}
        self._answered |= answered  # a reload's `recognise` does not wait for them again
        names = {name for _, name in answered}
        for name in list(self._restored):
            restored = self._restored[name]
            for key, waiting in list(restored.items()):
                if name in names:
                    waiting.candidates = [
                        c for c in waiting.candidates if (c.service, c.name) not in answered
                    ]
                if key in self.slo_of or not waiting.candidates:
                    del restored[key]
                    self._unstepped.discard(key)
            if not restored:
                del self._restored[name]

    def _firing_keys(self) -> Iterator[str]:
        for keys in self._firing.values():
            yield from keys

    def _keep_last(self, last: LastFiring) -> None:
        """The measurements of the step's firing alerts (None: no longer firing)."""
        for key, result in last.items():
            if result is None:
                self.last_firing.pop(key, None)
            else:
                self.last_firing[key] = result

    def _leave_be(self, key: str) -> None:
        if key not in self._left_be:  # once per process, not every cycle
            self._left_be.add(key)
            log.warning(
                f"alert {key} not evaluated for up to {format_duration(RETIRED_HOLD)} after "
                "its SLO was removed from the rules of the replica that led (a rolling "
                "deploy in progress?); see rules.fingerprint in /health/detailed",
                extra=fields(key=key),
            )

    def _finish(
        self,
        changed: dict[str, Alert],
        transitions: list[tuple[SLO, Transition]],
        now: float,
        last: LastFiring | None = None,
    ) -> None:
        """Stage the changes, keep the last measurements with them (as `observe`), then
        commit, in one piece."""
        if changed:
            run(self._stage(changed, transitions, now))
        self._keep_last(last or {})
        if self.unsaved:
            self._commit(now)

    def retire_gone(self, slos: Sequence[SLO], now: float) -> int:
        """`retire_removed`, then `retire_orphans`: every firing alert no SLO of `slos`
        produces any more is resolved. Raises StateStoreError when a read they need
        fails (nothing changed then). Returns alerts resolved."""
        return self.retire_removed(slos, now) + self.retire_orphans(slos, now)

    def retire_removed(self, slos: Sequence[SLO], now: float) -> int:
        """After a reload: the alerts of SLOs no longer in the rules get no result again,
        so nothing else would ever end them. A firing one is resolved ("removed from the
        rules", with its last measurement) through the outbox like any resolve, a pending
        one goes back to inactive; none counts for the gate any more. The caller holds
        `lock` and leads (a follower adopts the leader's states). Returns alerts resolved."""
        current = {(slo.service, slo.name) for slo in slos}
        changed: dict[str, Alert] = {}
        transitions: list[tuple[SLO, Transition]] = []
        removed = [k for k, slo in self.slo_of.items() if (slo.service, slo.name) not in current]
        # The gate stops counting them now, even when resolving them fails below.
        self._retired = set(removed)
        for key in removed:
            slo = self.slo_of[key]
            last = self.last_firing.get(key)
            alert = self.alerts.get(key)
            if alert is None:
                continue
            if alert.state is AlertState.FIRING and last is not None:
                resolved = _resolved(alert, now)
                result = replace(last, evaluated_at=now)
                because = f"SLO {slo.name} removed from the rules"
                changed[key] = resolved
                transitions.append(
                    (slo, Transition(TransitionKind.RESOLVED, resolved, result, because))
                )
            elif alert.state is AlertState.PENDING:
                changed[key] = replace(
                    alert, state=AlertState.INACTIVE, since=now, pending_since=None
                )
            # A firing alert with no result in this process (loaded at start) is
            # `retire_orphans`' to resolve.
        self._finish(changed, transitions, now)
        # Only now: when a read for the notifications failed (StateStoreError from
        # `_finish`), nothing has changed and a retry finds the same removed SLOs.
        for key in removed:
            del self.slo_of[key]
            self.last_firing.pop(key, None)
        self._retired = set()
        return len(transitions)

    def retire_orphans(self, slos: Sequence[SLO], now: float) -> int:
        """Resolve the firing alerts no SLO in `slos` can produce any more that this
        process has no result for: loaded from the store at start after their SLO was
        removed while Sentinel was stopped (or before a reload of a process that never
        evaluated them). With no SLO object and no measurement left, each notifier that
        was told about the incident gets the alert it was last sent (firing or reminder),
        marked resolved ("removed from the rules"): the Slack message is closed where it
        was posted. Caller holds `lock` and leads. Returns incidents resolved."""
        firing = {
            a.incident_id: a
            for a in self.alerts.values()
            if a.state is AlertState.FIRING and a.incident_id and a.key not in self.slo_of
        }
        if not firing:
            return 0
        # One read of the open incidents: their rows say which SLO and service they are.
        rows = [
            row
            for row in self.store.incidents(open_only=True, limit=2 * len(self.alerts) + 1000)
            if row["id"] in firing and not _produced_by(slos, row["service"], row["slo"])
        ]
        if not rows:
            return 0
        sent = self.store.sent_alerts([row["id"] for row in rows])
        changed: dict[str, Alert] = {}
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in rows:
            alert = firing[row["id"]]
            changed[alert.key] = _resolved(alert, now)
            self.unsaved.resolved.append((row["id"], now))
            because = f"SLO {row['slo']} removed from the rules"
            told = {n: a for n, a in sent.get(row["id"], {}).items() if n in self.notifiers}
            log.warning(
                f"alert resolved: {alert.key} ({because}; no result of it in this process)",
                extra=fields(incident=row["id"], service=row["service"], notifiers=sorted(told)),
            )
            for name, last in told.items():
                if self.notifiers[name].kind == "webhook":
                    continue  # rollback webhooks get firings only, as in `_notifications`
                resolved = {
                    **last,
                    "service": row["service"],
                    "resolved_at_text": rfc3339(now),
                    "resolved_because": because,
                }
                queue = _queue(self.notifiers[name], row["service"], row["slo"])
                groups.setdefault((name, queue), []).append(resolved)
        for key, alert in changed.items():
            self.alerts[key] = alert
            self.unsaved.alerts[key] = alert
            self._firing.get(service_of(key), set()).discard(key)
        for (name, service), batch in groups.items():
            notification = finish_now(_notification(name, "resolved", service, batch, now))
            self.unsaved.notifications.append(notification)
        self._commit(now)
        return len(rows)

    def is_quiet(self, key: str) -> bool:
        """No alert, or one inactive or resolved, nothing unsaved, that missing data
        cannot turn into a breach: forgetting it changes no outcome. With `no_data_for`
        (or `no_data: alerting`) an inactive alert counting its missing data is not quiet:
        the absence may be the very breach it waits for."""
        if key in self.unsaved.alerts:
            return False
        alert = self.alerts.get(key)
        if alert is None:
            return True
        if alert.state not in (AlertState.INACTIVE, AlertState.RESOLVED):
            return False
        if alert.no_data_since is None:
            return True
        slo = self.slo_of.get(key)
        return (
            slo is not None
            and slo.alert.no_data_for is None
            and slo.alert.no_data is not NoDataPolicy.ALERTING
        )

    async def forget(self, keys: Sequence[str], delete: bool) -> list[str]:
        """Drop the state of instances that vanished, those of `keys` still quiet under
        the lock; `delete` (the leader) deletes their rows first, and nothing is dropped
        when that fails (retried at the next cycle). Returns the keys dropped."""
        async with self.lock:
            quiet = [k for k in keys if self.is_quiet(k)]
            if not quiet:
                return []
            if delete:
                try:
                    self.store.delete_alerts(quiet)
                except StateStoreError as exc:
                    log.warning(f"state of {len(quiet)} vanished instances kept: {exc}")
                    return []
            for key in quiet:
                self.alerts.pop(key, None)
                self.slo_of.pop(key, None)
                self.last_firing.pop(key, None)
            return quiet

    def adopt(
        self,
        alerts: Mapping[str, Alert],
        group: RuleGroup | None = None,
        results: Sequence[SLOResult] = (),
    ) -> None:
        """Take the alert states another replica committed to a shared store (a follower,
        every cycle; a new leader, once). Changes this replica holds unsaved are dropped:
        they were never sent, and the leader's states stand."""
        if self.unsaved:
            log.warning(
                "alert changes held in memory dropped: another replica leads",
                extra=fields(alerts=len(self.unsaved.alerts)),
            )
        self.unsaved = Unsaved()
        self.alerts = dict(alerts)
        # Measurements this replica stepped are stale now (the leader's incidents may be
        # newer): a removed SLO's resolve must not show one.
        self.last_firing = {}
        self._firing = {}
        for key, alert in self.alerts.items():
            if alert.state is AlertState.FIRING:
                self._firing.setdefault(service_of(key), set()).add(key)
        if group is not None:
            slos = {slo.name: slo for slo in group.slos}
            for result in results:
                slo = slos.get(result.slo)
                if slo is not None:
                    self.slo_of[result.key] = slo

    def _stage(
        self, changed: dict[str, Alert], transitions: list[tuple[SLO, Transition]], now: float
    ) -> Iterator[None]:
        """Stage a step's changes for the commit (a generator). What takes time is built
        first, in slices, into locals: the notifications (if a store read they need fails,
        nothing has changed and the next cycle makes the same steps), the incident rows
        and the transitions' log lines. The changes are then applied in one piece: a step
        cancelled at a pause (a forced stop) leaves no alert FIRING without its incident
        and notification for a later commit to save (at worst its log lines, written
        again when the next run makes the same transitions)."""
        notifications = yield from self._notifications(transitions, now)
        opened: list[dict[str, Any]] = []
        resolved: list[tuple[str, float]] = []
        for n, (_, tr) in enumerate(transitions, 1):
            if n % ITEMS_PER_YIELD == 0:
                yield
            self._log(tr)
            if tr.kind is TransitionKind.FIRING:
                opened.append(_incident_row(tr))
            elif tr.kind is TransitionKind.RESOLVED and tr.alert.incident_id:
                resolved.append((tr.alert.incident_id, now))
        unsaved = self.unsaved
        for key, alert in changed.items():
            self.alerts[key] = alert
            unsaved.alerts[key] = alert
            firing = self._firing.setdefault(service_of(key), set())
            if alert.state is AlertState.FIRING:
                firing.add(key)
            else:
                firing.discard(key)
        unsaved.opened += opened
        unsaved.resolved += resolved
        unsaved.notifications += notifications

    def _encoded(self, later: set[str]) -> Steps[tuple[list[Alert], list[str]]]:
        """The unsaved alerts but those of `later`, and their rows (`alert_data`), as a
        step. An Alert is frozen and the step holds `lock`: the rows stay theirs."""
        alerts = [a for k, a in self.unsaved.alerts.items() if k not in later]
        return alerts, (yield from mapped(alert_data, alerts))

    def _commit(
        self,
        now: float,
        later: set[str] | frozenset[str] = frozenset(),
        prepared: tuple[list[Alert], list[str]] | None = None,
    ) -> bool:
        """Commit what is unsaved except the alert rows of `later` (they stay unsaved, for
        `_commit_quiet`); True when it was saved. `prepared` is `_encoded(later)`'s."""
        pending = self.unsaved
        if prepared is None:
            alerts, rows = [a for k, a in pending.alerts.items() if k not in later], None
        else:
            alerts, rows = prepared
        if not (alerts or pending.opened or pending.resolved or pending.notifications):
            return True  # only quiet rows: `_commit_quiet` saves them
        try:
            self.store.commit_cycle(
                alerts,
                pending.opened,
                pending.resolved,
                pending.notifications,
                now,
                rows,
            )
        except StateStoreWriteError as exc:
            pending.failed_commits += 1
            log.error(
                f"alert changes not saved; kept in memory and retried next cycle: {exc.error}",
                extra=fields(
                    path=exc.path,
                    alerts=len(pending.alerts),
                    notifications=len(pending.notifications),
                    attempts=pending.failed_commits,
                ),
            )
            return False
        self.unsaved = Unsaved(alerts={k: pending.alerts[k] for k in later})
        if pending.failed_commits:
            log.warning(
                f"alert changes saved after {pending.failed_commits} failed attempt(s)",
                extra=fields(alerts=len(pending.alerts), notifications=len(pending.notifications)),
            )
        if pending.notifications:
            self.on_commit()
        return True

    async def _commit_quiet(self, quiet: list[Alert], now: float) -> None:
        """Save quiet alert rows in chunks, giving the event loop a turn before each. A
        chunk that fails stays unsaved with the rest, and the next step commits them whole
        before its own changes."""
        for start in range(0, len(quiet), QUIET_CHUNK):
            await asyncio.sleep(0)
            chunk = quiet[start : start + QUIET_CHUNK]
            try:
                self.store.commit_cycle(chunk, [], [], [], now)
            except StateStoreWriteError as exc:
                self.unsaved.failed_commits += 1
                log.error(
                    f"alert changes not saved; kept in memory and retried next cycle: {exc.error}",
                    extra=fields(
                        path=exc.path,
                        alerts=len(self.unsaved.alerts),
                        notifications=0,
                        attempts=self.unsaved.failed_commits,
                    ),
                )
                return
            for alert in chunk:
                self.unsaved.alerts.pop(alert.key, None)

    def _log(self, tr: Transition) -> None:
        r = tr.result
        log.warning(
            f"alert {tr.kind.value}: {r.key}" + (f" ({tr.because})" if tr.because else ""),
            extra=fields(
                incident=tr.alert.incident_id,
                service=r.service,
                slo=r.slo,
                value=r.value,
                threshold=r.threshold,
                severity=r.severity,
            ),
        )

    @staticmethod
    def _routes(slo: SLO, notifiers: Mapping[str, Route]) -> list[str]:
        if slo.notify:
            return [n for n in slo.notify if n in notifiers]
        return [n for n, notifier in notifiers.items() if notifier.kind != "webhook"]

    def _notifications(
        self, transitions: Sequence[tuple[SLO, Transition]], now: float
    ) -> Steps[list[NewNotification]]:
        silences = [s for s in self.store.silences() if s.active(now)]
        repeats = [
            tr.alert.incident_id for _, tr in transitions if tr.kind is TransitionKind.REPEAT
        ]
        acked = self.store.acknowledgements(i for i in repeats if i) if repeats else {}
        told = self._told_of_silenced_resolves(transitions, silences)
        # As they are now: a reload may swap them in place while this step pauses.
        notifiers, guards = dict(self.notifiers), self.guards
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        granted: dict[tuple[str, str], float] = {}  # rollbacks allowed in this cycle
        for n, (slo, tr) in enumerate(transitions, 1):
            if n % ITEMS_PER_YIELD == 0:
                yield
            r = tr.result
            routes = self._routes(slo, notifiers)
            labels = alert_labels(r.service, r.slo, r.severity, r.labels)
            silence = next((s for s in silences if s.matches(labels)), None)
            if silence is not None:
                # A silence stops pages and reminders, not the end of what was already
                # told: the resolve still reaches the notifiers that showed the firing
                # (the Slack message would say FIRING for ever), and only those.
                shown = told.get(tr.alert.incident_id or "", {})
                resolved = tr.kind is TransitionKind.RESOLVED
                routes = [n for n in routes if resolved and n in shown]
                log.info(
                    f"alert {tr.kind.value} silenced: {r.key}"
                    + (f" (resolve still sent to {', '.join(routes)})" if routes else ""),
                    extra=fields(silence=silence.id, incident=tr.alert.incident_id),
                )
            if tr.kind is TransitionKind.REPEAT and tr.alert.incident_id in acked:
                continue  # acknowledged: someone is on it, no more reminders
            for name in routes:
                notifier = notifiers[name]
                if not severity_at_least(r.severity, notifier.min_severity):
                    continue
                if notifier.kind == "webhook" and not self._rollback_allowed(
                    name, slo, tr, now, granted, guards
                ):
                    continue
                queue = _queue(notifier, r.service, r.slo)
                groups.setdefault((name, queue, tr.kind.value), []).append(
                    self._alert_payload(slo, tr, now)
                )
        out = []
        for (name, service, kind), alerts in groups.items():
            # A rollback webhook gets one request per incident; Slack one message per
            # service (or per SLO: `_queue`).
            batches = [[a] for a in alerts] if notifiers[name].kind == "webhook" else [alerts]
            for batch in batches:
                out.append((yield from _notification(name, kind, service, batch, now)))
        return out

    def _told_of_silenced_resolves(
        self, transitions: Sequence[tuple[SLO, Transition]], silences: Sequence[Silence]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """incident id -> the notifiers that were sent its firing, for the resolves a
        silence matches (one store read, only when there are any)."""
        ids = [
            tr.alert.incident_id
            for _, tr in transitions
            if tr.kind is TransitionKind.RESOLVED
            and tr.alert.incident_id
            and any(
                s.matches(
                    alert_labels(
                        tr.result.service, tr.result.slo, tr.result.severity, tr.result.labels
                    )
                )
                for s in silences
            )
        ]
        return self.store.sent_alerts(ids) if ids else {}

    def _rollback_allowed(
        self,
        name: str,
        slo: SLO,
        tr: Transition,
        now: float,
        granted: dict[tuple[str, str], float],
        guards: Mapping[str, RollbackGuard],
    ) -> bool:
        if tr.kind is not TransitionKind.FIRING or not policy_for(slo, tr.result).rollback:
            return False
        guard = guards.get(name, RollbackGuard(1800.0, 0.0))
        events = tr.result.events
        if guard.min_events and (events is None or events < guard.min_events):
            log.warning(
                f"rollback not triggered for {tr.result.key}: "
                f"{events} events < min_events {guard.min_events:g}"
            )
            return False
        service = tr.result.service
        # Rollbacks not committed yet (an earlier failed commit, or this cycle's) count too.
        times = (
            self.store.last_rollback_at(name, service),
            self.unsaved.last_rollback_at(name, service),
            granted.get((name, service)),
        )
        last = max((t for t in times if t is not None), default=None)
        if last is not None and now - last < guard.cooldown:
            log.warning(
                f"rollback not triggered for {tr.result.service}: cooldown "
                f"({format_duration(guard.cooldown)}) since the last one"
            )
            return False
        granted[(name, service)] = now
        return True

    def _alert_payload(self, slo: SLO, tr: Transition, now: float) -> dict[str, Any]:
        r, a = tr.result, tr.alert
        started = a.fired_at or now
        return {
            "incident_id": a.incident_id,
            "repeat": a.repeats,
            "service": r.service,
            "slo": r.slo,
            "description": slo.description,
            "severity": r.severity,
            "sli_kind": r.kind,
            "good_when": slo.good_when.value,
            "value": r.value,
            "threshold": r.threshold,
            "objective": r.objective,
            "window": r.window,
            "window_text": format_duration(r.window),
            "events": r.events,
            "labels": dict(r.labels),
            "env": dict(slo.labels).get("env"),
            "reason": r.explanation(),
            "query": r.query,
            "runbook_url": slo.runbook_url,
            "dashboard_url": self.dashboard_link(r.service),
            "started_at": started,
            "started_at_text": rfc3339(started),
            "resolved_at_text": rfc3339(now) if tr.kind is TransitionKind.RESOLVED else None,
            "resolved_because": tr.because or None,
        }

    def acknowledge_many(self, incident_ids: Sequence[str], actor: str, now: float) -> int:
        """Someone is on these incidents (a message's, in one write: a message grouped by
        SLO shows hundreds): record who and when, and stop their reminders (their resolves
        are still sent). Returns how many were not acknowledged before."""
        acked = self.store.acknowledge_many(incident_ids, actor, now)
        if acked:
            log.info(
                f"{acked} incident(s) acknowledged by {actor}",
                extra=fields(incidents=len(incident_ids)),
            )
        return acked

    def firing(self, service: str | None = None) -> list[tuple[Alert, SLO]]:
        """The firing alerts (of `service`) with their SLO; those loaded at start count
        from `recognise` on, before any step."""
        services = [service] if service is not None else list(self._firing)
        out = []
        for name in services:
            for key in sorted(self._firing.get(name, ())):
                slo = self.slo_of.get(key)
                if slo is None and self._restored:
                    waiting = self._restored.get(_named(key)[1], {}).get(key)
                    slo = waiting.slo if waiting is not None else None
                if slo is not None and key not in self._retired:
                    out.append((self.alerts[key], slo))
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return list(alerts_json(self.snapshot()))

    def snapshot(self) -> AlertsSnapshot:
        """The alert states as they are now, for `alerts_json` to format off the loop: the
        states change on the loop, but each `Alert` is immutable (changed by replacing
        it), so copying the maps is enough: C-level copies, ~10 ms at 150,000 states
        where building a row per state here held the loop ~90 ms."""
        return AlertsSnapshot(
            list(self.alerts.items()), frozenset(self.unsaved.alerts), dict(self.slo_of)
        )


@dataclass(frozen=True)
class AlertsSnapshot:
    """`AlertManager.snapshot()`: the states, the keys not yet saved, each key's SLO."""

    alerts: list[tuple[str, Alert]]
    unsaved: frozenset[str]
    slo_of: Mapping[str, SLO]


def alerts_json(snapshot: AlertsSnapshot) -> Iterator[dict[str, Any]]:
    """`/api/v1/alerts`' alerts, by key, one at a time (written as they are encoded: at
    150,000 alert states the whole list of dicts was 72 MB, twice its JSON)."""
    slo_of, unsaved = snapshot.slo_of, snapshot.unsaved
    for key, alert in sorted(snapshot.alerts, key=_key):
        slo = slo_of.get(key)
        yield {
            "key": key,
            "service": service_of(key),
            "slo": slo.name if slo else None,
            "severity": slo.severity.value if slo else None,
            "state": alert.state.value,
            "since": rfc3339(alert.since) if alert.since else None,
            "incident_id": alert.incident_id,
            "fired_at": rfc3339(alert.fired_at) if alert.fired_at else None,
            # False while a change is held in memory because the store failed.
            "saved": key not in unsaved,
        }


def _key(item: tuple[str, Alert]) -> str:
    return item[0]
