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
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, repeat

import orjson

from sentinel.slicing import SAMPLES_CHUNK, Steps
from sentinel.sources.base import KeptLabels, Sample

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
#
# Every repetition is possessive (`*+`, `++`): what follows each can never be a character
# it takes (a brace after the label set, a point or comma after digits, a quote after the
# value), so giving characters back could never lead to a match; not keeping the states
# to do so makes the split ~14 % faster.
_ELEMENT = re.compile(
    rb'\{"metric":(\{[^{}]*+\}),'
    rb'"value":\[-?(?:0|[1-9][0-9]{0,15}+)(?:\.[0-9]++)?,"([-+.0-9A-Za-z]*+)"\]\}'
    rb'(?:,(?=\{"metric":)|\Z)'
)


def elements(body: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The label sets' and values' bytes of a compact vector answer, in order; None when
    its text is anything else.

    One pass in C over the text between the head and the tail: `split` returns what lies
    between the elements along with their groups, and in an answer of this layout nothing
    does. Elements that leave nothing between them spell that whole text, and a comma is
    matched only before another element, so it is `e,e,...,e` (or empty). The head ends
    with `[` and the tail starts with `]`, so the two cannot overlap in a short body."""
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

    Samples share their labels dict with every other answer of the source that holds the
    same set (what the engine's `_share_labels` does for all answers). The label sets live
    in two generations, bounded by what the latest answers of the queries asked again
    hold (`volume`): once the young one outgrows twice that, it becomes the old one, and
    sets the answers still hold move back as they are read. So the memory stays a few
    times the answers' own however much they churn (label sets new at every answer), and
    a set is kept between its query's answers, however rare (a group every 5 minutes
    beside one every 15 s), as long as the other answers do not churn through more than
    that in the meantime. A query counts from its second answer (the gate's, with a
    `since` in each, are asked once) and stops counting once not asked for
    `FORGET_AFTER` (the queries of rules a reload replaced)."""

    def __init__(self) -> None:
        self._young: dict[bytes, Mapping[str, str]] = {}
        self._old: dict[bytes, Mapping[str, str]] = {}
        self._strings: dict[str, str] = {}  # `_share_values`
        # query -> (what its latest answer counts in `volume`, when it was asked)
        self._sizes: dict[str, tuple[int, float]] = {}
        self.volume = 0
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def scan(self, query: str, body: bytes, full: FullParse) -> Steps[list[Sample]]:
        """The answer's samples, as a step: the pass over the whole answer that splits it
        into elements is a slice of its own (~7 ms at 20,000 series), then it yields
        every SAMPLES_CHUNK samples. `full` decodes and parses an answer the fast path
        does not read: one not in the compact layout, or with a label set or value that
        `vector_steps` refuses (so that the error, too, is the full path's); its decode
        is a slice of its own too. The body is held until the answer is read, for that
        hand-over."""
        split = elements(body)
        yield
        if split is not None:
            samples = yield from self._samples(*split)
            if samples is not None:
                self._remember(query, len(samples))
                return samples
            yield  # the chunk that met what it cannot read was a slice
        steps = full(body)  # the decode: one C call, a slice of its own too
        yield
        return (yield from steps)

    def _samples(self, keys: list[bytes], values: list[bytes]) -> Steps[list[Sample] | None]:
        """The elements' samples; None for a label set or value it cannot read. Each
        chunk is built by C loops (`map`, `zip`): a Python loop over the elements was a
        fifth of the daemon's CPU per cycle. The label sets neither generation holds are
        decoded together, in one call, at the end."""
        samples: list[Sample] = []
        known = self._young.__getitem__
        unknown: list[tuple[int, bytes]] = []  # (sample, label set) decoded at the end
        if len(keys) != len(values):
            return None
        try:
            for start in range(0, len(keys), SAMPLES_CHUNK):
                chunk = keys[start : start + SAMPLES_CHUNK]
                try:
                    labels = list(map(known, chunk))
                except KeyError:  # a set not read lately: the slow path, for this chunk
                    labels = self._recall(chunk, start, unknown)
                floats = _floats(values[start : start + SAMPLES_CHUNK])
                samples += map(_new, repeat(Sample), zip(labels, floats, strict=True))
                yield
            if unknown:
                decoded = _labels(list(dict.fromkeys(key for _, key in unknown)))
                yield  # one C call over every new label set: a slice of its own
                yield from self._share_values(decoded.values())
                self._young.update(decoded)
                for i, key in unknown:
                    samples[i] = _new(Sample, (decoded[key], samples[i].value))
        except ValueError:
            return None
        return samples

    def _share_values(self, sets: Iterable[KeptLabels]) -> Steps[None]:
        """Makes equal label values of new sets one string: orjson builds a string per
        value, and a service's name, a `__part`'s `bad` or `total`, stand in every window's
        and part's set (at 10,000 services x 3 SLIs the sets held 140,000 strings of ~56
        bytes; 40,000 once shared). Only for sets seen for the first time, so a
        cycle of known sets pays nothing; the table lives as long as the young generation
        (it cannot outgrow it: churning labels are forgotten with their sets)."""
        strings = self._strings
        for n, labels in enumerate(sets, 1):
            for name, value in labels.items():
                labels[name] = strings.setdefault(value, value)  # no key added: safe
            if n % SAMPLES_CHUNK == 0:
                yield

    def _recall(
        self, chunk: list[bytes], start: int, unknown: list[tuple[int, bytes]]
    ) -> list[Mapping[str, str]]:
        """The chunk's labels dicts, moving those of the old generation back to the young
        one; a set neither holds is noted in `unknown` (by its sample's index) and stands
        as `_UNKNOWN` until decoded."""
        young, old = self._young, self._old
        out: list[Mapping[str, str]] = []
        for i, key in enumerate(chunk, start):
            labels = young.get(key)
            if labels is None:
                labels = old.pop(key, None)
                if labels is None:
                    unknown.append((i, key))
                    labels = _UNKNOWN
                else:
                    young[key] = labels
            out.append(labels)
        return out

    def _remember(self, query: str, size: int) -> None:
        sizes, now = self._sizes, time.monotonic()
        if now - self._swept > SWEEP_EVERY or len(sizes) >= MAX_QUERIES:
            self._sweep(now)
        prev = sizes.get(query)
        counted = 0 if prev is None else size  # from its second answer
        self.volume += counted - (0 if prev is None else prev[0])
        sizes[query] = (counted, now)
        limit = 2 * self.volume + 1000
        if len(self._young) > limit:
            self._old, self._young = self._young, {}
            self._strings = {}
        elif len(self._old) > 2 * limit:  # from before `volume` fell (a reload): what
            self._old = {}  # is left there was not read since

    def _sweep(self, now: float) -> None:
        """Forget the queries not asked for FORGET_AFTER; all of them, at MAX_QUERIES."""
        sizes, self._swept = self._sizes, now
        if len(sizes) >= MAX_QUERIES:
            sizes.clear()
            self.volume = 0
            return
        for query in [q for q, (_, at) in sizes.items() if now - at > FORGET_AFTER]:
            self.volume -= sizes.pop(query)[0]


# Queries whose latest answer's size is kept: far more than a configuration plans (the
# gate's one-off queries start the count afresh), each for as long as a long window's
# answer is reused (1/720 of 30 days is an hour), then forgotten, looked at every minute.
MAX_QUERIES = 10_000
FORGET_AFTER = 6 * 3600.0
SWEEP_EVERY = 60.0
_UNKNOWN: Mapping[str, str] = {}


def _floats(raw: list[bytes]) -> list[float]:
    """The values, as `float` reads each (ValueError for one it refuses). Numbers the way
    JSON writes them, nearly all of an answer's values, are read by one orjson call over
    them all (~30 ns each, against ~170 for `float` on each): it rounds as `float` does
    (tests/component/test_compact_vector.py compares them). An integer is returned as
    orjson reads it, an int, and made a float here; `-0` is the one integer text whose
    float differs from its int's, so a chunk holding it is read by `float`. Anything
    orjson does not read as numbers only (NaN, +Inf, `true`) is read by `float`. A value
    holds no comma (the split's pattern), so the joined text has one item per value
    unless a value is empty."""
    try:
        got = orjson.loads(b"[" + b",".join(raw) + b"]")
    except orjson.JSONDecodeError:
        return list(map(float, raw))
    if len(got) == len(raw):
        types = set(map(type, got))
        if types <= _FLOAT:
            return got  # type: ignore[no-any-return]
        if types <= _NUMBER and b"-0" not in raw:
            return list(map(float, got))
    return list(map(float, raw))


_FLOAT = frozenset({float})
_NUMBER = frozenset({float, int})
_new = tuple.__new__


def _labels(raw: list[bytes]) -> dict[bytes, KeptLabels]:
    """Label sets' dicts (`KeptLabels`: this scanner hands them again), by their bytes;
    ValueError unless each is one `vector_steps` takes. One orjson call for all: each
    set is a brace-free `{...}` (the split's pattern), so a text that parses to exactly
    as many objects as sets holds no string running from one set into the next (that
    would merge two into one), and each object is what its set's bytes alone decode to."""
    decoded = orjson.loads(b"[" + b",".join(raw) + b"]")  # JSONDecodeError is a ValueError
    if len(decoded) != len(raw):
        raise ValueError("label sets run into each other")
    try:
        # In C: dict.values refuses what is not a dict, join a value that is not a str.
        "".join(chain.from_iterable(map(dict.values, decoded)))
    except TypeError:
        raise ValueError("a label set that is not an object of strings") from None
    return dict(zip(raw, map(KeptLabels, decoded), strict=True))
