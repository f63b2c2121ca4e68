"""Fuzzing what Prometheus and Loki answer, through the real HTTP source clients and the
real engine: generated answer bodies (malformed JSON, wrong result types, `NaN`/`+Inf`/
`-Inf` values as strings, missing fields, label sets and values of every JSON type),
truncated bodies (a connection closed mid-body), HTML error pages, any status code, and
stalls past the source timeout.

What must hold for every answer: the cycle returns (no exception) within the source
timeout plus a margin; every result is ok, breach or no_data; an answer that is not a
well-formed vector (bad status, not JSON, cut short, wrong envelope) makes every SLO of
that source no_data with a typed SourceError; and no instance is judged ok unless each of
its series carried a finite number ("never ok from garbage").

The hand-written cases that fixed each reason's wording are in test_garbage_answers.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from sentinel.config import LokiConfig, PrometheusConfig
from sentinel.errors import SourceError
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import Status
from sentinel.evaluate.wiring import renderers
from sentinel.query.promql import PART_LABEL
from sentinel.rules.model import (
    SLO,
    ErrorRatioSLI,
    LatencySLI,
    LogRatioSLI,
    RatioSLI,
    Selector,
)
from sentinel.sources.loki import LokiSource
from sentinel.sources.prometheus import PrometheusSource
from support.fuzzing import counted, fuzz_settings
from support.threaded import ThreadedServer

AT = 1_700_000_000.0
TIMEOUT = 0.5  # the sources' timeout: a stall costs this much per example

RATIO = SLO(
    service="platform",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    group_by=("service",),
)
LATENCY = SLO(
    service="chatbot-backend",
    name="p95",
    sli=LatencySLI(Selector("latency_seconds"), 0.95),
    threshold=1.5,
    window=300,
)
ERROR_RATIO = SLO(
    service="s",
    name="errors",
    sli=ErrorRatioSLI("sum(rate(errors[$window])) / sum(rate(requests[$window]))"),
    threshold=0.01,
    window=300,
)
LOG_RATIO = SLO(
    service="chatbot-backend",
    name="log-errors",
    sli=LogRatioSLI('{app="chatbot"}', "| json", '| level="error"', None),
    threshold=0.05,
    window=300,
    group_by=("service",),
)
SLOS = (RATIO, LATENCY, ERROR_RATIO, LOG_RATIO)


# --- a backend that answers whatever the example says ----------------------------------


@dataclass
class Script:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    truncate: bool = False  # promise more bytes than sent, then close the connection
    stall: bool = False  # answer nothing until well past the source timeout


class ScriptedBackend(ThreadedServer):
    """Prometheus' `/api/v1/query` and Loki's `/loki/api/v1/query`, both answering the
    current script (one per source path, so the two sources can be given different
    answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Script] = {}
        self.lock = threading.Lock()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._answer)
        app.router.add_route("*", "/loki/api/v1/query", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        with self.lock:
            script = self.scripts.get(request.path, Script(body=b"{}"))
        if script.stall:
            await asyncio.sleep(TIMEOUT * 4)
        if script.truncate:
            response = web.StreamResponse(status=script.status)
            response.content_type = script.content_type
            response.content_length = len(script.body) + 100
            await response.prepare(request)
            await response.write(script.body)
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(
            status=script.status, body=script.body, content_type=script.content_type
        )


@pytest.fixture(scope="module")
def backend() -> Iterator[ScriptedBackend]:
    server = ScriptedBackend().start()
    yield server
    server.stop()


# --- strategies -------------------------------------------------------------------------

NUMBER_STRINGS = st.one_of(
    st.sampled_from(["NaN", "+Inf", "-Inf", "Inf", "inf", "nan", "1e308", "-1e308", "1e309"]),
    st.sampled_from(["0", "-0", "1", "100", "0.5", "-3", "", " 1", "0x10", "1_000", "١"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1e6).map(str),
    st.text(max_size=10),
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
PARTS = st.sampled_from(["bad", "total", "value", "events", "ratio", "other"])
LABEL_VALUES = st.one_of(st.sampled_from(["a", "b", ""]), st.text(max_size=6), ANY_JSON)


@st.composite
def labels(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(ANY_JSON)  # not an object at all
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out[PART_LABEL] = draw(st.one_of(PARTS, LABEL_VALUES))
    if draw(st.booleans()):
        out["service"] = draw(LABEL_VALUES)
    out.update(draw(st.dictionaries(st.text(max_size=6), LABEL_VALUES, max_size=2)))
    return out


@st.composite
def sample_value(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        return [draw(st.one_of(st.just(AT), st.floats(), ANY_JSON)), draw(NUMBER_STRINGS)]
    if kind == 7:
        return [AT, draw(ANY_JSON)]
    return draw(ANY_JSON)


@st.composite
def elements(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 29)) == 0:
        return draw(ANY_JSON)
    element: dict[str, Any] = {}
    if draw(st.integers(0, 19)):
        element["metric"] = draw(labels())
    if draw(st.integers(0, 19)):
        element["value"] = draw(sample_value())
    if draw(st.integers(0, 9)) == 0:
        element["values"] = [draw(sample_value())]
    return element


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A Prometheus/Loki answer envelope, right or wrong at every level."""
    result = draw(st.lists(elements(), max_size=12))
    kind = draw(
        st.one_of(
            st.just("vector"),
            st.just("vector"),
            st.sampled_from(["matrix", "scalar", "string", "streams"]),
            ANY_JSON,
        )
    )
    data: Any = {"resultType": kind, "result": result}
    shape = draw(st.integers(0, 19))
    if shape == 0:
        data = draw(ANY_JSON)
    elif shape == 1:
        del data["resultType"]
    elif shape == 2:
        data["result"] = draw(ANY_JSON)
    body: Any = {"status": "success", "data": data}
    shape = draw(st.integers(0, 19))
    if shape == 0:
        body["status"] = draw(st.one_of(st.just("error"), ANY_JSON))
    elif shape == 1:
        del body["data"]
    elif shape == 2:
        body = draw(ANY_JSON)
    elif shape == 3:
        body["warnings"] = draw(ANY_JSON)
    return body


HTML = st.sampled_from(
    [
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        b"<!DOCTYPE html><html><body><h1>Sign in</h1><form>...</form></body></html>",
        b"<html><body>404 page not found</body></html>",
    ]
)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    kind = draw(st.integers(0, 19))
    status = 200
    if draw(st.integers(0, 5)) == 0:
        status = draw(
            st.sampled_from([204, 301, 302, 400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504])
        )
    if kind <= 11:
        body = json.dumps(draw(envelopes())).encode()  # NaN/Infinity literals too
    elif kind <= 13:  # cut short: a proxy timing out mid-answer
        full = json.dumps(draw(envelopes())).encode()
        body = full[: draw(st.integers(0, max(0, len(full) - 1)))]
    elif kind == 14:
        return Script(status, draw(HTML), "text/html")
    elif kind == 15:
        body = draw(st.binary(max_size=64))
    elif kind == 16:
        return Script(status, json.dumps(draw(envelopes())).encode(), truncate=True)
    elif kind == 17:
        return Script(status, b"", stall=True)
    else:
        body = json.dumps(draw(ANY_JSON)).encode()
    return Script(status, body, draw(st.sampled_from(["application/json", "text/plain"])))


# --- the property -----------------------------------------------------------------------


def well_formed(script: Script) -> list[dict[str, Any]] | None:
    """The vector's elements if the answer is a well-formed success, else None."""
    if script.status != 200 or script.truncate or script.stall:
        return None
    try:
        body = json.loads(script.body)
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) and body.get("status") == "success" else None
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        return None
    result = data.get("result")
    return result if isinstance(result, list) else None


def finite_number(raw: Any) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        return math.isfinite(float(raw))
    except ValueError:
        return False


def instance_series(result: list[Any], instance: dict[str, str]) -> list[Any]:
    """The elements whose labels (without the part label) are the instance's labels."""
    out = []
    for element in result:
        metric = element.get("metric") if isinstance(element, dict) else None
        if not isinstance(metric, dict):
            continue
        own = {k: v for k, v in metric.items() if k != PART_LABEL}
        if all(own.get(k) == v for k, v in instance.items()):
            out.append(element)
    return out


async def evaluate(backend: ScriptedBackend) -> tuple[Any, float]:
    prom = PrometheusSource(
        PrometheusConfig(url=backend.url, retries=0, timeout=TIMEOUT, max_series=10_000)
    )
    loki = LokiSource(LokiConfig(url=backend.url, retries=0, timeout=TIMEOUT, max_series=10_000))
    engine = Engine({"prometheus": prom, "loki": loki}, renderers())
    started = time.monotonic()
    try:
        report = await engine.evaluate_once(list(SLOS), AT)
    finally:
        await prom.close()
        await loki.close()
    return report, time.monotonic() - started


def check_answer(backend: ScriptedBackend, prom: Script, loki: Script) -> None:
    with backend.lock:
        backend.scripts = {"/api/v1/query": prom, "/loki/api/v1/query": loki}
    report, took = asyncio.run(evaluate(backend))
    # The cycle deadline: a stall costs the source timeout, never more (+ margin for CI).
    assert took < TIMEOUT + 5.0, took
    for slo in SLOS:
        script = loki if slo is LOG_RATIO else prom
        results = [r for r in report.results if r.slo == slo.name]
        assert results, f"{slo.key}: no result at all"
        for r in results:
            assert r.status in (Status.OK, Status.BREACH, Status.NO_DATA)
            if r.status is Status.NO_DATA:
                assert r.reason, r
        vector = well_formed(script)
        if vector is None:
            assert [r.status for r in results] == [Status.NO_DATA] * len(results), results
            assert isinstance(report.errors.get(slo.key), SourceError), report.errors
            continue
        for r in results:
            if r.status is Status.NO_DATA:
                continue
            assert r.value is not None and math.isfinite(r.value), r
            series = instance_series(vector, dict(r.labels))
            assert series, f"{r} judged from no series"
            for element in series:
                value = element.get("value")
                assert isinstance(value, list) and len(value) == 2, (r, element)
                assert finite_number(value[1]), f"{r.status} from {element}"


BIG = json.dumps(
    {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {PART_LABEL: "total", "service": f"s{i}"}, "value": [AT, "1"]}
                for i in range(100_000)
            ],
        },
    }
).encode()


@given(prom=scripts(), loki=scripts())
@example(prom=Script(body=BIG), loki=Script(body=BIG))
@example(prom=Script(stall=True), loki=Script(stall=True))
@example(prom=Script(body=b'{"status":"success","data":'), loki=Script(truncate=True, body=b"{"))
@example(
    prom=Script(
        body=json.dumps(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {PART_LABEL: "bad", "service": "a"}, "value": [AT, "NaN"]},
                        {"metric": {PART_LABEL: "total", "service": "a"}, "value": [AT, "NaN"]},
                        {"metric": {PART_LABEL: "value"}, "value": [AT, "+Inf"]},
                        {"metric": {PART_LABEL: "events"}, "value": [AT, "-Inf"]},
                        {"metric": {PART_LABEL: "ratio"}, "value": [AT, "NaN"]},
                    ],
                },
            }
        ).encode()
    ),
    loki=Script(status=500, body=b"<html>oops</html>", content_type="text/html"),
)
@fuzz_settings(3.0)
@counted("Prometheus+Loki answers (engine)")
def test_fuzz_no_answer_crashes_a_cycle_or_is_judged_ok_unless_well_formed(
    backend: ScriptedBackend, prom: Script, loki: Script
) -> None:
    check_answer(backend, prom, loki)
