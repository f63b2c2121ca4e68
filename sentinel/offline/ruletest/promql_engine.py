"""An in-process PromQL engine for the expressions Sentinel generates, with Prometheus
2.x semantics where it matters: `rate`/`increase` extrapolation and counter resets,
`histogram_quantile` interpolation, `label_replace`, `sum by`, `or`, arithmetic with
one-to-one label matching, the 5-minute lookback of instant selectors, and the
`avg|min|max|sum|count_over_time` of gauges (availability from `up`, probe success,
resource and pool gauges in the shipped rules).

Anything else is refused with a clear error, so a raw-PromQL rule that needs more is
told to test against a real Prometheus (`sentinel backtest`).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel.offline.ruletest.tokens import Tok, TokenParser
from sentinel.offline.ruletest.tokens import tokenize as tokenize_with
from sentinel.units import parse_duration

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]
LOOKBACK = 300.0

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')'
    r"|(?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+)(?![\w])"  # "5m9s" too
    r"|(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?|\.\d+)"
    r"|(?P<op>=~|!~|!=|==|>=|<=|[{}()\[\],=*/+\-<>])"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*))"
)


class PromQLError(ValueError):
    pass


# Aggregations over the raw samples of a range (Prometheus 2.x: both ends inclusive).
OVER_TIME: dict[str, Callable[[list[float]], float]] = {
    "avg_over_time": lambda values: math.fsum(values) / len(values),
    "min_over_time": min,
    "max_over_time": max,
    "sum_over_time": math.fsum,
    "count_over_time": lambda values: float(len(values)),
}
RANGE_FUNCTIONS = ("rate", "increase", *OVER_TIME)


def tokenize(query: str) -> list[Tok]:
    def error(col: int, char: str) -> PromQLError:
        return PromQLError(f"unexpected character {char!r} at {col}")

    return tokenize_with(_TOKEN, query, error, "")


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]
    range: float | None = None


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Agg:
    by: tuple[str, ...] | None
    inner: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


class _Parser(TokenParser):
    def error(self, tok: Tok, expected: str | None) -> PromQLError:
        if expected:
            return PromQLError(f"expected {expected} at {tok.col}, got {tok.text!r}")
        return PromQLError(f"unexpected {tok.text!r} at {tok.col}")

    def parse(self) -> Any:
        node = self.or_expr()
        if self.peek().kind != "eof":
            raise PromQLError(f"unexpected {self.peek().text!r} at {self.peek().col}")
        return node

    def or_expr(self) -> Any:
        node = self.add_expr()
        while self.peek().text == "or":
            self.take("or")
            node = Binary("or", node, self.add_expr())
        return node

    def add_expr(self) -> Any:
        node = self.mul_expr()
        while self.peek().text in ("+", "-"):
            op = self.take().text
            node = Binary(op, node, self.mul_expr())
        return node

    def mul_expr(self) -> Any:
        node = self.atom()
        while self.peek().text in ("*", "/"):
            op = self.take().text
            node = Binary(op, node, self.atom())
        return node

    def atom(self) -> Any:
        tok = self.peek()
        if tok.text == "(":
            self.take("(")
            node = self.or_expr()
            self.take(")")
            return node
        if tok.kind == "number":
            self.take()
            return float(tok.text)
        if tok.text == "sum":
            return self.agg()
        if tok.kind == "ident" and self.peek(1).text == "(":
            return self.call()
        if tok.kind == "ident" or tok.text == "{":
            return self.selector()
        raise PromQLError(f"unsupported expression at {tok.col}: {tok.text!r}")

    def agg(self) -> Agg:
        by, inner = self.sum_by(self.or_expr)
        return Agg(by, inner)

    def call(self) -> Call:
        fn = self.take(kind="ident").text
        if fn not in (*RANGE_FUNCTIONS, "histogram_quantile", "label_replace", "vector"):
            raise PromQLError(f"function {fn}() is not supported by `sentinel test`")
        self.take("(")
        args: list[Any] = []
        while self.peek().text != ")":
            if self.peek().kind == "string":
                args.append(_unquote(self.take().text))
            else:
                args.append(self.or_expr())
            if self.peek().text == ",":
                self.take(",")
        self.take(")")
        return Call(fn, tuple(args))

    def selector(self) -> Selector:
        name = self.take().text if self.peek().kind == "ident" else ""
        matchers: list[tuple[str, str, str]] = []
        if self.peek().text == "{":
            self.take("{")
            while self.peek().text != "}":
                label = self.take(kind="ident").text
                op = self.take().text
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher operator {op!r}")
                matchers.append((label, op, _unquote(self.take(kind="string").text)))
                if self.peek().text == ",":
                    self.take(",")
            self.take("}")
        rng = None
        if self.peek().text == "[":
            self.take("[")
            rng = parse_duration(self.take(kind="duration").text)
            self.take("]")
        return Selector(name, tuple(matchers), rng)


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _unquote(text: str) -> str:
    """Go's escapes as PromQL reads them, \\uXXXX included (how `quote` writes U+FFFD)."""

    def escape(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code[1:], 16)) if len(code) > 1 else _SIMPLE_ESCAPES.get(code, code)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", escape, text[1:-1], flags=re.S)


def parse(query: str) -> Any:
    return _Parser(tokenize(query)).parse()


@dataclass
class SeriesData:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)  # (t, v), time-ordered


def _matches(labels: Mapping[str, str], matchers: Sequence[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        actual = labels.get(name, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and re.fullmatch(value, actual) is None:
            return False
        if op == "!~" and re.fullmatch(value, actual) is not None:
            return False
    return True


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def extrapolated(
    points: list[tuple[float, float]], start: float, end: float, rate: bool
) -> float | None:
    """Prometheus 2.x extrapolatedRate for counters."""
    if len(points) < 2:
        return None
    result = points[-1][1] - points[0][1]
    for (_, prev), (_, cur) in itertools.pairwise(points):
        if cur < prev:
            result += prev  # counter reset
    first_t, first_v = points[0]
    last_t = points[-1][0]
    sampled = last_t - first_t
    average = sampled / (len(points) - 1)
    to_start, to_end = first_t - start, end - last_t
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    value = result * (interval / sampled)
    return value / (end - start) if rate else value


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (le, cumulative count) pairs."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or buckets[-1][0] != math.inf or len(buckets) < 2:
        return math.nan
    for i in range(1, len(buckets)):  # ensure monotonicity, as Prometheus does
        if buckets[i][1] < buckets[i - 1][1]:
            buckets[i] = (buckets[i][0], buckets[i - 1][1])
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


class InProcessPrometheus:
    def __init__(self, series: Sequence[SeriesData]) -> None:
        self.series = list(series)

    def query(self, query: str, at: float) -> Vector:
        node = parse(query)
        value = self._eval(node, at)
        if isinstance(value, float):
            return {(): value}
        return value

    def _select(self, sel: Selector) -> list[SeriesData]:
        matchers = list(sel.matchers)
        if sel.name:
            matchers.append(("__name__", "=", sel.name))
        return [s for s in self.series if _matches(s.labels, matchers)]

    def _eval(self, node: Any, at: float) -> Vector | float:
        if isinstance(node, float):
            return node
        if isinstance(node, Selector):
            if node.range is not None:
                raise PromQLError(
                    f"a range vector must be inside one of {', '.join(RANGE_FUNCTIONS)}"
                )
            out: Vector = {}
            for s in self._select(node):
                recent = [v for t, v in s.points if at - LOOKBACK < t <= at]
                if recent:
                    out[_key(s.labels)] = recent[-1]
            return out
        if isinstance(node, Call):
            return self._call(node, at)
        if isinstance(node, Agg):
            inner = self._vector(node.inner, at)
            out = {}
            for labels, value in inner.items():
                kept = tuple((k, v) for k, v in labels if node.by is not None and k in node.by)
                out[kept] = out.get(kept, 0.0) + value
            return out
        if isinstance(node, Binary):
            return self._binary(node, at)
        raise PromQLError(f"unsupported node {node!r}")

    def _vector(self, node: Any, at: float) -> Vector:
        value = self._eval(node, at)
        if isinstance(value, float):
            raise PromQLError("expected an instant vector, got a scalar")
        return value

    def _call(self, node: Call, at: float) -> Vector:
        if node.fn in ("rate", "increase"):
            (sel,) = node.args
            if not isinstance(sel, Selector) or sel.range is None:
                raise PromQLError(f"{node.fn}() needs a range vector")
            start = at - sel.range
            out: Vector = {}
            for s in self._select(sel):
                window = [(t, v) for t, v in s.points if start <= t <= at]
                value = extrapolated(window, start, at, node.fn == "rate")
                if value is not None:
                    out[_key(s.labels)] = value
            return out
        if node.fn in OVER_TIME:
            return self._over_time(node, at)
        if node.fn == "histogram_quantile":
            q, inner = node.args
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in self._vector(inner, at).items():
                d = dict(labels)
                le = d.pop("le", None)
                if le is None:
                    continue
                groups.setdefault(_key(d), []).append((float(le), value))
            return {k: bucket_quantile(float(q), b) for k, b in groups.items()}
        if node.fn == "label_replace":
            inner, dst, replacement, src, regex = node.args
            out = {}
            for labels, value in self._vector(inner, at).items():
                d = dict(labels)
                match = re.fullmatch(regex, d.get(src, ""))
                if match:
                    new = match.expand(re.sub(r"\$(\d+)", r"\\\1", replacement))
                    if new:
                        d[dst] = new
                    else:
                        d.pop(dst, None)
                out[_key(d)] = value
            return out
        if node.fn == "vector":
            (scalar,) = node.args
            return {(): float(scalar)}
        raise PromQLError(f"unsupported function {node.fn}")

    def _over_time(self, node: Call, at: float) -> Vector:
        (sel,) = node.args
        if not isinstance(sel, Selector) or sel.range is None:
            raise PromQLError(f"{node.fn}() needs a range vector")
        start, aggregate = at - sel.range, OVER_TIME[node.fn]
        out: Vector = {}
        for s in self._select(sel):
            values = [v for t, v in s.points if start <= t <= at]
            if values:  # a series without samples in the range is absent, as in Prometheus
                out[_key(s.labels)] = aggregate(values)
        return out

    def _binary(self, node: Binary, at: float) -> Vector | float:
        left, right = self._eval(node.left, at), self._eval(node.right, at)
        if node.op == "or":
            if isinstance(left, float) or isinstance(right, float):
                raise PromQLError("`or` needs vectors on both sides")
            return {**right, **left}
        op: Callable[[float, float], float] = {
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "/": lambda a, b: a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a)),
        }[node.op]
        if isinstance(left, float) and isinstance(right, float):
            return op(left, right)
        if isinstance(left, float):
            assert not isinstance(right, float)
            return {k: op(left, v) for k, v in right.items()}
        if isinstance(right, float):
            return {k: op(v, right) for k, v in left.items()}
        return {k: op(v, right[k]) for k, v in left.items() if k in right}


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """'metric{a="b"}' -> (name, labels)."""
    node = parse(text)
    if not isinstance(node, Selector) or node.range is not None:
        raise PromQLError(f"not a series: {text!r}")
    labels = {name: value for name, op, value in node.matchers if op == "="}
    return node.name, {**labels, "__name__": node.name}


_VALUE = re.compile(
    r"^(?P<a>-?[\d.]+(?:e[+-]?\d+)?|_)(?:(?P<op>[+-])(?P<b>[\d.]+(?:e[+-]?\d+)?))?(?:x(?P<n>\d+))?$"
)


def expand_values(text: str) -> list[float | None]:
    """promtool's notation: '0+10x3' -> 0 10 20 30; '1 _ 3' (missing); '5x2' -> 5 5 5."""
    out: list[float | None] = []
    for token in text.split():
        if token == "stale":
            out.append(None)
            continue
        match = _VALUE.match(token)
        if match is None:
            raise PromQLError(f"bad value {token!r} (expected e.g. '0+10x100', '1 2 _ 4')")
        if match.group("a") == "_":
            out.extend([None] * (int(match.group("n") or 0) + 1))
            continue
        start = float(match.group("a"))
        delta = float(match.group("b") or 0) * (-1 if match.group("op") == "-" else 1)
        count = int(match.group("n")) if match.group("n") else 0
        out.extend(start + delta * i for i in range(count + 1))
    return out
