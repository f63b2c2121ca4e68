"""The chatbot runtime beyond scenario.py's HTTP timeline, for the shipped rules of
rules/gateway.yaml, rules/backend-platform.yaml and rules/backend-llm.yaml: the gateway in
front of the backend, the pods' `up`, container CPU and memory against their limits, the
database pools, the LLM (OpenTelemetry GenAI histograms; answers by provider and finish
reason), user feedback, and Sentinel's synthetic probe.

Same clock and steps as scenario.py, and like it the test oracle: tests compute expected
values from these functions. Faults have their own timeline, each on metric families of
its own, so a fault's SLOs breach while the others' data stays healthy:

    [ 40,  55)  tokens       prompt bloat: 12,000 input tokens per completion (else 1,500)
    [ 60,  90)  llm-slow     TTFT and TPOT regress (with scenario.py's latency phase)
    [ 95, 100)  node-down    backend pod b and both gateway pods fail their scrapes; the
                             gateway serves nothing
    [100, 110)  failover     half of the LLM answers come from spoon-ops (gpt-4o-mini)
    [110, 120)  refusal      the guardrail blocks 40 of 200 answers (else 2)
    [120, 150)  (5xx phase)  the gateway passes the backend's 5xx on as 502, plus two 504
    [150, 160)  4xx          60 more requests a step, rate-limited by the gateway (429)
    [150, 180)  saturation   CPU and memory of every pod at 90 % of the limits (else 55 %)
    [160, 170)  db           the pools are exhausted: 0 free, 4 waiting per pod
    [180, 210)  thumbs-down  6 of 10 ratings are thumbs-down (else 1 of 10)
    [210, 240)  (idle)       no traffic; gauges and `up` still report
    [240, ...)  the runtime's series are gone; the probe fails until minute 260
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from support.scenario import BASE, END_MIN, HEALTHY_HTTP, LE, SLOW_HTTP, STEP, phase_at

FAULTS = (
    (40, 55, "tokens"),
    (60, 90, "llm-slow"),
    (95, 100, "node-down"),
    (100, 110, "failover"),
    (110, 120, "refusal"),
    (150, 160, "4xx"),
    (150, 180, "saturation"),
    (160, 170, "db"),
    (180, 210, "thumbs-down"),
)
PROBE_END_MIN = 260

NS = 'namespace="chatbot"'
BACKEND = f'{NS},service="chatbot-backend",env="prod"'
GATEWAY = f'{NS},service="chatbot-gateway",env="prod"'
PODS = {
    "chatbot-backend": ("chatbot-backend-7d9f8-a", "chatbot-backend-7d9f8-b"),
    "chatbot-gateway": ("chatbot-gateway-5c6b4-a", "chatbot-gateway-5c6b4-b"),
}
# seed 003's limits for the backend (500m, 1Gi); a smaller gateway.
LIMITS = {"chatbot-backend": (0.5, 1024**3), "chatbot-gateway": (0.25, 256 * 1024**2)}
HEALTHY_UTIL, SATURATED_UTIL = 0.55, 0.9

# OpenTelemetry's recommended bucket boundaries for the two latency histograms.
TTFT_LE = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
TTFT_LE += (7.5, 10.0, math.inf)
TPOT_LE = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, math.inf)
# Percent of completions per bucket interval (index into the LE tuple).
HEALTHY_TTFT = {8: 5, 9: 45, 10: 45, 11: 5}  # P95 ~0.75 s
SLOW_TTFT = {10: 10, 12: 50, 13: 40}  # P95 in (2.5, 5] s
HEALTHY_TPOT = {1: 30, 2: 60, 3: 10}  # P95 ~0.06 s
SLOW_TPOT = {5: 30, 6: 50, 7: 20}  # P95 in (0.2, 0.3] s

# (model, provider) of each answering provider of the runtime's chain.
MODELS = {
    "spoon-policy": ("gemini-2.0-flash", "gcp.gemini"),
    "spoon-ops": ("gpt-4o-mini", "openai"),
}
# USD per token, as in rules/backend-llm.yaml's cost-per-answer.
PRICES = {
    ("gemini-2.0-flash", "input"): 0.10e-6,
    ("gemini-2.0-flash", "output"): 0.40e-6,
    ("gpt-4o-mini", "input"): 0.15e-6,
    ("gpt-4o-mini", "output"): 0.60e-6,
}
OUTPUT_TOKENS = 300


def faults_at(minute: float) -> frozenset[str]:
    return frozenset(name for start, end, name in FAULTS if start <= minute < end)


@dataclass(frozen=True)
class Answers:
    """The answers of one step: LLM answers by provider and finish reason, fallbacks."""

    policy: int  # spoon-policy, finish_reason stop
    ops: int  # spoon-ops (failover), finish_reason stop
    refused: int  # spoon-policy, finish_reason content_filter (guardrail block)
    fallbacks: int  # snippet-fallback: no LLM answer

    @property
    def total(self) -> int:
        return self.policy + self.ops + self.refused + self.fallbacks

    def completions(self, provider: str) -> int:
        return self.ops if provider == "spoon-ops" else self.policy + self.refused


def answers_at(minute: float) -> Answers:
    phase, faults = phase_at(minute), faults_at(minute)
    llm = phase.requests - phase.fallbacks
    if not llm:
        return Answers(0, 0, 0, phase.fallbacks)
    ops = llm // 2 if "failover" in faults else 4
    refused = 40 if "refusal" in faults else 2
    return Answers(llm - ops - refused, ops, refused, phase.fallbacks)


def input_tokens_at(minute: float) -> int:
    return 12_000 if "tokens" in faults_at(minute) else 1_500


def spread(n: int, weights: dict[int, int], buckets: int) -> tuple[int, ...]:
    """n observations over bucket intervals by percent weights; the rounding remainder
    goes to the first heaviest interval."""
    counts = [0] * buckets
    for index, weight in weights.items():
        counts[index] = n * weight // 100
    counts[max(weights, key=lambda i: (weights[i], -i))] += n - sum(counts)
    return tuple(counts)


def latency_buckets(minute: float, provider: str, kind: str) -> tuple[int, ...]:
    """Per-step observations per bucket interval of TTFT or TPOT for one provider."""
    slow = "llm-slow" in faults_at(minute)
    if kind == "ttft":
        weights, le = (SLOW_TTFT if slow else HEALTHY_TTFT), TTFT_LE
    else:
        weights, le = (SLOW_TPOT if slow else HEALTHY_TPOT), TPOT_LE
    return spread(answers_at(minute).completions(provider), weights, len(le))


def feedback_at(minute: float) -> tuple[int, int]:
    """(thumbs up, thumbs down) ratings per step."""
    if not phase_at(minute).requests:
        return 0, 0
    return (4, 6) if "thumbs-down" in faults_at(minute) else (9, 1)


@dataclass(frozen=True)
class GatewayStep:
    ok: int
    limited: int  # 429
    bad_gateway: int  # 502: the backend's 5xx passed on
    timeouts: int  # 504
    latency: tuple[int, ...]  # per bucket interval of scenario.LE

    @property
    def total(self) -> int:
        return self.ok + self.limited + self.bad_gateway + self.timeouts


def gateway_at(minute: float) -> GatewayStep:
    phase, faults = phase_at(minute), faults_at(minute)
    if "node-down" in faults or not phase.requests:
        return GatewayStep(0, 0, 0, 0, (0,) * len(LE))
    limited = 60 if "4xx" in faults else 0
    timeouts = 2 if phase.errors else 0
    latency = list(SLOW_HTTP if phase.name == "latency" else HEALTHY_HTTP)
    latency[0] += limited  # a 429 is answered at once
    ok = phase.requests - phase.errors - timeouts
    return GatewayStep(ok, limited, phase.errors, timeouts, tuple(latency))


def utilisation_at(minute: float) -> float:
    return SATURATED_UTIL if "saturation" in faults_at(minute) else HEALTHY_UTIL


def up_at(minute: float, service: str, pod_index: int) -> int:
    down = "node-down" in faults_at(minute)
    return 0 if down and (service == "chatbot-gateway" or pod_index == 1) else 1


def probe_success_at(minute: float, step: int) -> int:
    if minute >= END_MIN or "node-down" in faults_at(minute):
        return 0
    if phase_at(minute).name == "fallback":
        return 0 if step % 10 < 3 else 1  # 30 % of the answers fall back
    return 1


def credited(at_min: float, window_min: float, per_step: Callable[[float], float]) -> float:
    """Sum of a counter's per-step increments over (at - window, at]: what `increase`
    answers when samples sit on both ends of the window (the oracle for tests)."""
    total = 0.0
    for i in range(1, END_MIN * 60 // STEP + 1):
        t = i * STEP / 60
        if at_min - window_min < t <= at_min:
            total += per_step(t - STEP / 60)
    return total


# --- writing ---------------------------------------------------------------------------


class _Writer:
    """OpenMetrics lines for one family at a time; each series time-ordered."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.steps = [BASE + i * STEP for i in range(END_MIN * 60 // STEP + 1)]

    def family(self, name: str, kind: str) -> None:
        self.out.write(f"# TYPE {name} {kind}\n")

    def counter(
        self,
        name: str,
        labels: str,
        per_step: Callable[[float], float],
        lazy: bool = False,
        gateway: bool = False,
    ) -> None:
        """Cumulative values; the increment credited at step t is the traffic of
        (t - STEP, t]. With `lazy` the series starts one step before its first increment,
        as a client library creates it; `gateway` series have no samples while the
        gateway's scrapes fail."""
        increments = [0.0] + [per_step((t - BASE - STEP) / 60) for t in self.steps[1:]]
        start = 0
        if lazy:
            first = next((i for i, v in enumerate(increments) if v), None)
            if first is None:
                return
            start = max(first - 1, 0)
        total = 0.0
        for i, t in enumerate(self.steps):
            total += increments[i]
            if i >= start and not (gateway and _gateway_down(t)):
                self.out.write(f"{name}{{{labels}}} {_num(total)} {t}\n")

    def gauge(self, name: str, labels: str, value: Callable[[float, int], float | None]) -> None:
        for i, t in enumerate(self.steps):
            v = value((t - BASE) / 60, i)
            if v is not None:
                self.out.write(f"{name}{{{labels}}} {_num(v)} {t}\n")


def _num(value: float) -> str:
    """Every digit (`:g` keeps six: a token counter's 282,240,000 would lose its tail)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _gateway_down(t: float) -> bool:
    return "node-down" in faults_at((t - BASE) / 60)


def _le(value: float) -> str:
    return "+Inf" if value == math.inf else repr(value)


def write_answers(out: TextIO) -> None:
    """chatbot_answers_total by answer_mode, provider_used and finish_reason."""
    w = _Writer(out)
    w.family("chatbot_answers", "counter")
    series: Iterable[tuple[str, Callable[[Answers], int]]] = (
        ('answer_mode="llm-summary",provider_used="spoon-policy",finish_reason="stop"', lambda a: a.policy),
        ('answer_mode="llm-summary",provider_used="spoon-ops",finish_reason="stop"', lambda a: a.ops),
        ('answer_mode="llm-summary",provider_used="spoon-policy",finish_reason="content_filter"', lambda a: a.refused),
        ('answer_mode="snippet-fallback",provider_used="none",finish_reason="error"', lambda a: a.fallbacks),
    )  # fmt: skip
    for labels, count in series:
        w.counter(
            "chatbot_answers_total", f"{BACKEND},{labels}", lambda m, c=count: c(answers_at(m))
        )


def write_runtime(out: TextIO) -> None:
    """Every family of this module except chatbot_answers (written with the backend's)."""
    w = _Writer(out)
    _write_genai(w)
    _write_feedback(w)
    _write_gateway(w)
    _write_pods(w)
    _write_probe(w)


def _genai_labels(provider: str) -> str:
    model, system = MODELS[provider]
    return (
        f'{BACKEND},gen_ai_operation_name="chat",gen_ai_provider_name="{system}",'
        f'gen_ai_request_model="{model}"'
    )


def _write_genai(w: _Writer) -> None:
    for kind, family, le in (
        ("ttft", "gen_ai_server_time_to_first_token_seconds", TTFT_LE),
        ("tpot", "gen_ai_server_time_per_output_token_seconds", TPOT_LE),
    ):
        w.family(family, "histogram")
        for provider in MODELS:
            labels = _genai_labels(provider)
            for index, bound in enumerate(le):

                def cumulative(m: float, p: str = provider, k: str = kind, i: int = index) -> int:
                    return sum(latency_buckets(m, p, k)[: i + 1])

                w.counter(f"{family}_bucket", f'{labels},le="{_le(bound)}"', cumulative)
            count = lambda m, p=provider: answers_at(m).completions(p)  # noqa: E731
            w.counter(f"{family}_count", labels, count)
            w.counter(f"{family}_sum", labels, lambda m, c=count: c(m) * 0.5)
    # Token usage: only the +Inf bucket (the SLIs read _sum and _count).
    w.family("gen_ai_client_token_usage", "histogram")
    for provider in MODELS:
        for token_type in ("input", "output"):
            labels = f'{_genai_labels(provider)},gen_ai_token_type="{token_type}"'
            count = lambda m, p=provider: answers_at(m).completions(p)  # noqa: E731
            w.counter("gen_ai_client_token_usage_bucket", f'{labels},le="+Inf"', count)
            w.counter("gen_ai_client_token_usage_count", labels, count)
            per = input_tokens_at if token_type == "input" else lambda m: OUTPUT_TOKENS
            w.counter(
                "gen_ai_client_token_usage_sum", labels, lambda m, c=count, t=per: c(m) * t(m)
            )


def _write_feedback(w: _Writer) -> None:
    w.family("chatbot_feedback", "counter")
    for index, rating in enumerate(("thumbs_up", "thumbs_down")):
        w.counter(
            "chatbot_feedback_total",
            f'{BACKEND},rating="{rating}"',
            lambda m, i=index: feedback_at(m)[i],
        )


def _write_gateway(w: _Writer) -> None:
    w.family("http_requests", "counter")
    for status, attr in (("200", "ok"), ("429", "limited"), ("502", "bad_gateway"), ("504", "timeouts")):  # fmt: skip
        w.counter(
            "http_requests_total",
            f'{GATEWAY},method="POST",status="{status}"',
            lambda m, a=attr: getattr(gateway_at(m), a),
            lazy=status != "200",
            gateway=True,
        )
    family = "http_request_duration_seconds"
    w.family(family, "histogram")
    for index, bound in enumerate(LE):
        w.counter(
            f"{family}_bucket",
            f'{GATEWAY},le="{_le(bound)}"',
            lambda m, i=index: sum(gateway_at(m).latency[: i + 1]),
            gateway=True,
        )
    w.counter(f"{family}_count", GATEWAY, lambda m: gateway_at(m).total, gateway=True)
    w.counter(f"{family}_sum", GATEWAY, lambda m: gateway_at(m).total * 0.4, gateway=True)


def _write_pods(w: _Writer) -> None:
    w.family("up", "gauge")
    for service, pods in PODS.items():
        for index, pod in enumerate(pods):
            labels = (
                f'job="{service}",instance="10.0.{index}.{len(service)}:8000",{NS},'
                f'service="{service}",env="prod",pod="{pod}"'
            )
            w.gauge("up", labels, lambda m, _i, s=service, p=index: up_at(m, s, p))
    w.family("container_cpu_usage_seconds", "counter")
    for service, pods in PODS.items():
        cores = LIMITS[service][0]
        for pod in pods:
            labels = f'{NS},pod="{pod}",container="{service}"'
            w.counter(
                "container_cpu_usage_seconds_total",
                labels,
                lambda m, c=cores: c * utilisation_at(m) * STEP,
            )
    w.family("container_memory_working_set_bytes", "gauge")
    for service, pods in PODS.items():
        limit = LIMITS[service][1]
        for pod in pods:
            labels = f'{NS},pod="{pod}",container="{service}"'
            w.gauge(
                "container_memory_working_set_bytes",
                labels,
                lambda m, _i, b=limit: round(b * utilisation_at(m)),
            )
    w.family("kube_pod_container_resource_limits", "gauge")
    for service, pods in PODS.items():
        cores, memory = LIMITS[service]
        for pod in pods:
            for resource, unit, value in (("cpu", "core", cores), ("memory", "byte", memory)):
                labels = (
                    f'{NS},pod="{pod}",container="{service}",node="node-1",'
                    f'resource="{resource}",unit="{unit}"'
                )
                w.gauge("kube_pod_container_resource_limits", labels, lambda m, _i, v=value: v)
    _write_db(w)


def _write_db(w: _Writer) -> None:
    for family, healthy, exhausted in (
        ("chatbot_db_pool_available_connections", 15, 0),
        ("chatbot_db_pool_waiting_requests", 0, 4),
    ):
        w.family(family, "gauge")
        for pod in PODS["chatbot-backend"]:

            def value(m: float, _i: int, h: int = healthy, e: int = exhausted) -> int:
                return e if "db" in faults_at(m) else h

            w.gauge(family, f'{BACKEND},pod="{pod}"', value)


def _write_probe(w: _Writer) -> None:
    """Sentinel's own metric, scraped from its /metrics: it outlives the runtime."""
    w.family("sentinel_probe_success", "gauge")
    steps = [BASE + i * STEP for i in range(PROBE_END_MIN * 60 // STEP + 1)]
    for i, t in enumerate(steps):
        value = probe_success_at((t - BASE) / 60, i)
        w.out.write(f'sentinel_probe_success{{job="sentinel",probe="chat"}} {value} {t}\n')
