"""Judging a synthetic probe's answer (sentinel/evaluate/probe_check.py): the failing
assertion is named with its field and value; a run becomes an SLO result the alert and
gate paths understand."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.config import ProbeConfig
from sentinel.evaluate.probe_check import (
    ProbeRun,
    check_answer,
    gate_result,
    judge,
    probe_result,
    probe_slo,
)
from sentinel.evaluate.slo import Status
from sentinel.sources.exchange import Exchange

URL = "http://chat.local/api/chat"
EXPECT = {
    "status": 200,
    "max_latency": "5s",
    "json": {
        "answer_mode": {"equals": "llm-summary"},
        "provider_used": {"in": ["spoon-policy", "spoon-ops"]},
        "answer": {"non_empty": True},
    },
}


def probe(**overrides: Any) -> ProbeConfig:
    return ProbeConfig.model_validate(
        {"service": "chatbot", "url": URL, "expect": EXPECT, **overrides}
    )


def answer(body: bytes | str, status: int = 200, elapsed: float = 0.5) -> Exchange:
    raw = body.encode() if isinstance(body, str) else body
    return Exchange("POST", URL, status, raw, elapsed)


HEALTHY = '{"answer": "Có.", "answer_mode": "llm-summary", "provider_used": "spoon-ops"}'


@pytest.mark.parametrize(
    ("body", "failures"),
    [
        (HEALTHY, []),
        (
            '{"answer": "x", "answer_mode": "snippet-fallback", "provider_used": "spoon-policy"}',
            ['answer_mode: expected "llm-summary", got "snippet-fallback"'],
        ),
        (
            '{"answer": "x", "answer_mode": "llm-summary", "provider_used": "openai"}',
            ['provider_used: expected one of ["spoon-policy", "spoon-ops"], got "openai"'],
        ),
        (
            '{"answer": "  ", "answer_mode": "llm-summary", "provider_used": "spoon-ops"}',
            ['answer: expected non-empty, got "  "'],
        ),
        (
            '{"answer": "x", "provider_used": "spoon-ops"}',
            ['answer_mode: expected "llm-summary", got no such field'],
        ),
        (
            "<html>502 Bad Gateway</html>",
            ['body: expected JSON, got "<html>502 Bad Gateway</html>"'],
        ),
        ("", ["body: expected JSON, got an empty body"]),
    ],
    ids=["healthy", "fallback", "other provider", "blank answer", "missing field", "html", "empty"],
)
def test_each_failing_assertion_names_its_field_and_the_value_seen(
    body: str, failures: list[str]
) -> None:
    assert check_answer(probe().expect, answer(body)) == failures


def test_a_wrong_status_is_the_only_failure_named_with_the_start_of_the_body() -> None:
    failures = check_answer(probe().expect, answer('{"error": "provider chain exhausted"}', 500))
    assert failures == [
        'status: expected 200, got 500 (body: {"error": "provider chain exhausted"})'
    ]


def test_a_request_that_got_no_answer_fails_with_the_reason_and_the_request() -> None:
    stalled = Exchange("POST", URL, None, elapsed=5.0, error="no answer within 5s")
    assert check_answer(probe().expect, stalled) == [f"POST {URL}: no answer within 5s"]


def test_a_slow_answer_fails_the_latency_assertion_and_the_fields_are_still_checked() -> None:
    failures = check_answer(probe().expect, answer(HEALTHY.replace("spoon-ops", "x"), elapsed=7.25))
    assert failures == [
        "latency: expected at most 5s, got 7.25s",
        'provider_used: expected one of ["spoon-policy", "spoon-ops"], got "x"',
    ]


def test_nested_paths_list_indexes_and_json_types_are_compared_as_json() -> None:
    config = probe(
        expect={
            "json": {
                "metadata.answer_mode": {"equals": "llm-summary"},
                "choices.0.score": {"equals": 1},
                "cached": {"equals": False},
                "answer": {"matches": "^Có"},
            }
        }
    )
    good = '{"metadata": {"answer_mode": "llm-summary"}, "choices": [{"score": 1.0}], '
    assert check_answer(config.expect, answer(good + '"cached": false, "answer": "Có."}')) == []
    # true is not 0/1 in JSON, and a missing list element is a missing field.
    bad = '{"metadata": {}, "choices": [], "cached": 0, "answer": "Không"}'
    assert check_answer(config.expect, answer(bad)) == [
        'metadata.answer_mode: expected "llm-summary", got no such field',
        "choices.0.score: expected 1, got no such field",
        "cached: expected false, got 0",
        'answer: expected to match "^Có", got "Không"',
    ]


def test_long_values_are_cut_and_remembered_secrets_redacted_in_failures() -> None:
    from sentinel.redact import remember_secrets

    remember_secrets(["sk-live-probe-secret"])
    body = '{"answer": "x", "answer_mode": "' + "y" * 300 + '", "provider_used": "spoon-ops"}'
    (failure,) = check_answer(probe().expect, answer(body))
    assert len(failure) < 140 and failure.endswith("…")
    (leak,) = check_answer(probe().expect, answer('{"error": "sk-live-probe-secret"}', 401))
    assert "sk-live-probe-secret" not in leak and "<redacted>" in leak


def test_a_failing_readiness_check_fails_the_run_after_the_chat_failures() -> None:
    ready = Exchange("GET", "http://chat.local/health/ready", 503, b'{"status": "unhealthy"}')
    run = judge("chat", probe(), answer(HEALTHY), ready, at=100.0, duration=0.6)
    assert not run.success
    assert run.reason == (
        'ready: GET http://chat.local/health/ready: expected 200, got 503 (body: {"status": '
        '"unhealthy"})'
    )


def test_a_run_becomes_an_slo_result_breach_with_the_failing_assertion_as_reason() -> None:
    config = probe()
    failed = ProbeRun("chat", 100.0, 0.4, False, ('answer_mode: expected "a", got "b"',), 200)
    result = probe_result("chat", config, failed, at=130.0)
    assert (result.service, result.slo, result.status, result.value) == (
        "chatbot",
        "probe-chat",
        Status.BREACH,
        0.0,
    )
    assert result.explanation() == 'answer_mode: expected "a", got "b"'
    assert result.evaluated_at == 100.0 and result.to_json()["query"] == f"POST {URL}"
    passed = probe_result("chat", config, ProbeRun("chat", 100.0, 0.4, True), at=130.0)
    assert (passed.status, passed.value, passed.explanation()) == (Status.OK, 1.0, "passed in 0.4s")
    never = probe_result("chat", config, None, at=130.0)
    assert (never.status, never.reason) == (Status.NO_DATA, "the probe has not run yet")


def test_the_gate_judges_only_a_run_that_started_after_the_deploy() -> None:
    config = probe(interval="30s")
    run = ProbeRun("chat", 100.0, 0.4, False, ("status: expected 200, got 500",))
    before = gate_result("chat", config, run, since=150.0, now=160.0)
    assert (before.status, before.reason) == (
        Status.NO_DATA,
        "no run since deploy yet (runs every 30s)",
    )
    after = gate_result("chat", config, run, since=90.0, now=160.0)
    assert (after.status, after.reason) == (Status.BREACH, "status: expected 200, got 500")
    assert gate_result("chat", config, None, None, 160.0).status is Status.NO_DATA


def test_the_probe_slo_carries_routing_severity_and_for_from_the_probe_config() -> None:
    slo = probe_slo("chat", probe(severity="ticket", notify=["slack"], **{"for": "2m"}))
    assert (slo.key, slo.severity.value, slo.notify, slo.alert.for_) == (
        "chatbot/probe-chat",
        "ticket",
        ("slack",),
        120.0,
    )
    assert 'sentinel_probe_success{probe="chat"}' in slo.sli.query  # type: ignore[union-attr]
