"""Canary mode, simulated: how often does the gate fail an identical canary (A/A), and how
often, and how fast, does it catch a bad one (A/B)? One command:

    .venv/bin/python bench/canary_sim.py [--aa 300] [--ab 100] [--minutes 10] [--seed 1]

Generates random traffic (Poisson arrivals, binomial errors and fallbacks, log-normal
latencies in the chatbot's histogram buckets) for every run at once, each run under its
own `run` label, backfills it into Debian's Prometheus, and asks the real gate (the
daemon's assembly over loopback HTTP: `mode=canary&run=…&since=…`) every 30 s of
simulated time, as a pipeline would, until it answers pass or fail, for up to
`--minutes`. Prints the false-fail rate of A/A runs, the power on each A/B regression
(2x 5xx, +50 % P95, 3x fallback), the minutes of canary traffic a verdict took, and
the wall time of one gate request. Not a timed test: figures vary a little by seed.

Rates (the canary takes 5 %): HTTP 300 requests/s with 0.5 % 5xx; chat answers 50/s
with 2 % fallbacks and a latency median of 0.8 s (P95 ~1.4 s). The fallback SLO's rule
sets `canary: {detect: 3}` (the regression it must catch: 3x); the others keep the
defaults (2x ratio, 1.5x latency).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.gatestack import running_gate
from support.promserver import PrometheusServer, backfill

BASE = 1796000000  # the deploy: canary traffic starts here
STEP = 15
LE = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, math.inf)
HTTP_RATE, ERROR_SHARE = 300.0, 0.005
CHAT_RATE, FALLBACK_SHARE = 50.0, 0.02
LATENCY_MEDIAN, LATENCY_SIGMA = 0.8, 0.35
CANARY_SHARE = 0.05
POLL = 30
SCENARIOS = {  # name -> (5xx factor, latency factor, fallback factor) for the canary
    "A/A": (1.0, 1.0, 1.0),
    "2x 5xx": (2.0, 1.0, 1.0),
    "+50 % P95": (1.0, 1.5, 1.0),
    "3x fallback": (1.0, 1.0, 3.0),
}

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {job: canarysim}
canary:
  canary: {track: canary}
  baseline: {track: stable}
slos:
  - name: chat-latency-p95
    sli: {latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}}
    threshold: 1.5s
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.5%
  - name: fallback-answer-rate
    sli:
      ratio:
        bad: {metric: chatbot_answers_total, matchers: {answer_mode: snippet-fallback}}
        total: {metric: chatbot_answers_total}
    objective: 95%
    canary: {detect: 3}
"""


def bucket_shares(scale: float) -> np.ndarray:
    cdf = stats.lognorm.cdf(np.array(LE[:-1]), LATENCY_SIGMA, scale=LATENCY_MEDIAN * scale)
    return np.diff(np.concatenate(([0.0], cdf, [1.0])))


def write_runs(
    path: Path, runs: list[tuple[str, str]], minutes: int, rng: np.random.Generator
) -> None:
    """OpenMetrics for every run: counters from zero one step before BASE."""
    steps = minutes * 60 // STEP + 2
    times = [BASE - STEP + i * STEP for i in range(steps + 1)]
    families: dict[str, list[str]] = {"http_requests": [], "chatbot_answers": [], "latency": []}
    for run, scenario in runs:
        err_f, lat_f, fb_f = SCENARIOS[scenario]
        for side, share, f_err, f_lat, f_fb in (
            ("canary", CANARY_SHARE, err_f, lat_f, fb_f),
            ("stable", 1 - CANARY_SHARE, 1.0, 1.0, 1.0),
        ):
            labels = f'job="canarysim",run="{run}",track="{side}"'
            requests = rng.poisson(HTTP_RATE * share * STEP, steps)
            errors = rng.binomial(requests, ERROR_SHARE * f_err)
            answers = rng.poisson(CHAT_RATE * share * STEP, steps)
            fallbacks = rng.binomial(answers, FALLBACK_SHARE * f_fb)
            buckets = np.array([rng.multinomial(n, bucket_shares(f_lat)) for n in answers])
            for name, family, extra, per_step in (
                ("http_requests_total", "http_requests", ',status="200"', requests - errors),
                ("http_requests_total", "http_requests", ',status="500"', errors),
                (
                    "chatbot_answers_total",
                    "chatbot_answers",
                    ',answer_mode="llm-summary"',
                    answers - fallbacks,
                ),
                (
                    "chatbot_answers_total",
                    "chatbot_answers",
                    ',answer_mode="snippet-fallback"',
                    fallbacks,
                ),
            ):
                values = np.concatenate(([0], np.cumsum(per_step)))
                families[family] += [
                    f"{name}{{{labels}{extra}}} {v} {t}" for v, t in zip(values, times, strict=True)
                ]
            cumulative = np.cumsum(np.cumsum(buckets, axis=1), axis=0)
            for i, le in enumerate(LE):
                bound = "+Inf" if math.isinf(le) else repr(le)
                values = np.concatenate(([0], cumulative[:, i]))
                families["latency"] += [
                    f'chatbot_response_latency_seconds_bucket{{{labels},le="{bound}"}} {v} {t}'
                    for v, t in zip(values, times, strict=True)
                ]
    with path.open("w") as out:
        out.write("# TYPE http_requests counter\n" + "\n".join(families["http_requests"]) + "\n")
        out.write(
            "# TYPE chatbot_answers counter\n" + "\n".join(families["chatbot_answers"]) + "\n"
        )
        out.write("# TYPE chatbot_response_latency_seconds histogram\n")
        out.write("\n".join(families["latency"]) + "\n# EOF\n")


@dataclass
class Run:
    name: str
    scenario: str
    looks: list[str] = field(default_factory=list)
    first: tuple[str, float] | None = None  # the first pass/fail and when (minutes)
    failed_on: list[str] = field(default_factory=list)  # the SLOs of each failing look


async def simulate(
    prom_url: str, runs: list[Run], minutes: int, work: Path
) -> tuple[list[float], list[float]]:
    """Polls every run every POLL seconds of simulated time; returns the wall times of the
    requests (6 in flight) and of 100 more asked one at a time at the end."""
    gate_config = """\
        gate:
          request_labels: [run]
          max_evaluations_per_second: 1000
          max_pending_evaluations: 1000
          max_in_flight: 4
          deadline: 60s
          cache_ttl: 0s
        """
    durations: list[float] = []
    alone: list[float] = []
    monkeypatch = pytest.MonkeyPatch()
    try:
        async with running_gate(
            work,
            prom_url,
            monkeypatch,
            gate_config,
            rules={"chatbot.yaml": RULES},
            source_extra="retries: 1, timeout: 30s",
        ) as gate:
            limit = asyncio.Semaphore(6)

            async def ask(run: Run, at: float) -> None:
                async with limit:
                    started = time.perf_counter()
                    _, body, _ = await gate.get(
                        service="chatbot-backend", mode="canary", run=run.name, since=str(BASE)
                    )
                    durations.append(time.perf_counter() - started)
                decision = body["decision"]
                run.looks.append(decision)
                if decision == "fail":
                    run.failed_on += [
                        s["slo"] for s in body["canary"]["slos"] if s["verdict"] == "fail"
                    ]
                if run.first is None and decision in ("pass", "fail"):
                    run.first = (decision, (at - BASE) / 60)

            for k in range(1, minutes * 60 // POLL + 1):
                at = BASE + k * POLL
                gate.clock.now = at
                # A/A runs are asked at every look (an Argo analysis keeps measuring);
                # A/B runs until their first verdict (a Flagger webhook stops there).
                active = [r for r in runs if r.first is None or r.scenario == "A/A"]
                await asyncio.gather(*(ask(r, at) for r in active))
            gate.clock.now += 1  # past the fresh-result cache: every request evaluates
            for run in runs[:100]:
                started = time.perf_counter()
                await gate.get(
                    service="chatbot-backend", mode="canary", run=run.name, since=str(BASE)
                )
                alone.append(time.perf_counter() - started)
    finally:
        monkeypatch.undo()
    return durations, alone


def _ms(values: list[float], q: float) -> str:
    values = sorted(values)
    return f"{values[int(q * (len(values) - 1))] * 1000:.1f} ms"


def report(
    runs: list[Run],
    durations: tuple[list[float], list[float]],
    minutes: int,
    seconds: dict[str, float],
) -> None:
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.scenario, []).append(run)
    print(
        f"\nrates: HTTP {HTTP_RATE:g} req/s ({HTTP_RATE * CANARY_SHARE:g}/s canary), "
        f"{ERROR_SHARE:.1%} 5xx; chat {CHAT_RATE:g} answers/s ({CHAT_RATE * CANARY_SHARE:g}/s "
        f"canary), {FALLBACK_SHARE:.0%} fallbacks, latency median {LATENCY_MEDIAN} s "
        f"(P95 {LATENCY_MEDIAN * math.exp(1.645 * LATENCY_SIGMA):.2f} s); polled every {POLL} s "
        f"for {minutes} min\n"
    )
    print(
        f"{'scenario':<13}{'runs':>5}{'fail':>9}{'pass':>9}{'no verdict':>12}  minutes to the first verdict (median / p90)"
    )
    for name, group in by.items():
        first = Counter(r.first[0] if r.first else "none" for r in group)
        share = {k: first[k] / len(group) for k in ("fail", "pass", "none")}
        target = "pass" if name == "A/A" else "fail"
        times = sorted(r.first[1] for r in group if r.first and r.first[0] == target)
        when = (
            f"{statistics.median(times):.1f} / {times[int(0.9 * (len(times) - 1))]:.1f} ({target})"
            if times
            else "-"
        )
        print(
            f"{name:<13}{len(group):>5}{share['fail']:>9.1%}{share['pass']:>9.1%}"
            f"{share['none']:>12.1%}  {when}"
        )
    aa = by.get("A/A", [])
    if aa:
        first_fail = sum(1 for r in aa if r.first and r.first[0] == "fail") / len(aa)
        any_fail = sum(1 for r in aa if "fail" in r.looks) / len(aa)
        marginal = sum(1 for r in aa if "marginal" in r.looks) / len(aa)
        print(
            f"\nA/A false fails: {first_fail:.1%} stopping at the first verdict (Flagger), "
            f"{any_fail:.1%} over all {len(aa[0].looks)} looks (Argo, failureLimit 0); "
            f"target <= 1 %: {'met' if max(first_fail, any_fail) <= 0.01 else 'NOT met'}"
        )
        print(f"A/A runs marginal at some look: {marginal:.1%}")
        culprits = Counter(slo for r in aa for slo in set(r.failed_on))
        if culprits:
            print("A/A runs failed by: " + ", ".join(f"{k} {v}" for k, v in culprits.items()))
    powers = [
        sum(1 for r in g if r.first and r.first[0] == "fail") / len(g)
        for name, g in by.items()
        if name != "A/A"
    ]
    if powers:
        print(
            f"A/B power within {minutes} min: lowest {min(powers):.1%}; target >= 95 %: "
            f"{'met' if min(powers) >= 0.95 else 'NOT met'}"
        )
    loaded, alone = durations
    print(
        f"\none gate request (3 SLOs: 3 queries, both sides each, + statistics): p50 "
        f"{_ms(alone, 0.5)}, p99 {_ms(alone, 0.99)} alone ({len(alone)} requests); p50 "
        f"{_ms(loaded, 0.5)}, p99 {_ms(loaded, 0.99)} with 6 in flight ({len(loaded)} requests)"
    )
    print("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aa", type=int, default=300)
    parser.add_argument("--ab", type=int, default=100, help="runs per A/B regression")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    plan = [("A/A", args.aa)] + [(name, args.ab) for name in SCENARIOS if name != "A/A"]
    runs = [
        Run(f"{name.replace(' ', '').replace('/', '').replace('%', '')}-{i:04d}", name)
        for name, n in plan
        for i in range(n)
    ]
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        data = work / "runs.om"
        write_runs(data, [(r.name, r.scenario) for r in runs], args.minutes, rng)
        seconds["generate"] = time.perf_counter() - started
        prom = PrometheusServer(work / "prom")
        prom.workdir.mkdir()
        started = time.perf_counter()
        backfill(data, prom.storage)
        data.unlink()
        seconds["backfill"] = time.perf_counter() - started
        prom.start()
        try:
            started = time.perf_counter()
            (work / "gate").mkdir()
            durations = asyncio.run(simulate(prom.url, runs, args.minutes, work / "gate"))
            seconds["simulate"] = time.perf_counter() - started
        finally:
            prom.stop()
    print(
        f"canary simulation: {args.aa} A/A runs and {args.ab} runs of each A/B regression, seed {args.seed}"
    )
    report(runs, durations, args.minutes, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
