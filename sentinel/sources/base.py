"""What every source offers the engine: instant vector queries at an explicit time.

Also the parsing of
Prometheus' answer shape (which Loki shares). Parsing trusts nothing: an answer that is
valid JSON but not a well-formed vector (a `metric` that is not an object of strings, a
value that is not a string-encoded number, more series than `max_series`) is a
BadResponse for that one query, never an exception further down the cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sentinel.errors import BadResponse, TooManySeries
from sentinel.health import DependencyHealth
from sentinel.slicing import SAMPLES_CHUNK, Steps, finish_now

# Series of a range answer parsed between two yields (a series holds up to ~100 points).
MATRIX_CHUNK = 16


class KeptLabels(dict[str, str]):
    """A labels dict its source keeps and hands again in every answer that holds its label
    set (the compact Prometheus path, sentinel/sources/compact_vector.py): whoever shares
    labels dicts across answers can make it the shared one (`Engine._share_labels`),
    where a dict decoded for one answer alone would be dropped after it."""

    __slots__ = ()


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
    return finish_now(vector_steps(source, query, data, max_series))


def vector_steps(
    source: str, query: str, data: Any, max_series: int | None = None
) -> Steps[list[Sample]]:
    """`parse_vector` as a step that yields every few hundred samples (sentinel/slicing.py):
    the daemon parses its cycles' answers on the event loop in slices."""
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
    # The answer is consumed as it is read: each element (its dict, value pair, timestamp
    # and value string) is freed once its sample is built, so a 10,000-series answer is
    # never held twice over. Popped from the end of the reversed list: same order, O(1).
    result.reverse()
    pop = result.pop
    item: Any = None
    try:
        while result:
            for _ in range(min(len(result), SAMPLES_CHUNK)):
                item = pop()
                metric, pair = item["metric"], item["value"]
                if type(metric) is not dict or type(pair) is not list or len(pair) != 2:
                    raise TypeError
                raw = pair[1]
                if type(raw) is not str:
                    raise TypeError
                join(metric.values())
                append(new(Sample, (metric, float(raw))))
            yield
    except (KeyError, IndexError, TypeError, ValueError):
        raise BadResponse(source, query, f"malformed vector element {item!r:.200}") from None
    return samples


def parse_matrix(source: str, query: str, data: Any, max_series: int | None = None) -> list[Series]:
    return finish_now(matrix_steps(source, query, data, max_series))


def matrix_steps(
    source: str, query: str, data: Any, max_series: int | None = None
) -> Steps[list[Series]]:
    """A range query's answer, yielding every few series (each holds its points)."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise BadResponse(source, query, "expected a range vector (matrix)")
    result = data.get("result") or []
    if not isinstance(result, list):
        raise BadResponse(source, query, "expected a range vector (matrix)")
    if max_series is not None and len(result) > max_series:
        raise TooManySeries(source, query, len(result), max_series)
    out = []
    for i, item in enumerate(result):
        if i % MATRIX_CHUNK == MATRIX_CHUNK - 1:
            yield
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
