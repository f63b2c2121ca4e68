"""The rule file's `canary:` blocks (file defaults, per-SLO settings) and `gate.canary` in
the config: what loads into the model, and every mistake as a located problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.errors import ConfigError
from sentinel.rules.loader import load_rules_lenient
from sentinel.rules.model import CanaryNoData, CanaryTolerance

HEAD = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot}
canary:
  canary: {track: canary}
  baseline: {track: "=~stable|primary"}
  min_events: {canary: 500, baseline: 2000}
slos:
"""
LATENCY = """\
  - name: p95
    sli: {latency: {histogram: h_seconds}}
    threshold: 1.5s
"""
RATIO = """\
  - name: errors
    sli: {ratio: {bad: {metric: r_total, matchers: {code: "=~5.."}}, total: {metric: r_total}}}
    objective: 99.5%
"""


def load(write_config: Callable[..., Path], text: str) -> tuple[dict[str, object], list[str]]:
    config = load_config(write_config("http://127.0.0.1:9", {"r.yaml": text}))
    rules, problems = load_rules_lenient(config)
    return {slo.name: slo for slo in rules.slos}, [str(p) for p in problems]


def test_the_file_defaults_and_an_slos_own_settings_load_into_its_policy(
    write_config: Callable[..., Path],
) -> None:
    text = (
        HEAD
        + LATENCY
        + RATIO
        + (
            "    canary: {critical: false, weight: 2, detect: 3, no_data: remove,"
            " tolerance: {relative: 10%, absolute: '0.2%'}}\n"
        )
    )
    slos, problems = load(write_config, text)
    assert problems == []
    p95, errors = slos["p95"].canary, slos["errors"].canary  # type: ignore[attr-defined]
    assert [(m.label, m.op.value, m.value) for m in p95.canary] == [("track", "=", "canary")]
    assert [(m.label, m.op.value, m.value) for m in p95.baseline] == [
        ("track", "=~", "stable|primary")
    ]
    assert (p95.min_canary_events, p95.min_baseline_events) == (500, 2000)
    assert (p95.critical, p95.tolerance, p95.no_data) == (True, None, CanaryNoData.FAIL)
    assert (errors.critical, errors.weight, errors.detect) == (False, 2, 3)
    assert errors.tolerance == CanaryTolerance(0.1, 0.002)
    assert errors.no_data is CanaryNoData.REMOVE


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            HEAD.replace("{track: canary}", "{bad-label: x}") + LATENCY,
            "r.yaml:5: canary.canary.bad-label: not a valid label name",
        ),
        (
            HEAD.replace('"=~stable|primary"', "canary") + LATENCY,
            "canary.baseline: canary and baseline select the same series",
        ),
        (
            HEAD + "  - name: raw\n    sli: {promql: {query: up}}\n    threshold: 1\n"
            "    canary: {weight: 2}\n",
            "r.yaml:12: slos[0].canary: the canary comparison needs a latency, ratio or log_ratio SLI",
        ),
        (
            HEAD + LATENCY + "    canary: {tolerance: {absolute: fast}}\n",
            "slos[0].canary.tolerance.absolute: ",
        ),
        (
            HEAD + RATIO + "    canary: {tolerance: {absolute: 2}}\n",
            "slos[0].canary.tolerance.absolute: a ratio tolerance is a share from 0 to 1",
        ),
        (HEAD + LATENCY + "    canary: {detect: 1}\n", "slos[0].canary.detect: "),
        (HEAD + LATENCY + "    canary: {weight: 0}\n", "slos[0].canary.weight: "),
        (HEAD + LATENCY + "    canary: {critcal: false}\n", "slos[0].canary.critcal: "),
        (HEAD + LATENCY + "    canary: {no_data: ignore}\n", "slos[0].canary.no_data: "),
    ],
    ids=[
        "label-name",
        "same-sides",
        "raw-query",
        "latency-absolute",
        "ratio-absolute",
        "detect",
        "weight",
        "misspelt-key",
        "no-data-policy",
    ],
)
def test_canary_mistakes_are_located_problems(
    write_config: Callable[..., Path], text: str, problem: str
) -> None:
    _, problems = load(write_config, text)
    assert any(problem in p for p in problems), problems


def test_a_raw_query_slo_without_canary_settings_is_simply_not_compared(
    write_config: Callable[..., Path],
) -> None:
    text = HEAD + "  - name: raw\n    sli: {promql: {query: up}}\n    threshold: 1\n"
    slos, problems = load(write_config, text)
    assert problems == []
    assert slos["raw"].canary.compare is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("gate", "problem"),
    [
        ("{canary: {labels: [since]}}", "gate.canary.labels[0]: 'since' is a gate parameter"),
        ("{canary: {alpha: 0.7}}", "gate.canary.alpha"),
        ("{canary: {pass_score: 50, marginal_score: 80}}", "marginal_score must not exceed"),
        ("{canary: {alpha: 0.001, early_alpha: 0.01}}", "early_alpha must not exceed alpha"),
    ],
)
def test_gate_canary_settings_are_checked(
    write_config: Callable[..., Path], gate: str, problem: str
) -> None:
    path = write_config("http://127.0.0.1:9", {"r.yaml": HEAD + LATENCY}, f"gate: {gate}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert problem in str(info.value)
