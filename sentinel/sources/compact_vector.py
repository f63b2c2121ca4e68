"""A fast path for the instant-vector answers Prometheus writes, read from their bytes.

Decoding an answer builds a Python object for every part of every element (its dict, its
labels dict and strings, its value pair, timestamp and value string), and each is dropped
a moment later: at 1,000 services x 3 SLIs that was ~15 % of the daemon's CPU per cycle,
and much of what fragments its heap. The labels are the same from cycle to cycle and
from window to window, and Prometheus writes a label set the same way each time (labels
sorted, compact JSON), so the labels' bytes can stand for the dict.

`VectorScanner.scan` reads an answer only when its whole text has exactly the layout
Prometheus writes, checked by one regular expression: every text it accepts is valid JSON
that means the same as what it reads from it. Each label set is decoded once, by orjson,
and checked as `vector_steps` checks it; afterwards its bytes look it up. Anything else (a
scalar, warnings or Loki's `stats` after the result, escapes in a value, a label value
with a brace, a server that writes spaces) is left to the full decode, so the fast path
never decides what an answer means on its own: it only skips building what it would drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import orjson

from sentinel.slicing import SAMPLES_CHUNK, Steps
from sentinel.sources.base import Sample

# Parts of Prometheus' compact answer. A label set: no brace inside (a label value with
# one takes the full decode); orjson checks the rest once per distinct label set. A
# timestamp: a JSON number as Prometheus writes it (seconds, optional fraction). A value:
# the characters of a number, NaN or ±Inf, nothing that would need escaping in JSON (a
# value the full decode would refuse, e.g. with a raw newline, is never read here).
_HEAD = rb'\{"status":"success","data":\{"resultType":"vector","result":\['
_TAIL = rb"\]\}\}"


def _element(group: bytes) -> bytes:
    """An element's pattern; `group` opens its labels' and value's groups."""
    return (
        rb'\{"metric":'
        + group
        + rb'\{[^{}]*\}),"value":\[-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?,"'
        + group
        + rb'[-+.0-9A-Za-z]*)"\]\}'
    )


_ELEMENTS = re.compile(_element(b"("))
# The whole answer, start to end. Linear: each element starts with a fixed text and its
# parts cannot overlap, so a failed match (a tail it does not know, a malformed element)
# gives up without re-trying other splits.
_BARE = _element(b"(?:")
_ANSWER = re.compile(_HEAD + rb"(?:" + _BARE + rb"(?:," + _BARE + rb")*)?" + _TAIL)


# The decode and parse of an answer the fast path does not read.
FullParse = Callable[[bytes], Steps[list[Sample]]]


class VectorScanner:
    """Reads compact vector answers of one source, remembering its label sets.

    The label sets live in two generations: a set not seen in two full passes over the
    answers (counted in samples, so the memory follows what the queries return) is
    forgotten. Samples share their labels dict with every other answer of the source
    that holds the same set (what the engine's `_share_labels` does for all answers)."""

    def __init__(self) -> None:
        self._young: dict[bytes, Mapping[str, str]] = {}
        self._old: dict[bytes, Mapping[str, str]] = {}
        self._since_turn = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def scan(self, body: bytes, full: FullParse) -> Steps[list[Sample]]:
        """The answer's samples, as a step: each pass of a regular expression over the
        whole answer is a slice of its own (~5 ms each at 20,000 series), then it yields
        every SAMPLES_CHUNK samples. `full` decodes and parses an answer the fast path
        does not read: one not in the compact layout, or with a label set or value that
        `vector_steps` refuses (so that the error, too, is the full path's)."""
        if _ANSWER.fullmatch(body) is not None:
            yield
            samples = yield from self._samples(_ELEMENTS.findall(body))
            if samples is not None:
                return samples
        steps = full(body)  # the decode: one C call, a slice of its own too
        yield
        return (yield from steps)

    def _samples(self, elements: list[tuple[bytes, bytes]]) -> Steps[list[Sample] | None]:
        """The elements' samples; None for a label set or value it cannot read."""
        yield
        samples: list[Sample] = []
        append, new = samples.append, tuple.__new__
        young, old = self._young, self._old
        get = young.get
        elements.reverse()  # popped from the end: same order, each pair freed once used
        pop = elements.pop
        try:
            while elements:
                for _ in range(min(len(elements), SAMPLES_CHUNK)):
                    key, raw = pop()
                    labels = get(key)
                    if labels is None:
                        labels = old.pop(key, None) or _labels(key)
                        young[key] = labels
                    append(new(Sample, (labels, float(raw))))
                yield
        except ValueError:
            return None
        self._since_turn += len(samples)
        if self._since_turn > 2 * len(young) + 1000:
            self._old, self._young, self._since_turn = young, {}, 0
        return samples


def _labels(raw: bytes) -> Mapping[str, str]:
    """A label set's dict; ValueError unless it is one `vector_steps` takes."""
    labels = orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
    if type(labels) is not dict or any(type(v) is not str for v in labels.values()):
        raise ValueError(raw)
    return labels
