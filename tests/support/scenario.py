"""Scenario data for the chatbot runtime at known timestamps, written as OpenMetrics.

The generator is the test oracle: it knows exactly how many requests, errors and
fallback answers each phase holds, so tests compute expected SLI values from the same
numbers instead of hard-coding them.

Timeline for `chatbot-backend` (minutes after BASE, one sample every STEP seconds):

    [  0,  60)  healthy
    [ 60,  90)  latency regression (chat P95 ~2 s, HTTP P95 > 2 s)
    [ 90, 120)  healthy
    [120, 150)  5xx burst (5 % of requests fail)
    [150, 180)  healthy
    [180, 210)  fallback surge (30 % snippet-fallback answers)
    [210, 240)  no traffic (series exist, counters flat)
    [240, ...)  series gone (process down)

scenario_runtime.py adds the rest of the runtime on the same clock (the gateway, pods,
database pools, LLM, feedback, the synthetic probe) with faults of its own.

Plus `svc-0000`..`svc-NNNN` under `namespace="platform"` with 5xx ratio (i % 10) / 1000,
sampled every minute, for `group_by: [service]` tests.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

BASE = 1795176000  # 2026-11-20T12:00:00Z
STEP = 15
END_MIN = 240  # the chatbot series stop here
LE = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, float("inf"))


def at(minutes: float) -> float:
    return BASE + minutes * 60


@dataclass(frozen=True)
class Phase:
    start_min: int
    end_min: int
    name: str
    requests: int  # per step
    errors: int  # 5xx per step
    fallbacks: int  # fallback answers per step (answers == requests)
    http_latency: tuple[int, ...]  # per-step counts for each bucket interval of LE
    chat_latency: tuple[int, ...]


HEALTHY_HTTP = (60, 60, 40, 24, 10, 4, 2, 0, 0, 0)  # 200 per step, P95 in (1, 1.5]
HEALTHY_CHAT = (20, 60, 60, 40, 16, 4, 0, 0, 0, 0)  # P95 in (1, 1.5]
SLOW_HTTP = (20, 30, 30, 40, 30, 20, 20, 10, 0, 0)  # P95 in (2.5, 5]
SLOW_CHAT = (0, 10, 30, 50, 50, 40, 20, 0, 0, 0)  # P95 in (2, 2.5]

PHASES = (
    Phase(0, 60, "healthy", 200, 0, 4, HEALTHY_HTTP, HEALTHY_CHAT),
    Phase(60, 90, "latency", 200, 0, 4, SLOW_HTTP, SLOW_CHAT),
    Phase(90, 120, "healthy", 200, 0, 4, HEALTHY_HTTP, HEALTHY_CHAT),
    Phase(120, 150, "5xx", 200, 10, 4, HEALTHY_HTTP, HEALTHY_CHAT),
    Phase(150, 180, "healthy", 200, 0, 4, HEALTHY_HTTP, HEALTHY_CHAT),
    Phase(180, 210, "fallback", 200, 0, 60, HEALTHY_HTTP, HEALTHY_CHAT),
    Phase(210, 240, "idle", 0, 0, 0, (0,) * 10, (0,) * 10),
)


def phase_at(minutes: float) -> Phase:
    starts = [p.start_min for p in PHASES]
    return PHASES[bisect.bisect_right(starts, minutes) - 1]


def expected_quantile(q: float, per_bucket: tuple[int, ...], le: tuple[float, ...] = LE) -> float:
    """Prometheus' histogram_quantile interpolation over non-cumulative bucket counts."""
    cumulative, running = [], 0
    for count in per_bucket:
        running += count
        cumulative.append(running)
    rank = q * cumulative[-1]
    index = next(i for i, c in enumerate(cumulative) if c >= rank)
    if index == len(le) - 1:
        return le[-2]
    lower = 0.0 if index == 0 else le[index - 1]
    below = 0 if index == 0 else cumulative[index - 1]
    return lower + (le[index] - lower) * (rank - below) / (cumulative[index] - below)


def _fmt_le(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


def write_openmetrics(out: TextIO, services: int = 20) -> None:
    """Write the whole scenario. Families are contiguous and each series is time-ordered."""
    base_labels = 'namespace="chatbot",service="chatbot-backend",env="prod"'
    steps = [BASE + i * STEP for i in range(END_MIN * 60 // STEP + 1)]

    def cumulative(per_step: list[float]) -> list[float]:
        total, out_values = 0.0, []
        for value in per_step:
            total += value
            out_values.append(total)
        return out_values

    # Counts credited at step i are the traffic of (t_{i-1}, t_i]: the phase of t_i - STEP.
    phases = [phase_at((t - BASE - STEP) / 60) if t > BASE else PHASES[0] for t in steps]

    def series(name: str, labels: str, per_step: list[float]) -> None:
        for t, value in zip(steps, cumulative(per_step), strict=True):
            out.write(f"{name}{{{labels}}} {value:g} {t}\n")

    first = [t == BASE for t in steps]
    out.write("# TYPE http_requests counter\n")
    ok = [0.0 if f else p.requests - p.errors for p, f in zip(phases, first, strict=True)]
    series("http_requests_total", f'{base_labels},method="POST",status="200"', ok)
    # The 5xx series only exists once the first 5xx happened, as with a real client library.
    err_start = next(i for i, p in enumerate(phases) if p.errors)
    for t, value in zip(
        steps[err_start - 1 :],
        cumulative([0.0] + [p.errors for p in phases[err_start:]]),
        strict=True,
    ):
        out.write(
            f'http_requests_total{{{base_labels},method="POST",status="500"}} {value:g} {t}\n'
        )

    for family, attr in (
        ("http_request_duration_seconds", "http_latency"),
        ("chatbot_response_latency_seconds", "chat_latency"),
    ):
        out.write(f"# TYPE {family} histogram\n")
        for index, le in enumerate(LE):
            per_step = [
                0.0 if f else float(sum(getattr(p, attr)[: index + 1]))
                for p, f in zip(phases, first, strict=True)
            ]
            series(f"{family}_bucket", f'{base_labels},le="{_fmt_le(le)}"', per_step)
        counts = [
            0.0 if f else float(sum(getattr(p, attr))) for p, f in zip(phases, first, strict=True)
        ]
        series(f"{family}_count", base_labels, counts)
        series(f"{family}_sum", base_labels, [c * 0.8 for c in counts])

    from support.scenario_runtime import write_answers, write_runtime  # it imports this

    write_answers(out)
    write_runtime(out)
    write_platform(out, services)
    write_sloth_examples(out)
    out.write("# EOF\n")


PLATFORM_STEP = 60
PLATFORM_MINUTES = 60


def platform_bad(i: int) -> int:
    return i % 10


# A rule file over `write_platform`'s series: one 5xx SLO whose services come from the data.
PLATFORM_RULE = """\
version: sentinel/v1
service: platform
labels: {namespace: platform}
interval: 45s
slos:
  - name: errors
    sli:
      ratio:
        bad: {metric: platform_requests_total, matchers: {code: "=~5.."}}
        total: {metric: platform_requests_total}
    objective: 99.5%
    window: 5m
    group_by: [service]
    alert: {for: 0s}
"""


def write_platform(out: TextIO, services: int) -> None:
    """`services` services, 1,000 requests/min each, (i % 10) of them 5xx."""
    out.write("# TYPE platform_requests counter\n")
    steps = [BASE + i * PLATFORM_STEP for i in range(PLATFORM_MINUTES + 1)]
    for i in range(services):
        labels = f'namespace="platform",service="svc-{i:04d}"'
        bad = platform_bad(i)
        for status, per in (("200", 1000 - bad), ("500", bad)):
            for n, t in enumerate(steps):
                out.write(f'platform_requests_total{{{labels},code="{status}"}} {n * per} {t}\n')


LOG_LINES_PER_STEP = 50


def log_phase_counts(phase: Phase) -> tuple[int, int, int]:
    """(answers, fallback answers, error lines) logged per step: the counters scaled to 50."""
    if not phase.requests:
        return 0, 0, 0
    fallbacks = phase.fallbacks * LOG_LINES_PER_STEP // phase.requests
    errors = phase.errors * LOG_LINES_PER_STEP // phase.requests
    return LOG_LINES_PER_STEP, fallbacks, errors


def log_lines() -> list[tuple[float, str]]:
    """The chatbot's JSON answer logs for the timeline, plus one garbled line a minute."""
    import json

    out: list[tuple[float, str]] = []
    for i in range(1, END_MIN * 60 // STEP + 1):
        t = BASE + i * STEP
        answers, fallbacks, errors = log_phase_counts(phase_at((t - BASE - STEP) / 60))
        for n in range(answers):
            mode = "snippet-fallback" if n < fallbacks else "llm-summary"
            line = {
                "timestamp": "",
                "level": "error" if n >= answers - errors else "info",
                "request_id": f"req-{i}-{n}",
                "message": "Chat message processed",
                "answer_mode": mode,
                "provider_used": "none" if n < fallbacks else "spoon-policy",
                "latency_ms": 420,
            }
            out.append((t - STEP + (n + 1) * STEP / (answers + 1), json.dumps(line)))
        if answers and i % 4 == 0:
            out.append((t - 0.01, "Traceback (most recent call last): garbled, not JSON"))
    return out


LOG_STREAM = {"app": "chatbot-backend", "namespace": "chatbot", "env": "prod"}


SLOTH_METRIC = "sloth_http_request_duration_seconds_count"


def sloth_errors(job: str, code: str, minute: int) -> int:
    """Errors per minute that change over time, so every window has its own ratio."""
    base = {"500": 3, "429": 1, "503": 2}.get(code, 0)
    return base * (1 + (minute // 30) % 3) + (minute % 7 == 0) * (job == "myservice")


def write_sloth_examples(out: TextIO) -> None:
    """Traffic for Sloth's example specs (their metric renamed to SLOTH_METRIC)."""
    steps = PLATFORM_MINUTES * 4
    for job in ("myservice", "myapp"):
        for code in ("200", "500", "429", "503"):
            total = 0
            for minute in range(steps + 1):
                per = 2000 if code == "200" else sloth_errors(job, code, minute)
                total += per if minute else 0
                out.write(
                    f'{SLOTH_METRIC}{{job="{job}",code="{code}"}} {total} {BASE + minute * 60}\n'
                )


def write_file(path: Path, services: int = 20) -> None:
    with path.open("w", encoding="utf-8") as out:
        write_openmetrics(out, services)
