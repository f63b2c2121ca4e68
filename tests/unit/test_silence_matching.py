"""Silence regexes: a list of escaped names (what a Slack click on a message of many
services makes) is matched as a set of names, anything else is compiled; either way a
matcher means what `re.fullmatch` says, and an invalid regex is refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.alerting.silences import (
    SilenceMatcher,
    literal_alternatives,
    parse_matchers,
    regex_matcher,
)

# Letters, regex syntax and characters re.escape escapes: most drawn patterns are
# literal lists, many are real regexes, some are invalid.
ALPHABET = "ab-_ .|\\*+?()[]{}^$dé1#"


def fullmatch(pattern: str, text: str) -> bool | None:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return None


@pytest.mark.filterwarnings("ignore::FutureWarning")  # `re` on "[[": a possible nested set
@settings(max_examples=3000, deadline=None)
@given(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=6))
def test_a_matcher_means_what_re_fullmatch_means(pattern: str, text: str) -> None:
    expected = fullmatch(pattern, text)
    raw = [{"name": "service", "value": pattern, "isRegex": True}]
    if expected is None:
        with pytest.raises(ValueError, match="invalid regex"):
            parse_matchers(raw)
        return
    (matcher,) = parse_matchers(raw)
    assert matcher.matches({"service": text}) is expected
    negated = SilenceMatcher("service", pattern, is_regex=True, is_equal=False)
    assert negated.matches({"service": text}) is not expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(ALPHABET, max_size=8), min_size=1, max_size=20))
def test_escaped_names_are_read_as_the_names_they_list(names: list[str]) -> None:
    value = "|".join(re.escape(name) for name in names)
    assert literal_alternatives(value) == frozenset(names)
    for name in names:
        assert SilenceMatcher("service", value, is_regex=True).matches({"service": name})


def test_a_slack_silence_of_thousands_of_services_is_not_compiled() -> None:
    names = [f"svc-{i:05d}" for i in range(10_000)] + ["a.b", "x|y", "back\\slash"]
    value = "|".join(re.escape(name) for name in sorted(names))
    assert regex_matcher(value) == frozenset(names)
    matcher = SilenceMatcher("service", value, is_regex=True)
    assert matcher.matches({"service": "x|y"})
    assert matcher.matches({"service": "back\\slash"})
    assert not matcher.matches({"service": "x"})  # `|` was escaped: not an alternative
    assert not matcher.matches({"service": "aXb"})  # `.` was escaped: not any character
    assert not matcher.matches({"service": "svc-00001 "})


@pytest.mark.parametrize(
    "value", ["svc-.*", "a|b+", "(a|b)", "[ab]", r"\d+", r"a\|b\w", "a{2}", "^a$", "\\"]
)
def test_regex_syntax_is_compiled_not_read_as_names(value: str) -> None:
    assert literal_alternatives(value) is None
