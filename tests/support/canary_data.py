"""Canary and baseline traffic at known timestamps, for the gate's canary mode: OpenMetrics
for Prometheus (HTTP requests by status, the chat latency histogram) and JSON answer logs
for Loki (the fallback answer rate).

One service per scenario, all on the same clock: from BASE, one sample every STEP seconds
for MINUTES minutes. The canary takes 5 % of the traffic (10 of 200 HTTP requests/s, 1 of
20 answers/s), labelled `track="canary", version="v2"`; the baseline the rest, labelled
`track="stable", version="v1"`. Counts are deterministic (no random draws), so a test
knows the exact ratios and quantiles it should see:

    canary-same      canary = baseline (0.5 % 5xx, P95 1.46 s, 2 % fallback answers)
    canary-5xx       the canary fails 1 % of its requests (2x the baseline's 0.5 %)
    canary-slow      the canary's P95 is 2.31 s (+58 % over 1.46 s)
    canary-fallback  6 % of the canary's answers are fallbacks (3x the baseline's 2 %)
    canary-badhour   both releases have a bad hour: 5 % 5xx, P95 2.31 s, 10 % fallbacks
    canary-trickle   the canary gets 1 request and 1 answer a minute
    canary-nodata    the canary has no series at all (never started, or mislabelled)
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

BASE = 1795400000  # 2026-11-23T11:33:20Z
STEP = 15
MINUTES = 20
LE = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, float("inf"))
# Per-bucket shares (percent, non-cumulative) over LE.
FAST = (5, 15, 30, 32, 14, 3, 1, 0, 0, 0)  # P95 = 1 + 0.5 * (95 - 82) / 14 = 1.464 s
SLOW = (0, 5, 15, 30, 25, 15, 8, 2, 0, 0)  # P95 = 2 + 0.5 * (95 - 90) / 8 = 2.3125 s
SIDES = {
    "canary": {"track": "canary", "version": "v2"},
    "baseline": {"track": "stable", "version": "v1"},
}


@dataclass(frozen=True)
class Traffic:
    """One release's traffic per STEP."""

    requests: float
    error_share: float
    answers: float
    latency: tuple[int, ...]
    fallbacks_per_50: int  # of every 50 answers, this many are fallbacks


HEALTHY = Traffic(3000 * 0.95, 0.005, 300 * 0.95, FAST, 1)
CANARY = Traffic(3000 * 0.05, 0.005, 300 * 0.05, FAST, 1)
BAD_BASELINE = Traffic(3000 * 0.95, 0.05, 300 * 0.95, SLOW, 5)
BAD_CANARY = Traffic(3000 * 0.05, 0.05, 300 * 0.05, SLOW, 5)

SCENARIOS: dict[str, dict[str, Traffic | None]] = {
    "canary-same": {"canary": CANARY, "baseline": HEALTHY},
    "canary-5xx": {
        "canary": Traffic(CANARY.requests, 0.01, CANARY.answers, FAST, 1),
        "baseline": HEALTHY,
    },
    "canary-slow": {
        "canary": Traffic(CANARY.requests, 0.005, CANARY.answers, SLOW, 1),
        "baseline": HEALTHY,
    },
    "canary-fallback": {
        "canary": Traffic(CANARY.requests, 0.005, CANARY.answers, FAST, 3),
        "baseline": HEALTHY,
    },
    "canary-badhour": {"canary": BAD_CANARY, "baseline": BAD_BASELINE},
    "canary-trickle": {"canary": Traffic(0.25, 0.005, 0.25, FAST, 1), "baseline": HEALTHY},
    "canary-nodata": {"canary": None, "baseline": HEALTHY},
}


def at(minutes: float) -> float:
    return BASE + minutes * 60


def _steps() -> list[int]:
    return [BASE + i * STEP for i in range(MINUTES * 60 // STEP + 1)]


def _labels(service: str, side: str, **more: str) -> str:
    pairs = {"service": service, "namespace": "canarytest", **SIDES[side], **more}
    return ",".join(f'{k}="{v}"' for k, v in pairs.items())


def _series(out: TextIO, name: str, labels: str, per_step: float) -> None:
    for i, t in enumerate(_steps()):
        out.write(f"{name}{{{labels}}} {i * per_step:.6g} {t}\n")


def _each() -> list[tuple[str, str, Traffic]]:
    return [
        (service, side, traffic)
        for service, sides in SCENARIOS.items()
        for side, traffic in sides.items()
        if traffic is not None
    ]


def write_openmetrics(out: TextIO) -> None:
    out.write("# TYPE http_requests counter\n")
    for service, side, t in _each():
        bad = t.requests * t.error_share
        _series(out, "http_requests_total", _labels(service, side, status="200"), t.requests - bad)
        _series(out, "http_requests_total", _labels(service, side, status="500"), bad)
    out.write("# TYPE chatbot_response_latency_seconds histogram\n")
    family = "chatbot_response_latency_seconds"
    for service, side, t in _each():
        running = 0.0
        for le, share in zip(LE, t.latency, strict=True):
            running += t.answers * share / 100
            bound = "+Inf" if le == float("inf") else repr(le)
            _series(out, f"{family}_bucket", _labels(service, side, le=bound), running)
        _series(out, f"{family}_count", _labels(service, side), t.answers)
        _series(out, f"{family}_sum", _labels(service, side), t.answers * 0.9)
    out.write("# EOF\n")


def write_file(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        write_openmetrics(out)


def log_streams() -> list[tuple[dict[str, str], list[tuple[float, str]]]]:
    """Per service and side: the stream labels and its JSON answer lines."""
    out = []
    for service, side, t in _each():
        stream = {"app": service, "namespace": "canarytest", **SIDES[side]}
        lines: list[tuple[float, str]] = []
        written = 0
        carry = 0.0
        for t_end in _steps()[1:]:
            carry += t.answers
            n, carry = int(carry), carry - int(carry)
            for k in range(n):
                mode = "snippet-fallback" if written % 50 < t.fallbacks_per_50 else "llm-summary"
                record = {"level": "info", "message": "Chat message processed", "answer_mode": mode}
                lines.append((t_end - STEP + (k + 1) * STEP / (n + 1), json.dumps(record)))
                written += 1
        out.append((stream, lines))
    return out


def rule_file(service: str, extra_slo: str = "") -> str:
    """The chatbot's gate SLOs for one scenario service, with the canary defaults."""
    return textwrap.dedent(
        f"""\
        version: sentinel/v1
        service: {service}
        labels: {{namespace: canarytest, service: {service}}}
        canary:
          canary: {{track: canary}}
          baseline: {{track: stable}}
        slos:
          - name: chat-latency-p95
            sli:
              latency: {{histogram: chatbot_response_latency_seconds, quantile: 0.95}}
            threshold: 1.5s
            window: 5m
          - name: http-5xx-ratio
            sli:
              ratio:
                bad: {{metric: http_requests_total, matchers: {{status: "=~5.."}}}}
                total: {{metric: http_requests_total}}
            objective: 99.5%
            window: 5m
          - name: fallback-answer-rate
            sli:
              log_ratio:
                selector: '{{app="{service}", namespace="canarytest"}}'
                bad: 'answer_mode="snippet-fallback"'
                total: 'answer_mode=~"llm-summary|snippet-fallback"'
            objective: 95%
            window: 10m
            canary: {{detect: 3}}   # the regression to catch: 3x the fallback rate
        """
    ) + textwrap.indent(textwrap.dedent(extra_slo), "  ")
