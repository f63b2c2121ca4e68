"""A large answer is decoded and parsed without holding the event loop: gate and health
requests share the loop with the cycles, and at 1,000 services each answer's decode and
parse held it for 10-40 ms in one piece (the gate's p99 while cycles run). It is parsed on
the loop in slices, not in a worker thread (a thread running Python took the interpreter
each time the loop made a system call). Spoken to through the real HTTP source client
over loopback, on both of its paths: an answer in the compact layout Prometheus writes is
read from its bytes (sentinel/sources/compact_vector.py), any other is decoded and parsed
in full."""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any

import pytest

from sentinel.config import PrometheusConfig
from sentinel.daemon import collector
from sentinel.daemon.runner import SWITCH_INTERVAL
from sentinel.errors import BadResponse
from sentinel.sources import compact_vector, prometheus
from sentinel.sources.compact_vector import VectorScanner
from sentinel.sources.http import HTTPQueryClient
from sentinel.sources.prometheus import PrometheusSource
from support.fakeprom import FakePrometheus, element, vector_body

SERIES = 20_000


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    server = FakePrometheus().start()
    yield server
    server.stop()


@pytest.fixture(params=["compact", "warnings"])
def layout(request: pytest.FixtureRequest) -> str:
    """The answers' layout: compact JSON as Prometheus writes it (the fast path), or the
    same with warnings after the data, which the fast path leaves to the full decode and
    parse."""
    return str(request.param)


def scripted(prom: FakePrometheus, result: list[object], layout: str) -> None:
    prom.answer(result, warnings=["partial answer"] if layout == "warnings" else None)


def wrap_parse(
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    wrapper: Callable[[Callable[..., Generator[None, None, Any]]], Callable[..., Any]],
) -> None:
    """Wraps the step that reads the answers of `layout` (a generator function)."""
    if layout == "compact":
        monkeypatch.setattr(VectorScanner, "scan", wrapper(VectorScanner.scan))
    else:
        monkeypatch.setattr(prometheus, "vector_steps", wrapper(prometheus.vector_steps))


@pytest.fixture(autouse=True)
def as_the_daemon_runs() -> Iterator[None]:
    """The collector schedule and switch interval `sentinel run` sets."""
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    collector.tune()
    sys.setswitchinterval(SWITCH_INTERVAL)
    yield
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


def big_answer(bad_last: bool = False) -> list[object]:
    result: list[object] = [
        element({"service": f"svc-{i:05d}", "code": "500"}, f"{i * 0.25}") for i in range(SERIES)
    ]
    if bad_last:
        result[-1] = element({"service": ["not", "a", "string"]}, "1")
    return result


async def ask_while_ticking(source: PrometheusSource, query: str) -> tuple[object, float, float]:
    """(answer or exception, longest the loop went without running the ticker, whole call)."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    try:
        got: object = await source.instant(query, 1_700_000_000)
    except BadResponse as exc:
        got = exc
    ended = time.perf_counter()
    ticking.cancel()
    during = [started, *(t for t in ticks if started <= t <= ended), ended]
    longest = max(b - a for a, b in itertools.pairwise(during))
    return got, longest, ended - started


async def big_answer_beside(
    prom: FakePrometheus, other: Coroutine[Any, Any, None], layout: str = "compact"
) -> Any:
    """The big answer asked through the real client while `other` runs on the loop."""
    scripted(prom, big_answer(), layout)
    source = PrometheusSource(PrometheusConfig(url=prom.url, max_series=100_000))
    beside = asyncio.ensure_future(other)
    try:
        return await source.instant("errors_total", 1_700_000_000)
    finally:
        beside.cancel()
        await source.close()


async def test_a_large_answer_leaves_the_loop_free_while_it_is_parsed(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    threads: set[int] = set()
    parsing: list[tuple[float, float]] = []

    def recording(steps: Callable[..., Generator[None, None, Any]]) -> Callable[..., Any]:
        def recorded(*args: Any) -> Generator[None, None, Any]:
            threads.add(threading.get_ident())
            started = time.perf_counter()
            out = yield from steps(*args)
            parsing.append((started, time.perf_counter()))
            return out

        return recorded

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    wrap_parse(monkeypatch, layout, recording)
    got = await big_answer_beside(prom, ticker(), layout)
    assert isinstance(got, list) and len(got) == SERIES
    assert got[-1].labels == {"service": f"svc-{SERIES - 1:05d}", "code": "500"}
    assert got[-1].value == (SERIES - 1) * 0.25
    assert threads == {threading.get_ident()}, "parsed in a worker thread"
    # Other coroutines ran while the answer was parsed (in one piece: none did), and the
    # loop's longest wait was a slice and a chunk, not the parse.
    ((start, end),) = parsing
    between = [start, *(t for t in ticks if start <= t <= end), end]
    assert len(between) > 5, f"{len(between) - 2} turns of the loop in {end - start:.3f} s"
    longest = max(b - a for a, b in itertools.pairwise(between))
    assert longest < 0.5 * (end - start), (
        f"held {longest * 1000:.0f} of {(end - start) * 1000:.0f} ms"
    )


async def test_a_malformed_large_answer_is_still_refused_and_marks_the_source_unhealthy(
    prom: FakePrometheus, layout: str
) -> None:
    # In the compact layout the last label set is read only when its turn comes: the
    # answer then goes to the full decode, whose error it is.
    scripted(prom, big_answer(bad_last=True), layout)
    source = PrometheusSource(PrometheusConfig(url=prom.url, max_series=100_000))
    try:
        got, _, _ = await ask_while_ticking(source, "errors_total")
    finally:
        await source.close()
    assert isinstance(got, BadResponse)
    assert "malformed vector element" in got.detail
    assert source.health.status == "unhealthy"
    assert "malformed vector element" in (source.health.last_error or "")


async def test_the_backends_latency_in_health_excludes_sentinels_own_parse(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    # /health/detailed and the status UI show it as Prometheus' latency: Sentinel's parse
    # (and its wait for the interpreter under load) is not the backend being slow.
    def slowed(steps: Callable[..., Generator[None, None, Any]]) -> Callable[..., Any]:
        def slow_parse(*args: Any) -> Generator[None, None, Any]:
            time.sleep(0.5)
            return (yield from steps(*args))

        return slow_parse

    wrap_parse(monkeypatch, layout, slowed)
    scripted(prom, big_answer(), layout)
    source = PrometheusSource(PrometheusConfig(url=prom.url, max_series=100_000))
    try:
        started = time.perf_counter()
        got = await source.instant("errors_total", 1_700_000_000)
        took = time.perf_counter() - started
    finally:
        await source.close()
    assert len(got) == SERIES and took >= 0.5
    assert source.health.status == "healthy"
    assert source.health.last_latency_ms is not None
    assert source.health.last_latency_ms < 500


async def test_answers_arriving_together_are_read_two_at_a_time(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    # Each decoded envelope is ~10x its answer's size in Python objects, a compact
    # answer's elements ~3x: the answers that wait for a parse wait as bytes.
    now, most = 0, 0

    def count_in() -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        # The server thread sends the other answers meanwhile: without this, whether the
        # next one had arrived when this one first gave up the loop was a race.
        time.sleep(0.05)

    def counting(steps: Callable[..., Generator[None, None, Any]]) -> Callable[..., Any]:
        def counted(*args: Any) -> Generator[None, None, Any]:
            nonlocal now
            if layout == "compact":
                count_in()
            try:
                out = yield from steps(*args)
                for _ in range(5):  # a longer parse, in slices: the others pile up behind
                    time.sleep(0.01)
                    yield
                return out
            finally:
                now -= 1

        return counted

    if layout == "warnings":
        payload = HTTPQueryClient._payload

        def decoded(*args: Any) -> Any:
            count_in()
            return payload(*args)

        monkeypatch.setattr(HTTPQueryClient, "_payload", decoded)
    wrap_parse(monkeypatch, layout, counting)
    scripted(prom, big_answer(), layout)
    config = PrometheusConfig(url=prom.url, max_series=100_000, max_in_flight=6)
    source = PrometheusSource(config)
    try:
        got = await asyncio.gather(*(source.instant(f"q{i}", 1_700_000_000) for i in range(6)))
    finally:
        await source.close()
    assert [len(g) for g in got] == [SERIES] * 6
    assert most == 2


def logged(events: list[str], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, logging `name` in `events` once each call returns."""

    def call(*args: Any) -> Any:
        out = function(*args)
        events.append(name)
        return out

    return call


async def ticking(events: list[str]) -> None:
    """Logs each turn of the loop it gets."""
    while True:
        events.append("tick")
        await asyncio.sleep(0)


async def test_the_loop_gets_a_turn_between_a_large_answers_decode_and_its_parse(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decode is one C call (~10 ms at 20,000 series): a slice of its own, not the
    start of one the parse's first chunk then adds to."""
    events: list[str] = []
    steps = prometheus.vector_steps

    def parsed(*args: Any) -> Generator[None, None, Any]:
        events.append("parsing")  # when the parse starts, not when it is made
        return (yield from steps(*args))

    monkeypatch.setattr(
        HTTPQueryClient, "_payload", logged(events, "decoded", HTTPQueryClient._payload)
    )
    monkeypatch.setattr(prometheus, "vector_steps", parsed)
    got = await big_answer_beside(prom, ticking(events), "warnings")
    assert len(got) == SERIES
    decode = events.index("decoded")
    assert "tick" in events[decode : events.index("parsing", decode)]


async def test_the_loop_gets_a_turn_after_the_pass_over_a_compact_answer(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path splits the whole answer into its elements in one C call (~7 ms at
    20,000 series): a slice of its own, as the decode is; so is each chunk of samples
    after it, and the one call that decodes the label sets it had not seen."""
    events: list[str] = []
    monkeypatch.setattr(
        compact_vector, "elements", logged(events, "split", compact_vector.elements)
    )
    monkeypatch.setattr(compact_vector, "_labels", logged(events, "labels", compact_vector._labels))
    remember = logged(events, "read", VectorScanner._remember)
    monkeypatch.setattr(VectorScanner, "_remember", remember)
    got = await big_answer_beside(prom, ticking(events), "compact")
    assert len(got) == SERIES
    split, labels, read = (events.index(e) for e in ("split", "labels", "read"))
    assert events.count("labels") == 1  # every label set of this answer, in one call
    # 20 chunks of samples between the split and the label sets: more than one slice.
    assert events[split:labels].count("tick") >= 2
    assert "tick" in events[labels:read]


async def test_a_compact_looking_answer_it_cannot_read_is_split_then_decoded_in_two_slices(
    prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right head and tail, one element the pattern refuses (spaces): the split passes
    # over the whole answer and finds it; the full decode comes in a slice of its own.
    events: list[str] = []
    monkeypatch.setattr(
        compact_vector, "elements", logged(events, "split", compact_vector.elements)
    )
    monkeypatch.setattr(
        HTTPQueryClient, "_payload", logged(events, "decoded", HTTPQueryClient._payload)
    )
    result = big_answer()
    prom.answer(vector_body(result).replace(b'"value":[', b'"value": [', 1))
    source = PrometheusSource(PrometheusConfig(url=prom.url, max_series=100_000))
    ticker = asyncio.ensure_future(ticking(events))
    try:
        got = await source.instant("errors_total", 1_700_000_000)
    finally:
        ticker.cancel()
        await source.close()
    assert len(got) == SERIES
    assert "tick" in events[events.index("split") : events.index("decoded")]
