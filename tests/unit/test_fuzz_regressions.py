"""Pure regressions for defects the fuzz tests found (tests/component/test_fuzz_*.py):
each test failed before its fix."""

from __future__ import annotations

import pytest

from sentinel.errors import Problem
from sentinel.offline.ruletest import logql_engine, promql_engine
from sentinel.query.promql import quote
from sentinel.units import format_duration


@pytest.mark.parametrize("seconds", [309, 5400, 394.259, 90061])
def test_the_rule_test_engines_read_every_window_sentinel_renders(seconds: float) -> None:
    """Found by the gate fuzzing: a gate window (`since` 5m9s ago) renders as `[5m9s]`,
    and a rule's `window: 90m` as `[1h30m]`; both in-process engines (`sentinel test`,
    and the fake Loki built on the LogQL one) read only one unit and failed to parse."""
    window = format_duration(seconds)
    prom = promql_engine.parse(f'sum(rate(x{{a="b"}}[{window}]))')
    assert prom.inner.args[0].range == pytest.approx(seconds)
    logql = logql_engine.parse(f'sum(count_over_time({{a="b"}} | json [{window}]))')
    assert logql.inner.window == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["\ufffd", 'prod"} or vector(1) or up{a="', "a\\b", "x\ny\rz", "é\t漢", "\\u0041"]
)
def test_a_quoted_value_reads_back_as_itself(value: str) -> None:
    """U+FFFD is written as an escape (Prometheus' lexer refuses it raw, as an invalid
    UTF-8 byte); the rule-test PromQL engine reads \\uXXXX escapes back."""
    literal = quote(value)
    assert "\ufffd" not in literal and "\n" not in literal
    assert promql_engine._unquote(literal) == value
    assert logql_engine.unquote(literal) == value


def test_a_problem_is_one_line_whatever_its_key_holds() -> None:
    problem = Problem("c.yaml", 3, "a\nc.yaml:9: forged", "unknown key\x1b[31m")
    assert str(problem) == "c.yaml:3: a\\nc.yaml:9: forged: unknown key\\x1b[31m"
