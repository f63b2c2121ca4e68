"""The gate's canary mode: which series are the canary and which the baseline, one query per
SLO for both, the pure comparison (sentinel/evaluate/canary.py), and the body's `canary`
section. `Gate.check` (service.py) owns caching, budget, deadline and audit for both modes;
this module plans, queries and judges.

Which series: the request's `canary=` / `baseline=` when given (labels of
`gate.canary.labels`, checked to only narrow like request labels), else the rule file's
`canary:` block. Both sides join the rule's own matchers and the request's narrowing
labels (`env=prod`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.config import CanaryGateConfig
from sentinel.errors import GateInputError, SentinelError, SourceError
from sentinel.evaluate.canary import (
    CanaryInput,
    Judgement,
    Settings,
    UnusableAnswer,
    judge,
    sides_from_answer,
)
from sentinel.gate.request import GateRequest, check_narrowing
from sentinel.query.canary import SIDES, canary_query, comparable
from sentinel.rules.model import SLO, LatencySLI, Matcher, MatchOp
from sentinel.sources.base import Sample, Source

Answer = list[Sample] | SourceError


@dataclass(frozen=True)
class CanaryPlan:
    slo: SLO
    sides: Mapping[str, tuple[Matcher, ...]]
    window: float
    query: str


def sides_for(slo: SLO, req: GateRequest) -> dict[str, tuple[Matcher, ...]]:
    """The canary's and the baseline's matchers for `slo`: the request's, else the rule
    file's defaults. A side neither names is a 400 saying where to set it."""
    out = {}
    for side, given, default in (
        ("canary", req.canary, slo.canary.canary),
        ("baseline", req.baseline, slo.canary.baseline),
    ):
        matchers = given if given is not None else default
        if not matchers:
            raise GateInputError(
                side,
                f"SLO {slo.name} has no {side} selector: give {side}=label:value, or set "
                f"canary.{side} in {slo.source_file or 'its rule file'}",
            )
        out[side] = matchers
    if out["canary"] == out["baseline"]:
        raise GateInputError("baseline", f"SLO {slo.name}: selects the same series as canary")
    return out


def plan(
    slos: Sequence[SLO], req: GateRequest, window: float | None, extra: Sequence[Matcher]
) -> tuple[list[CanaryPlan], list[str]]:
    """(one plan per comparable SLO, notes on the SLOs left out). `window` None: each
    SLO's own window. Request sides are checked to only narrow each rule."""
    compared = [slo for slo in slos if comparable(slo)]
    for side, given in (("canary", req.canary), ("baseline", req.baseline)):
        if given:
            try:
                check_narrowing(compared, given)
            except GateInputError as exc:
                raise GateInputError(side, str(exc)) from None
    plans = []
    for slo in compared:
        sides = sides_for(slo, req)
        w = window if window is not None else slo.window
        plans.append(CanaryPlan(slo, sides, w, canary_query(slo, sides, w, extra)))
    left_out = [
        f"{slo.name}: not compared (a raw query cannot be split by release)"
        if slo.canary.compare
        else f"{slo.name}: not compared (canary.compare: false)"
        for slo in slos
        if not comparable(slo)
    ]
    return plans, left_out


async def query(
    plans: Sequence[CanaryPlan], sources: Mapping[str, Source], at: float
) -> dict[str, Answer]:
    """SLO key -> its answer (or the source's error), all queries concurrently."""

    async def one(p: CanaryPlan) -> Answer:
        source = sources.get(p.slo.source)
        if source is None:
            return SourceError(p.slo.source, p.query, "source is not configured")
        try:
            return await source.instant(p.query, at)
        except SourceError as exc:
            return exc
        except SentinelError as exc:  # pragma: no cover - defensive, as in the engine
            return SourceError(p.slo.source, p.query, str(exc))

    answers = await asyncio.gather(*(one(p) for p in plans))
    return {p.slo.key: a for p, a in zip(plans, answers, strict=True)}


def compare(
    plans: Sequence[CanaryPlan],
    answers: Mapping[str, Answer],
    config: CanaryGateConfig,
    unavailable: Callable[[SLO, SourceError], tuple[str, str]],
) -> Judgement:
    """The pure judgement of the answers; `unavailable` turns a source error into a
    verdict and reason (the gate's source-down policy)."""
    inputs = []
    for p in plans:
        slo, answer = p.slo, answers[p.slo.key]
        latency = isinstance(slo.sli, LatencySLI)
        kind = slo.sli.kind.value
        quantile = slo.sli.quantile if isinstance(slo.sli, LatencySLI) else None
        if isinstance(answer, SourceError):
            inputs.append(
                CanaryInput(
                    slo.name, kind, slo.canary, None, None, quantile, unavailable(slo, answer)
                )
            )
            continue
        try:
            sides = sides_from_answer(latency, answer)
        except UnusableAnswer as exc:
            verdict = ("fail", f"unusable answer: {exc}")
            inputs.append(CanaryInput(slo.name, kind, slo.canary, None, None, quantile, verdict))
            continue
        inputs.append(
            CanaryInput(slo.name, kind, slo.canary, sides["canary"], sides["baseline"], quantile)
        )
    return judge(inputs, settings(config))


def settings(config: CanaryGateConfig) -> Settings:
    return Settings(
        alpha=config.alpha,
        power=config.power,
        early_alpha=config.early_alpha,
        pass_score=config.pass_score,
        marginal_score=config.marginal_score,
    )


def section(
    judgement: Judgement,
    plans: Sequence[CanaryPlan],
    left_out: Sequence[str],
    config: CanaryGateConfig,
) -> dict[str, Any]:
    """The response body's `canary` section: per SLO the comparison, its selectors, window
    and query; the score; the settings that judged it."""
    by_name = {p.slo.name: p for p in plans}
    slos = []
    for c in judgement.slos:
        p = by_name[c.slo]
        slos.append(
            {
                **c.to_json(),
                "selectors": {side: _shown(p.sides[side]) for side in SIDES},
                "window": p.window,
                "query": p.query,
            }
        )
    return {
        "decision": judgement.decision,
        "score": judgement.score,
        "slos": slos,
        "not_compared": list(left_out),
        "settings": {
            "alpha": config.alpha,
            "early_alpha": config.early_alpha,
            "power": config.power,
            "pass_score": config.pass_score,
            "marginal_score": config.marginal_score,
        },
    }


def legacy_slos(judgement: Judgement, plans: Sequence[CanaryPlan]) -> list[dict[str, Any]]:
    """`slos[]` in the shape of the absolute gate's (stable paths for existing tools):
    status is the comparison's verdict, value the canary's, threshold the tolerated."""
    windows = {p.slo.name: p.window for p in plans}
    return [
        {
            "slo": c.slo,
            "status": c.verdict,
            "value": c.canary.value,
            "threshold": c.tolerated,
            "objective": None,
            "events": c.canary.events,
            "window": windows.get(c.slo),
            "labels": {},
            "reason": c.reason,
        }
        for c in judgement.slos
    ]


def _shown(matchers: Sequence[Matcher]) -> dict[str, str]:
    return {m.label: m.value if m.op is MatchOp.EQ else f"{m.op.value}{m.value}" for m in matchers}
