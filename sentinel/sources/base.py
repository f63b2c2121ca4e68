"""What every source offers the engine: instant vector queries at an explicit time.

Also the parsing of
Prometheus' answer shape (which Loki shares). Parsing trusts nothing: an answer that is
valid JSON but not a well-formed vector (a `metric` that is not an object of strings, a
value that is not a string-encoded number, more series than `max_series`) is a
BadResponse for that one query, never an exception further down the cycle.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from sentinel.errors import BadResponse, TooManySeries
from sentinel.health import DependencyHealth


class Sample(NamedTuple):
    """One element of an instant vector (a tuple: thousands are built per cycle)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


class Source(Protocol):
    name: str
    health: DependencyHealth

    async def instant(self, query: str, at: float) -> list[Sample]: ...

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]: ...

    async def check_syntax(self, query: str) -> str | None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


T = TypeVar("T")

# Answers with at least this many samples or points are parsed in a worker thread
# (parse_answer).
OFF_LOOP_ITEMS = 500

# Each series of a Prometheus or Loki answer opens with this key. Inside a JSON string the
# byte sequence cannot occur (its quotes would be escaped), so for the compact JSON both
# servers write, counting it counts the series.
_SERIES_KEY = b'"metric":{'


def check_series_count(source: str, query: str, body: bytes, limit: int | None) -> None:
    """Refuse an answer with more than `limit` series before it is parsed: counting costs
    ~7 ms for 10^5 series, parsing them ~200 MB and seconds. (An answer written otherwise,
    e.g. pretty-printed, escapes the count; the parsers below check the limit exactly.)"""
    if limit is None:
        return
    count = body.count(_SERIES_KEY)
    if count > limit:
        raise TooManySeries(source, query, count, limit)


async def parse_answer(health: DependencyHealth, data: Any, parse: Callable[[], T]) -> T:
    """Run a parser over an answer (`data`) the HTTP layer accepted; a BadResponse marks
    the backend unhealthy like any failed request, so /health/detailed shows it.

    A large answer is parsed in a worker thread: the parse is a Python loop over every
    sample or point (~2 ms per 1,000 alone, several times that while the evaluation
    thread runs), and on the loop it held gate and health requests for the whole of it;
    in a thread the loop gets the interpreter back every switch interval. The parsers are
    pure; the health record stays on the loop."""
    try:
        if _items_in(data) >= OFF_LOOP_ITEMS:
            return await asyncio.to_thread(parse)
        return parse()
    except BadResponse as exc:
        health.record_bad_answer(exc.detail)
        raise


def _items_in(data: Any) -> int:
    """What parsing `data` costs: its samples (a vector) or points (a matrix)."""
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        return 0
    if data.get("resultType") != "matrix":
        return len(result)
    points = 0
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        points += len(values) if isinstance(values, list) else 1
        if points >= OFF_LOOP_ITEMS:
            break
    return points


def parse_value(source: str, query: str, raw: Any) -> float:
    """Prometheus and Loki send sample values as strings ('1.5', 'NaN', '+Inf'); a JSON
    number or `true` is not their protocol and is refused, not coerced."""
    if type(raw) is str:
        try:
            return float(raw)
        except ValueError:
            pass
    raise BadResponse(source, query, f"sample value {raw!r:.100} is not a number in a string")


def parse_vector(source: str, query: str, data: Any, max_series: int | None = None) -> list[Sample]:
    """Parse the `data` of a query answer: vector or scalar; anything else is an error."""
    if not isinstance(data, dict):
        raise BadResponse(source, query, "answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, parse_value(source, query, result[1]))]
    if kind != "vector" or not isinstance(result, list):
        raise BadResponse(source, query, f"expected an instant vector, got {kind!r:.100}")
    if max_series is not None and len(result) > max_series:
        raise TooManySeries(source, query, len(result), max_series)
    # One try around the whole loop: this parses thousands of elements per cycle. The
    # type checks are what keeps a list-valued label from crashing grouping later.
    samples: list[Sample] = []
    append = samples.append
    # tuple.__new__ skips Sample's Python-level __new__; str.join raises TypeError for a
    # label value that is not a string, in C (a loop over the labels cost more).
    new, join = tuple.__new__, "".join
    try:
        for item in result:
            metric, pair = item["metric"], item["value"]
            if type(metric) is not dict or type(pair) is not list or len(pair) != 2:
                raise TypeError
            raw = pair[1]
            if type(raw) is not str:
                raise TypeError
            join(metric.values())
            append(new(Sample, (metric, float(raw))))
    except (KeyError, IndexError, TypeError, ValueError):
        bad = result[len(samples)]
        raise BadResponse(source, query, f"malformed vector element {bad!r:.200}") from None
    return samples


def parse_matrix(source: str, query: str, data: Any, max_series: int | None = None) -> list[Series]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise BadResponse(source, query, "expected a range vector (matrix)")
    result = data.get("result") or []
    if not isinstance(result, list):
        raise BadResponse(source, query, "expected a range vector (matrix)")
    if max_series is not None and len(result) > max_series:
        raise TooManySeries(source, query, len(result), max_series)
    out = []
    for item in result:
        try:
            metric = item["metric"]
            if type(metric) is not dict or any(type(v) is not str for v in metric.values()):
                raise TypeError
            points = tuple((float(t), parse_value(source, query, v)) for t, v in item["values"])
            out.append(Series(dict(metric), points))
        except (KeyError, TypeError, ValueError):
            raise BadResponse(source, query, f"malformed matrix element {item!r:.200}") from None
    return out


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
