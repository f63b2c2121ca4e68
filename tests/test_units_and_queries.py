"""Unit parsing and query rendering, including injection-proof escaping."""

from __future__ import annotations

import pytest

from sentinel.loader import parse_matcher
from sentinel.model import SLO, Matcher, MatchOp, RatioSLI, Selector
from sentinel.promql import quote, render_selector, slo_query
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


def test_defaults_then_selector_then_request_matchers_later_wins() -> None:
    slo = SLO(
        service="s",
        name="r",
        window=300,
        threshold=0.01,
        sli=RatioSLI(Selector("req", (Matcher("code", MatchOp.RE, "5.."),)), Selector("req")),
        labels=(("env", "prod"), ("namespace", "chatbot")),
    )
    query = slo_query(slo, 754, [Matcher("env", MatchOp.EQ, "canary")])
    assert 'req{env="canary", namespace="chatbot", code=~"5.."}[12m34s]' in query
    assert 'env="prod"' not in query
