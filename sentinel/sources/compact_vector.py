"""A fast path for the instant-vector answers Prometheus writes, read from their bytes.

Decoding an answer builds a Python object for every part of every element (its dict, its
labels dict and strings, its value pair, timestamp and value string), and each is dropped
a moment later: at 1,000 services x 3 SLIs that was ~15 % of the daemon's CPU per cycle,
and much of what fragments its heap. The labels are the same from cycle to cycle and
from window to window, and Prometheus writes a label set the same way each time (labels
sorted, compact JSON), so the labels' bytes can stand for the dict.

`VectorScanner.scan` reads an answer only when its whole text has exactly the layout
Prometheus writes: every text it accepts is valid JSON that means the same as what it
reads from it. Each label set is decoded once, by orjson, and checked as `vector_steps`
checks it; afterwards its bytes look it up. Anything else (a scalar, warnings or Loki's
`stats` after the result, escapes in a value, a label value with a brace, a server that
writes spaces) is left to the full decode, so the fast path never decides what an answer
means on its own: it only skips building what it would drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from itertools import islice

import orjson

from sentinel.slicing import SAMPLES_CHUNK, Steps
from sentinel.sources.base import Sample

_HEAD = b'{"status":"success","data":{"resultType":"vector","result":['
_TAIL = b"]}}"
# One element of the result, and the comma before the next. Its label set: no brace
# inside (a label value with one takes the full decode); orjson checks the rest, once per
# distinct set. Its timestamp: a JSON number as Prometheus writes it, seconds with an
# optional fraction and at most 16 digits before the point (orjson refuses a number too
# large for a double, and so the full path the answer). Its value: the characters of a
# number, NaN or ±Inf, nothing JSON would need escaped (a value the full decode refuses,
# e.g. with a raw newline, is never read here). A comma only before another element:
# `[e,]` is not JSON.
_ELEMENT = re.compile(
    rb'\{"metric":(\{[^{}]*\}),'
    rb'"value":\[-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]+)?,"([-+.0-9A-Za-z]*)"\]\}'
    rb'(?:,(?=\{"metric":)|\Z)'
)


def elements(body: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The label sets' and values' bytes of a compact vector answer, in order; None when
    its text is anything else.

    One pass in C: `split` returns what lies between the elements along with their
    groups, and in an answer of this layout nothing does. Elements cannot overlap the
    head or the tail (neither holds `{"metric":`, and an element ends with `"]}`), so
    elements that leave nothing between them spell the whole result: `e,e,...,e`."""
    if not (body.startswith(_HEAD) and body.endswith(_TAIL)):
        return None
    parts = _ELEMENT.split(body[len(_HEAD) : -len(_TAIL)])
    if any(parts[0::3]):
        return None
    return parts[1::3], parts[2::3]


# The decode and parse of an answer the fast path does not read.
FullParse = Callable[[bytes], Steps[list[Sample]]]


class VectorScanner:
    """Reads compact vector answers of one source, remembering its label sets.

    The label sets live in two generations, turned over at each round of queries (a query
    asked again starts the next round): a set that no answer of a whole round held is
    forgotten. So the memory follows what one round of answers holds, whatever the
    answers' churn (a query whose label sets are new each time), and a set that every
    round holds is decoded once. Samples share their labels dict with every other answer
    of the source that holds the same set (what the engine's `_share_labels` does for all
    answers)."""

    def __init__(self) -> None:
        self._young: dict[bytes, Mapping[str, str]] = {}
        self._old: dict[bytes, Mapping[str, str]] = {}
        self._asked: set[str] = set()  # the queries of this round

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def scan(self, query: str, body: bytes, full: FullParse) -> Steps[list[Sample]]:
        """The answer's samples, as a step: the pass over the whole answer that splits it
        into elements is a slice of its own (~4 ms at 20,000 series), then it yields
        every SAMPLES_CHUNK samples. `full` decodes and parses an answer the fast path
        does not read: one not in the compact layout, or with a label set or value that
        `vector_steps` refuses (so that the error, too, is the full path's); its decode
        is a slice of its own too. The body is held until the answer is read, for that
        hand-over."""
        if query in self._asked:
            self._old, self._young, self._asked = self._young, {}, set()
        self._asked.add(query)
        split = elements(body)
        yield
        if split is not None:
            samples = yield from self._samples(*split)
            if samples is not None:
                return samples
            yield  # the chunk that met what it cannot read was a slice
        steps = full(body)  # the decode: one C call, a slice of its own too
        yield
        return (yield from steps)

    def _samples(self, keys: list[bytes], values: list[bytes]) -> Steps[list[Sample] | None]:
        """The elements' samples; None for a label set or value it cannot read."""
        samples: list[Sample] = []
        append, new = samples.append, tuple.__new__
        young, old = self._young, self._old
        get = young.get
        pairs = zip(keys, values, strict=True)
        try:
            for _ in range(0, len(keys), SAMPLES_CHUNK):
                for key, raw in islice(pairs, SAMPLES_CHUNK):
                    labels = get(key)
                    if labels is None:
                        labels = old.pop(key, None)
                        if labels is None:
                            labels = _labels(key)
                        young[key] = labels
                    append(new(Sample, (labels, float(raw))))
                yield
        except ValueError:
            return None
        return samples


def _labels(raw: bytes) -> Mapping[str, str]:
    """A label set's dict; ValueError unless it is one `vector_steps` takes."""
    labels = orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
    if type(labels) is not dict or any(type(v) is not str for v in labels.values()):
        raise ValueError(raw)
    return labels
