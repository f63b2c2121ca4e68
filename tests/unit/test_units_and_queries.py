"""Unit parsing and query rendering, including injection-proof escaping."""

from __future__ import annotations

import pytest

from sentinel.query.promql import quote, render_selector, slo_query
from sentinel.rules.loader import parse_matcher
from sentinel.rules.model import SLO, Matcher, MatchOp, RatioSLI, Selector
from sentinel.timeparse import parse_time
from sentinel.units import format_duration, parse_duration, parse_percent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25), (30, 30), ("30d", 2592000)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "-1s", True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r"expected a duration|must be finite"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "5m"), (5400, "1h30m"), (754, "12m34s"), (1.5, "1500ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_parse_percent() -> None:
    assert parse_percent("99.5%") == pytest.approx(0.995)
    assert parse_percent(95) == pytest.approx(0.95)
    for bad in ("100%", "0", "abc", 120):
        with pytest.raises(ValueError):
            parse_percent(bad)


def test_matcher_operators() -> None:
    assert parse_matcher("status", "=~5..") == Matcher("status", MatchOp.RE, "5..")
    assert parse_matcher("mode", "!=x") == Matcher("mode", MatchOp.NE, "x")
    assert parse_matcher("mode", "llm-summary") == Matcher("mode", MatchOp.EQ, "llm-summary")


def test_label_values_cannot_inject_query_syntax() -> None:
    hostile = 'foo"}or vector(1)'
    rendered = render_selector(Selector("m"), (), [Matcher("service", MatchOp.EQ, hostile)])
    assert rendered == 'm{service="foo\\"}or vector(1)"}'
    assert quote('a\\"b\n') == '"a\\\\\\"b\\n"'


def test_request_matchers_join_the_rules_own_and_never_replace_them() -> None:
    slo = SLO(
        service="s",
        name="r",
        window=300,
        threshold=0.01,
        sli=RatioSLI(Selector("req", (Matcher("code", MatchOp.RE, "5.."),)), Selector("req")),
        labels=(("env", "prod"), ("namespace", "chatbot")),
    )
    extra = [Matcher("code", MatchOp.EQ, "200"), Matcher("env", MatchOp.EQ, "canary")]
    query = slo_query(slo, 754, extra)
    # Both stay: PromQL ANDs them, so the answer is empty, never the other traffic.
    assert 'req{env="prod", namespace="chatbot", code=~"5..", code="200", env="canary"}' in query
    assert 'req{env="prod", namespace="chatbot", code="200", env="canary"}[12m34s]' in query


def test_a_request_matcher_equal_to_the_rules_is_rendered_once() -> None:
    rendered = render_selector(
        Selector("m"), (("env", "prod"),), [Matcher("env", MatchOp.EQ, "prod")]
    )
    assert rendered == 'm{env="prod"}'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1795183500", 1795183500.0),
        ("1795183500.25", 1795183500.25),
        ("2026-11-20T14:05:00Z", 1795183500.0),
        ("2026-11-20T15:05:00+01:00", 1795183500.0),
        ("2026-11-20T14:05:00", 1795183500.0),
    ],
)
def test_parse_time_accepts_unix_seconds_and_rfc3339(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "nan",
        "inf",
        "-inf",
        "-1e20",
        "1e9",
        "-9223372036854775808",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "yesterday",
        "",
    ],
)
def test_parse_time_refuses_what_cannot_be_formatted_again(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected RFC 3339|between 1970-01-01 and 9999-12-31"):
        parse_time(text)
