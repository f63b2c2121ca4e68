"""The fast path for compact vector answers (sentinel/sources/compact_vector.py) reads
exactly what the full decode and parse read, or hands the answer to them.

What must hold, for every answer: the samples read from the bytes equal, label for label
and value for value (NaN included), those of `orjson.loads` + `vector_steps`; where the
full path refuses an answer, the client refuses it with the same error. Checked on
generated answers (labels and values of any text), on single-byte corruptions of a valid
answer (the attacker's edits: the fast path must never accept what JSON refuses), and on
the answers of the real Prometheus server, which must take the fast path.
"""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sentinel.config import PrometheusConfig
from sentinel.errors import SourceError
from sentinel.slicing import finish_now
from sentinel.sources import compact_vector
from sentinel.sources.base import Sample, check_series_count, vector_steps
from sentinel.sources.compact_vector import VectorScanner
from sentinel.sources.http import HTTPQueryClient
from sentinel.sources.prometheus import PrometheusSource
from support.fuzzing import counted, fuzz_settings
from support.promserver import PrometheusServer
from support.scenario import at

CLIENT = HTTPQueryClient("prometheus", PrometheusConfig(url="http://127.0.0.1:9"))
QUERY = "q"


def full(body: bytes) -> Any:
    return vector_steps("prometheus", QUERY, CLIENT._payload(body, QUERY))


def read(body: bytes, scanner: VectorScanner | None, query: str = QUERY) -> list[Sample] | str:
    """The samples, or the error as the client reports it; through the fast path when a
    scanner is given, else as the full path alone reads the answer."""
    try:
        check_series_count("prometheus", QUERY, body, 100_000)
        if scanner is None:
            return finish_now(full(body))
        return finish_now(scanner.scan(query, body, full))
    except SourceError as exc:
        return f"{type(exc).__name__}: {exc.detail}"


def same(a: list[Sample] | str, b: list[Sample] | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(
        x.labels == y.labels and same_float(x.value, y.value) for x, y in zip(a, b, strict=True)
    )


def same_float(x: float, y: float) -> bool:
    """The same float: NaN as NaN, -0.0 apart from 0.0, and a float, not an int."""
    if type(x) is not float or type(y) is not float:
        return False
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def compact(result: list[Any], ensure_ascii: bool = False) -> bytes:
    envelope = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()


NUMBERS = st.sampled_from(
    [
        "0",
        "1",
        "1.5",
        "-2.25",
        "1e-05",
        "6.02e+23",
        "NaN",
        "+Inf",
        "-Inf",
        "0.1",
        "-0",
        "-0.0",
        "12345678901234567890123",
        "1e400",
        "-1e400",
        "5e-324",
        "1e-400",
        "7",
        "1E5",
    ]
)
ODD_VALUES = st.sampled_from(
    [
        "",
        "abc",
        " 1",
        "1_0",
        "0x10",
        "Infinity",
        "nan",
        "1.5\n",
        "true",
        "null",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "inf",
    ]
)
LABEL_TEXT = st.text(max_size=12)
ELEMENT = st.fixed_dictionaries(
    {
        "metric": st.one_of(
            st.dictionaries(LABEL_TEXT, LABEL_TEXT, max_size=4),
            st.dictionaries(LABEL_TEXT, st.one_of(st.integers(), st.lists(LABEL_TEXT)), max_size=2),
        ),
        "value": st.tuples(
            st.one_of(
                st.integers(0, 2_000_000_000), st.floats(0, 2e9, allow_nan=False), st.just(-1)
            ),
            st.one_of(NUMBERS, NUMBERS, NUMBERS, ODD_VALUES, st.integers()),
        ).map(list),
    }
)


@given(st.lists(ELEMENT, max_size=12), st.booleans())
@example([{"metric": {"a": "}"}, "value": [1, "1"]}], False)
@example([{"metric": {"a": '"},"value":[1,"2"]},{"metric":{'}, "value": [1, "1"]}], False)
@example([{"metric": {"a": "\\"}, "value": [1, "1"]}], True)
@fuzz_settings(weight=2)
@counted("compact vector answers")
def test_a_generated_answer_reads_as_the_full_decode_reads_it(
    result: list[Any], ascii_only: bool
) -> None:
    body = compact(result, ascii_only)
    scanner = VectorScanner()
    assert same(read(body, scanner), read(body, None))
    assert same(read(body, scanner), read(body, None)), "a second read, from the label cache"


# Values as Prometheus writes them (Go's strconv.FormatFloat(v, 'f', -1, 64): the shortest
# digits that read back, never an exponent), as JSON numbers write them, and any text.
PROMETHEUS_FLOATS = st.floats(allow_nan=False, allow_infinity=False).map(
    lambda v: format(decimal.Decimal(repr(v)), "f")
)


@given(st.lists(st.one_of(PROMETHEUS_FLOATS, st.floats().map(repr), NUMBERS, ODD_VALUES)))
@example(["-0"])  # an int to orjson, whose float has lost the sign
@example(["1.5", "-0", "7"])
@example(["7", "12345678901234567890123"])  # ints, one beyond 64 bits
@example(["1.5", "1e400"])  # +Inf to float, refused by orjson
@example(["-1e-400", "1"])  # underflows to -0.0 in both
@example(["1", "true"])  # a number to JSON, not to float
@example(["1", ""])  # [1,] is not JSON
@example([""])  # [] is JSON: no values for one
@fuzz_settings(weight=2)
@counted("compact vector values")
def test_values_read_together_are_the_floats_float_reads(texts: list[str]) -> None:
    raw = [t.encode() for t in texts]
    try:
        expected: list[float] | str = [float(t) for t in raw]
    except ValueError:
        expected = "refused"
    try:
        got: list[float] | str = compact_vector._floats(raw)
    except ValueError:
        got = "refused"
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
    else:
        assert len(got) == len(expected)
        assert all(same_float(g, e) for g, e in zip(got, expected, strict=True)), texts


VALID = compact(
    [
        {"metric": {"service": "svc-1", "sentinel_part": "bad"}, "value": [1795176000, "39.6"]},
        {"metric": {"service": "ünï", "code": "5xx"}, "value": [1795176000.5, "NaN"]},
        {"metric": {}, "value": [1795176000, "+Inf"]},
    ]
)
BYTES = st.sampled_from(list(b'{}[]",:.0123456789-+eE\\ \n\x00aNIf\xff\xc3'))


@given(st.integers(0, len(VALID) - 1), st.sampled_from(["replace", "insert", "delete"]), BYTES)
@example(VALID.index(b"1795176000"), "insert", ord("0"))  # a leading zero: not JSON
@example(VALID.index(b"39.6") + 4, "insert", ord("\n"))  # a raw newline in a string
@example(len(VALID) - 3, "insert", ord(","))  # [e,e,e,]
@example(VALID.index(b"1795176000"), "insert", ord("9"))  # still a timestamp
@example(VALID.index(b'},{"metric"') + 1, "delete", 0)  # [e,ee]
@example(VALID.index(b'},{"metric"') + 1, "replace", ord(" "))  # [e ee]
@fuzz_settings(weight=5)
@counted("compact vector corruptions")
def test_a_corrupted_answer_is_read_or_refused_as_the_full_decode_does(
    position: int, edit: str, byte: int
) -> None:
    body = bytearray(VALID)
    if edit == "replace":
        body[position] = byte
    elif edit == "insert":
        body.insert(position, byte)
    else:
        del body[position]
    assert same(read(bytes(body), VectorScanner()), read(bytes(body), None))


def test_label_sets_decoded_together_cannot_run_into_each_other() -> None:
    # Each set alone is not JSON (a string left open), but together they would decode to
    # one object: the fast path must see two sets and refuse, as the full decode does.
    body = (
        b'{"status":"success","data":{"resultType":"vector","result":['
        b'{"metric":{"a":"x},"value":[1,"1"]},{"metric":{","c":"d"},"value":[1,"2"]}]}}'
    )
    assert read(body, None).startswith("BadResponse: answer is not JSON")  # type: ignore[union-attr]
    assert same(read(body, VectorScanner()), read(body, None))


@pytest.mark.parametrize("digits", [16, 17, 308, 309, 400])
def test_a_timestamp_of_any_length_is_read_or_refused_as_the_full_decode_does(
    digits: int,
) -> None:
    # orjson refuses a number too large for a double (10^309): the fast path may not
    # read past it.
    body = VALID.replace(b"1795176000.5", b"1" + b"0" * (digits - 1), 1)
    assert same(read(body, VectorScanner()), read(body, None))
    if digits >= 310:
        assert "not JSON" in str(read(body, None))


def test_label_sets_known_and_new_across_many_slices_read_as_the_full_decode_does() -> None:
    """An answer of several thousand series is read a slice at a time; a slice that holds
    both label sets read before and new ones, or sets only the older generation holds,
    must still give each sample its own labels, in order."""
    element = '{{"metric":{{"sentinel_part":"{part}","service":"svc-{n}"}},"value":[1,"{n}.5"]}}'

    def body(names: Iterable[int]) -> bytes:
        items = ",".join(element.format(part=p, n=n) for n in names for p in ("bad", "total"))
        return (
            b'{"status":"success","data":{"resultType":"vector","result":['
            + items.encode()
            + b"]}}"
        )

    scanner = VectorScanner()
    known = body(range(0, 3000, 2))  # every other service: 3,000 series
    assert same(read(known, scanner, "a"), read(known, None))
    mixed = body(range(3000))  # 6,000 series, half of them new, interleaved in every slice
    assert same(read(mixed, scanner, "b"), read(mixed, None))
    assert same(read(mixed, scanner, "b"), read(mixed, None)), "every set known now"
    scanner._old, scanner._young = scanner._young, {}  # as its bound does to the sets
    assert same(read(mixed, scanner, "b"), read(mixed, None)), "sets of the old generation"
    assert len(scanner._young) == 6000 and not scanner._old


def test_the_empty_label_set_is_decoded_once() -> None:
    scanner = VectorScanner()
    first, again = read(VALID, scanner, "a"), read(VALID, scanner, "a")
    assert isinstance(first, list) and isinstance(again, list)
    assert first[2].labels == {} and again[2].labels is first[2].labels


def test_equal_label_values_of_different_sets_are_held_once() -> None:
    """A service's name stands in each window's and part's label set: the scanner keeps
    one string for it (at 10,000 services, ~5 MB of the daemon's memory), and the labels
    read are still those of the answer."""
    scanner = VectorScanner()
    body = compact(
        [
            {"metric": {"__part": part, "service": f"svc-{i}"}, "value": [1, "1"]}
            for i in range(3)
            for part in ("bad", "total")
        ]
    )
    got = read(body, scanner, "window")
    assert isinstance(got, list) and same(got, read(body, None))
    bad, total = got[0].labels, got[1].labels
    assert bad == {"__part": "bad", "service": "svc-0"} and bad is not total
    assert bad["service"] is total["service"]
    assert got[0].labels["__part"] is got[2].labels["__part"]


def scanned(scanner: VectorScanner, query: str, names: Iterable[int]) -> list[Sample]:
    body = compact([{"metric": {"service": f"s{i}"}, "value": [1, "1"]} for i in names])
    got = read(body, scanner, query)
    assert isinstance(got, list)
    return got


def test_a_rarely_asked_querys_label_sets_are_kept_beside_a_frequent_one_that_churns() -> None:
    scanner = VectorScanner()
    slow = scanned(scanner, "every 5m", range(100))
    again = scanned(scanner, "every 5m 1h window", range(100))
    assert all(a.labels is b.labels for a, b in zip(slow, again, strict=True))
    # A group every 15 s beside it, 1,000 sets of which 50 are new at each answer: the
    # rare query's sets stay shared (never decoded again) between its answers.
    for n in range(1, 201):
        scanned(scanner, "every 15s", range(10**6 + 50 * n, 10**6 + 50 * n + 1000))
        if n % 20 == 0:
            again = scanned(scanner, "every 5m", range(100))
            assert all(a.labels is b.labels for a, b in zip(slow, again, strict=True))
    assert scanner.volume == 1100
    assert len(scanner) <= 2 * (2 * scanner.volume + 1000)  # 11,000 sets were read


def test_label_sets_that_churn_are_forgotten() -> None:
    # A query whose 100 label sets are new at every answer: the sets stay a few times what
    # the latest answers hold, not everything ever read; the stable ones stay shared.
    scanner = VectorScanner()
    stable = scanned(scanner, "stable", range(100))
    sizes = []
    for n in range(1, 200):
        scanned(scanner, "churning", range(100 * n, 100 * n + 100))
        again = scanned(scanner, "stable", range(100))
        assert all(a.labels is b.labels for a, b in zip(stable, again, strict=True))
        sizes.append(len(scanner))
    assert scanner.volume == 200
    assert max(sizes) <= 2 * (2 * scanner.volume + 1000)  # 19,900 sets were read
    # Queries asked once (the gate's, with a `since` in each), 5 new sets each: they do
    # not count, so they cannot hold the sets they bring.
    for n in range(5_000):
        scanned(scanner, f"since {n}", range(10**6 + 5 * n, 10**6 + 5 * n + 5))
    assert scanner.volume == 200
    assert len(scanner) <= 2 * (2 * scanner.volume + 1000)  # 25,000 sets were read


def test_queries_not_asked_for_hours_stop_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reload replaced every rule: the old queries' answers no longer bound the memory.
    clock = [1000.0]
    monkeypatch.setattr(compact_vector.time, "monotonic", lambda: clock[0])
    scanner = VectorScanner()
    for _ in range(2):
        scanned(scanner, "old rules", range(3000))
    assert scanner.volume == 3000
    clock[0] += compact_vector.FORGET_AFTER + compact_vector.SWEEP_EVERY
    for _ in range(2):
        scanned(scanner, "new rules", range(5000, 5100))
    assert scanner.volume == 100
    # The old rules' 3,000 sets go within two answers, not at some later reload.
    for _ in range(2):
        scanned(scanner, "new rules", range(5000, 5100))
    assert len(scanner) == 100


@pytest.fixture(scope="module")
def platform(prometheus: PrometheusServer) -> str:
    return prometheus.url


QUERIES = [
    'sum by (service) (increase(platform_requests_total{code=~"5.."}[5m]))',
    "sum by (service, code) (increase(platform_requests_total[5m]))",
    'label_replace(sum by (service) (rate(platform_requests_total[5m])), "part", "x", "", "")',
    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "sum(rate(platform_requests_total[5m])) / 0",  # NaN or +Inf, as Prometheus writes them
    "vector(1) > 2",  # an empty vector
]


@pytest.mark.parametrize("query", QUERIES)
async def test_the_real_prometheus_answers_take_the_fast_path_and_read_the_same(
    platform: str, query: str
) -> None:
    when = at(60)
    source = PrometheusSource(PrometheusConfig(url=platform))
    try:
        got = await source.instant(query, when)
        async with aiohttp.ClientSession() as session:
            params = {"query": query, "time": f"{when:.3f}"}
            async with session.post(f"{platform}/api/v1/query", data=params) as resp:
                body = await resp.read()
    finally:
        await source.close()
    scanner = VectorScanner()
    by_full = read(body, None)
    assert same(read(body, scanner), by_full) and same(got, by_full)
    assert isinstance(by_full, list)
    # Read from the bytes, not handed to the full decode: each label set was cached.
    assert len(scanner) == len({json.dumps(s.labels, sort_keys=True) for s in by_full})
    if "/ 0" in query:
        assert len(by_full) == 1 and not math.isfinite(by_full[0].value)
    if "> 2" in query:
        assert by_full == []
