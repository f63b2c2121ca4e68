"""One evaluation cycle: plan the queries, run them concurrently, evaluate purely.

`Engine.evaluate_once(at)` is the single entry point the scheduler, the CLI, the gate and
the benchmarks call. It never raises for a backend failure or a bad answer: those become
`no_data` results carrying the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sentinel.errors import SentinelError, SourceError
from sentinel.evaluate.budgets import KeptParses, TierNames, budget_steps
from sentinel.evaluate.slo import InstanceKey, Names, SLOResult, evaluate_failure, evaluate_steps
from sentinel.query.promql import exportable, recorded_ratio_query
from sentinel.rules.model import SLO, Matcher
from sentinel.slicing import CHUNK, Slicer, Steps, finish
from sentinel.sources.base import KeptLabels, Sample, Source

log = logging.getLogger(__name__)

QueryRenderer = Callable[[SLO, float | None, Sequence[Matcher]], str]

# The daemon reuses a budget or burn-rate window's answer for up to this fraction of the
# window (30d: 1 h, 3d: 6 min, 1d: 2 min, 6h: 30 s, 1h: 5 s): within it the window's
# ratio moves by at most 1/720 of its range, while asking a raw 30-day window every
# 30-second cycle costs Prometheus a scan of a month of samples per SLO each time.
# The SLO's own query and every window shorter than 720 intervals are asked every cycle.
WINDOW_REUSE = 1 / 720

# Rendered queries kept (SLOs x windows x the gate's distinct matcher sets).
RENDERED_KEPT = 10_000


@dataclass(frozen=True)
class PlannedQuery:
    source: str
    query: str


@dataclass
class CycleReport:
    at: float
    results: list[SLOResult]
    duration: float
    queries: int
    errors: dict[str, SourceError]


class Engine:
    """Evaluates SLOs against the configured sources; remembers instances it has seen."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        renderers: Mapping[str, QueryRenderer],
        recorded_budgets: bool = False,
        reuse_windows: bool = False,
    ):
        self.sources = sources
        self.renderers = renderers
        self.recorded_budgets = recorded_budgets
        # Only the daemon's cycles reuse long windows (evaluation.long_window_refresh);
        # backtests, rule tests and the CLI evaluate every instant afresh.
        self.reuse_windows = reuse_windows
        # SLO key -> instance -> when an answer last held it (`forget_instances`).
        self._known: dict[str, dict[InstanceKey, float]] = {}
        self._evaluated_at: dict[str, float] = {}  # SLO key -> its last remembered cycle
        # Budget/burn window query -> (the instant it was answered for, its samples).
        self._reused: dict[PlannedQuery, tuple[float, list[Sample]]] = {}
        # One labels dict per label set across the kept answers (`_keep`).
        self._label_sets: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        self._seen: dict[int, Mapping[str, str]] = {}  # id -> each dict of _label_sets
        # Rendered queries: the same every cycle for the same SLO (rendering them was
        # ~1.6 ms a cycle for three SLOs, most of a small cycle's fixed cost).
        self._rendered: dict[tuple[SLO, float | None, tuple[Matcher, ...]], PlannedQuery] = {}
        # SLO key -> (the SLO they were built for, its instances' labels and keys, those of
        # its burn tiers): lent to each cycle's results (`slo.Names`); and what its reused
        # window answers were judged to (`budget_steps(kept=...)`).
        self._names: dict[str, tuple[SLO, Names, TierNames, KeptParses]] = {}

    def _render(self, slo: SLO, window: float | None, extra: Sequence[Matcher]) -> PlannedQuery:
        key = (slo, window, tuple(extra))
        planned = self._rendered.get(key)
        if planned is None:
            if len(self._rendered) >= RENDERED_KEPT:  # gate requests bring their matchers
                self._rendered.clear()
            planned = PlannedQuery(slo.source, self.renderers[slo.source](slo, window, extra))
            self._rendered[key] = planned
        return planned

    def plan(
        self, slos: Sequence[SLO], window: float | None = None, extra: Sequence[Matcher] = ()
    ) -> dict[str, PlannedQuery]:
        """SLO key -> query. Identical queries of different SLOs are sent once."""
        return {
            slo.key: self._render(
                slo, min(window, slo.window) if window is not None else None, extra
            )
            for slo in slos
        }

    async def evaluate_once(
        self,
        slos: Sequence[SLO],
        at: float,
        window: float | None = None,
        extra: Sequence[Matcher] = (),
        remember: bool = True,
        budgets: bool = True,
    ) -> CycleReport:
        started = time.monotonic()
        plan = self.plan(slos, window, extra)
        budget_plan = self.plan_budgets(slos, extra) if budgets else {}
        wanted = set(plan.values()) | {q for qs in budget_plan.values() for q in qs.values()}
        unique = sorted(wanted, key=lambda q: (q.source, q.query))
        needs: dict[str, set[PlannedQuery]] = {
            slo.key: {plan[slo.key], *budget_plan.get(slo.key, {}).values()} for slo in slos
        }
        by_query: dict[PlannedQuery, list[Sample] | SourceError] = {}
        per_slo: dict[str, list[SLOResult]] = {}
        errors: dict[str, SourceError] = {}
        reuse = self._reuse_bounds(plan, budget_plan) if self.reuse_windows else {}
        for planned, bound in reuse.items():
            kept = self._reused.get(planned)
            if kept is not None and 0.0 <= at - kept[0] < bound:
                by_query[planned] = kept[1]
        reused = set(by_query)
        asked = [q for q in unique if q not in by_query]
        # Which SLOs each answer may complete, and how many answers each still waits for
        # (one scan of the SLOs per answer was 300 x 2,400 checks for 300 SLOs). One per
        # key, in order: an SLO listed twice is evaluated once, its results given twice.
        first: dict[str, SLO] = {}
        for slo in slos:
            first.setdefault(slo.key, slo)
        missing = {key: len(needs[key] - by_query.keys()) for key in first}
        waiting: dict[PlannedQuery, list[SLO]] = {}
        for key, slo in first.items():
            for planned in needs[key] - by_query.keys():
                waiting.setdefault(planned, []).append(slo)
        tasks = [asyncio.ensure_future(self._answer(q, at)) for q in asked]
        try:
            # Evaluate each SLO as soon as its answers are in, while other queries are
            # still in flight: the cycle then costs little more than the slowest query.
            # One slicer across the answers and SLOs: many small SLOs, none a slice long
            # alone, give the loop its turns between them, also when their answers were
            # all in already (`await done` then returns without a turn of the loop).
            slicer = Slicer()
            for done in asyncio.as_completed(tasks):
                waited = time.perf_counter()
                planned, answer = await done
                slicer.skip(time.perf_counter() - waited)  # waiting is not work
                if planned in reuse:
                    if isinstance(answer, list):
                        answer = await self._keep(planned, at, answer, slicer)
                    else:
                        self._reused.pop(planned, None)
                by_query[planned] = answer
                for slo in waiting.pop(planned, ()):
                    missing[slo.key] -= 1
                    if missing[slo.key]:
                        continue
                    # Up to tens of ms of pure Python for an SLO of thousands of
                    # instances: on the loop in slices, gate and health requests answered
                    # between them (sentinel/slicing.py; not in a worker thread, which
                    # took the interpreter whenever the loop made a system call).
                    per_slo[slo.key] = await finish(
                        self._evaluate_slo(
                            slo, plan, budget_plan, by_query, reused, at, window, remember, errors
                        ),
                        slicer,
                    )
                    if slicer.due():
                        await slicer.pause()
        finally:
            for task in tasks:  # a cycle cancelled at its deadline leaves nothing behind
                task.cancel()
        results = [r for slo in slos for r in per_slo.get(slo.key, [])]
        return CycleReport(at, results, time.monotonic() - started, len(asked), errors)

    @staticmethod
    def _reuse_bounds(
        plan: Mapping[str, PlannedQuery], budget_plan: Mapping[str, Mapping[float, PlannedQuery]]
    ) -> dict[PlannedQuery, float]:
        """Window query -> how long (seconds of evaluation time) its answer may be reused;
        a query shared with an SLO's own query (its 5m window, say) is never reused."""
        bounds: dict[PlannedQuery, float] = {}
        for windows in budget_plan.values():
            for window, planned in windows.items():
                bounds[planned] = min(bounds.get(planned, math.inf), window * WINDOW_REUSE)
        for planned in plan.values():
            bounds.pop(planned, None)
        return bounds

    async def _answer(
        self, planned: PlannedQuery, at: float
    ) -> tuple[PlannedQuery, list[Sample] | SourceError]:
        return planned, await self._run(planned, at)

    def _evaluate_slo(
        self,
        slo: SLO,
        plan: Mapping[str, PlannedQuery],
        budget_plan: Mapping[str, Mapping[float, PlannedQuery]],
        by_query: Mapping[PlannedQuery, list[Sample] | SourceError],
        reused: set[PlannedQuery],
        at: float,
        window: float | None,
        remember: bool,
        errors: dict[str, SourceError],
    ) -> Steps[list[SLOResult]]:
        """One SLO's results (and its burn tiers'), as a step that yields every few
        instances."""
        planned = plan[slo.key]
        answer = by_query[planned]
        effective_window = min(window, slo.window) if window is not None else None
        known = self._known.setdefault(slo.key, {}) if remember else {}
        names, tier_names, kept = (
            self._names_of(slo, len(known)) if remember else (None, None, None)
        )
        if isinstance(answer, SourceError):
            errors[slo.key] = answer
            reason = f"{answer.source} {answer.kind}: {answer.detail}"
            out = evaluate_failure(slo, reason, at, planned.query, known, effective_window, names)
            if remember and known:
                # A source that cannot answer says nothing about absence: the absence
                # clock of each instance (daemon/vanished.py) pauses for the failed cycle
                # instead of running — nor restarting, or intermittent failures would keep
                # a gone instance for ever.
                paused = max(0.0, at - self._evaluated_at.get(slo.key, at))
                for instance, last in known.items():
                    known[instance] = last + paused
        else:
            seen: set[InstanceKey] = set()
            out = yield from evaluate_steps(
                slo, answer, at, planned.query, known, effective_window, seen, names
            )
            if remember:
                known.update(dict.fromkeys(seen, at))
        if remember:
            self._evaluated_at[slo.key] = at
        if slo.key in budget_plan:
            windows = budget_plan[slo.key]
            window_answers: dict[float, list[Sample] | None] = {}
            for w, q in windows.items():
                got = by_query[q]
                window_answers[w] = None if isinstance(got, SourceError) else got
            queries = {w: q.query for w, q in windows.items()}
            again = {w for w, q in windows.items() if q in reused}
            out = yield from budget_steps(
                slo, out, window_answers, queries, tier_names, kept, again
            )
        return out

    def _names_of(self, slo: SLO, known: int) -> tuple[Names, TierNames, KeptParses]:
        """The SLO's lent labels and keys, and its reused answers' judgements; afresh for
        a changed SLO (a reload), and when they outgrow the instances remembered (a key
        the answers no longer hold)."""
        kept = self._names.get(slo.key)
        if kept is None or kept[0] is not slo or len(kept[1]) > 2 * known + 1000:
            kept = self._names[slo.key] = (slo, {}, {}, {})
        return kept[1], kept[2], kept[3]

    async def _keep(
        self, planned: PlannedQuery, at: float, answer: list[Sample], slicer: Slicer
    ) -> list[Sample]:
        """Keep a window's answer for reuse, its samples sharing one labels dict per label
        set with the other kept answers: every window of an SLO answers the same instances,
        and each answer decoded its own copies. At 10,000 services x 3 SLIs the kept
        answers held 140,000 labels dicts and their strings, 54 MB of the daemon's memory."""
        answer = await finish(self._share_labels(answer), slicer)
        self._reused[planned] = (at, answer)
        kept = sum(len(samples) for _, samples in self._reused.values())
        if len(self._label_sets) > 2 * kept + 1000:
            # Label sets of instances gone from every answer: start afresh (answers kept
            # already keep their dicts; only sharing with them is lost until they refresh).
            self._label_sets, self._seen = {}, {}
        return answer

    def _share_labels(self, answer: list[Sample]) -> Steps[list[Sample]]:
        # A source may keep its answers' labels dicts from cycle to cycle itself (a
        # compact Prometheus answer does, sentinel/sources/compact_vector.py): a dict that
        # is the shared one is known by identity, without building and hashing its items.
        # `_seen` names only dicts `_label_sets` holds (no memory of its own beyond the
        # map), so an id cannot be reused while it is there.
        #
        # Such a source may also hand a new dict for a set it dropped and read again
        # (its cache's bound, at start-up before it knows the answers' size): the
        # shared one would then never be met by identity again, and every sample of it
        # would be hashed and rebuilt each cycle. A dict the source keeps (`KeptLabels`)
        # becomes the shared one; a dict decoded for one answer alone does not (each
        # answer decoded in full brings new ones: they keep sharing the first).
        sets, seen, new = self._label_sets, self._seen, tuple.__new__
        out: list[Sample] = []
        for start in range(0, len(answer), CHUNK):
            for sample in answer[start : start + CHUNK]:
                labels = sample.labels
                if seen.get(id(labels)) is labels:
                    out.append(sample)
                    continue
                items = tuple(labels.items())
                shared = sets.setdefault(items, labels)
                if shared is not labels:
                    if type(labels) is not KeptLabels:
                        out.append(new(Sample, (shared, sample.value)))
                        continue
                    sets[items] = labels
                    if seen.get(id(shared)) is shared:
                        del seen[id(shared)]
                seen[id(labels)] = labels
                out.append(sample)
            yield
        return out

    def plan_budgets(
        self, slos: Sequence[SLO], extra: Sequence[Matcher] = ()
    ) -> dict[str, dict[float, PlannedQuery]]:
        """SLO key -> {window: query} for the period and every burn-rate window."""
        out: dict[str, dict[float, PlannedQuery]] = {}
        for slo in slos:
            if slo.period is None or slo.objective is None:
                continue
            windows = {slo.period, *(slo.burn.catalogue.windows() if slo.burn else ())}
            if self.recorded_budgets and exportable(slo) and not extra:
                out[slo.key] = {
                    w: PlannedQuery("prometheus", recorded_ratio_query(slo, w)) for w in windows
                }
                continue
            out[slo.key] = {w: self._render(slo, w, extra) for w in windows}
        return out

    async def _run(self, planned: PlannedQuery, at: float) -> list[Sample] | SourceError:
        source = self.sources.get(planned.source)
        if source is None:
            return SourceError(planned.source, planned.query, "source is not configured")
        try:
            return await source.instant(planned.query, at)
        except SourceError as exc:
            return exc
        except SentinelError as exc:  # pragma: no cover - defensive
            return SourceError(planned.source, planned.query, str(exc))

    def last_seen(self, slo_key: str, instance: InstanceKey) -> float | None:
        """When an answer of the SLO last held the instance (None: not remembered)."""
        return self._known.get(slo_key, {}).get(instance)

    def remembered(self, slo_key: str) -> int:
        """How many instances of the SLO the engine remembers."""
        return len(self._known.get(slo_key, ()))

    def forget_instances(self, slo_key: str, instances: Iterable[InstanceKey]) -> None:
        """Stop reporting instances that vanished (daemon/vanished.py decides which)."""
        known = self._known.get(slo_key, {})
        kept = self._names.get(slo_key)
        for instance in instances:
            known.pop(instance, None)
            if kept is not None:
                kept[1].pop(instance, None)
                kept[2].pop(instance, None)

    def forget(self, keep: Sequence[SLO]) -> None:
        """Drop remembered instances of SLOs that no longer exist (after a reload)."""
        names = {slo.key for slo in keep}
        self._reused.clear()  # the rules (and so the queries) may have changed
        self._label_sets, self._seen = {}, {}
        self._rendered.clear()
        self._names.clear()
        for key in list(self._known):
            if key not in names:
                del self._known[key]
                self._evaluated_at.pop(key, None)
