"""Fuzzing the deploy gate's inputs: query strings of random and hostile parameters (PromQL
and LogQL injection attempts, quotes, backslashes, braces, newlines, U+FFFD and other
unicode, invalid percent-encodings, huge values, repeated and unknown parameters, odd
`since` values), Flagger bodies of any JSON, and odd Authorization headers, sent over HTTP
to the real gate (the daemon's assembly) in front of the real Prometheus with the scenario
data and the fake Loki.

What must hold: the answer is one of 200, 400, 401, 404, 412, 429 or 503, never a 500;
every PromQL query the gate sends parses — Prometheus' own parser says so (the query runs
without a `bad_data` error, and `/api/v1/format_query` accepts it) — and user values only
ever appear inside string literals: with every literal taken out, a query is one the
gate sends for a plain request (the same expression skeleton), both as sent and as
Prometheus itself formats it. The same holds for the LogQL sent to Loki.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from sentinel.query.promql import quote
from support.fakeloki import FakeLoki
from support.fuzzing import counted, fuzz_settings, note
from support.gatestack import TOKEN, running_gate
from support.promserver import PrometheusServer
from support.scenario import at

ALLOWED = {200, 400, 401, 404, 412, 429, 503}
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`', re.S)


RANGE = re.compile(r"\[\s*(?:\d+(?:ms|s|m|h|d|w|y))+\s*\]")


def skeleton(query: str) -> str:
    """The query with every string literal replaced by "_" and every range by [_] (the
    window follows `since`), whitespace squeezed."""
    return " ".join(RANGE.sub("[_]", STRING_LITERAL.sub('"_"', query)).split())


def compact(query: str) -> str:
    """The skeleton without whitespace (Prometheus' formatting breaks lines its own way)."""
    return "".join(skeleton(query).split())


# --- a recording proxy in front of each backend ----------------------------------------


@dataclass
class Sent:
    backend: str
    query: str
    status: int
    body: bytes


@dataclass
class Recorder:
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> list[Sent]:
        with self.lock:
            out, self.sent = self.sent, []
        return out


SESSION = web.AppKey("session", aiohttp.ClientSession)


def proxy_app(name: str, upstream: str, recorder: Recorder) -> web.Application:
    """Forwards every request to `upstream` and records each query with its answer."""

    async def forward(request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        params = {**request.query, **{k: str(v) for k, v in form.items()}}
        session = request.app[SESSION]
        async with session.request(
            request.method,
            upstream + request.path,
            params=dict(request.query),
            data={k: str(v) for k, v in form.items()} if form else None,
            headers={k: v for k, v in request.headers.items() if k.lower().startswith("x-scope")},
        ) as resp:
            body = await resp.read()
            status, ctype = resp.status, resp.content_type
        if "query" in params:
            with recorder.lock:
                recorder.sent.append(Sent(name, params["query"], status, body))
        return web.Response(status=status, body=body, content_type=ctype)

    async def session_ctx(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


# --- the gate, in a thread of its own so Hypothesis' examples are plain calls -----------


class GateThread:
    def __init__(self, workdir: Path, prometheus: PrometheusServer, loki: FakeLoki) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.recorder = Recorder()
        self.prometheus, self.loki, self.workdir = prometheus, loki, workdir
        self.monkeypatch = pytest.MonkeyPatch()
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    async def _start(self) -> None:
        self.runners = []
        urls = []
        for name, upstream in (("prometheus", self.prometheus.url), ("loki", self.loki.url)):
            runner = web.AppRunner(proxy_app(name, upstream, self.recorder), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls.append(f"http://127.0.0.1:{port}")
            self.runners.append(runner)
        extra = """\
            gate:
              request_labels: [env, status, namespace]
              max_evaluations_per_second: 1000
              max_pending_evaluations: 1000
              cache_ttl: 0s
            """
        self.gate_cm = running_gate(
            self.workdir,
            urls[0],
            self.monkeypatch,
            extra,
            urls[1],
            source_extra="retries: 0, timeout: 10s",
        )
        self.gate = await self.gate_cm.__aenter__()
        self.host, self.port = "127.0.0.1", self.gate.server.port

    def stop(self) -> None:
        async def close() -> None:
            await self.gate_cm.__aexit__(None, None, None)
            for runner in self.runners:
                await runner.cleanup()

        self.run(close())
        self.monkeypatch.undo()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        # The gate's clock moves a millisecond a request: with cache_ttl 0s no answer is a
        # cached one, so every request's own queries are sent and checked.
        self.gate.clock.now += 0.001
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            encoded_headers = {k: v.encode("utf-8") for k, v in (headers or {}).items()}
            conn.request(method, target, body=body, headers=encoded_headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def gate(
    tmp_path_factory: pytest.TempPathFactory, prometheus: PrometheusServer, loki: FakeLoki
) -> Iterator[GateThread]:
    running = GateThread(tmp_path_factory.mktemp("fuzz-gate"), prometheus, loki)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def plain_skeletons(gate: GateThread) -> dict[str, set[str]]:
    """The skeletons of the queries the gate sends for plain requests."""
    gate.recorder.take()
    for env in ("&env=prod", "&env=staging", ""):
        for extra in ("", "&namespace=chatbot", "&status=200", "&namespace=chatbot&status=200"):
            target = f"/api/v1/gate?service=chatbot-backend{env}{extra}"
            status, body = gate.request("GET", target, headers=auth())
            assert status in ALLOWED, body
    out: dict[str, set[str]] = {"prometheus": set(), "loki": set()}
    for sent in gate.recorder.take():
        out[sent.backend].add(skeleton(sent.query))
    assert out["prometheus"] and out["loki"], out
    return out


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# --- strategies -------------------------------------------------------------------------

INJECTIONS = st.sampled_from(
    [
        'prod"} or vector(1) or up{a="',
        'prod"}) or vector(1',
        "prod\\",
        'prod\\"',
        "\\\\",
        '"',
        "`",
        "prod`} |= `x",
        '"} |= "',
        "{",
        "}",
        "prod\n",
        "a\rb",
        "\t",
        "\x00",
        "\ufffd",
        "\u2028",
        "é漢字🙂",
        "$window",
        "[5m]",
        ".*",
        "prod|staging",
        "1e309",
        "NaN",
        "x" * 1024,
        "x" * 1025,
        "x" * 5000,
    ]
)
VALUES = st.one_of(INJECTIONS, st.text(max_size=30), st.just(""), st.just("prod"))
SINCES = st.one_of(
    st.sampled_from(
        [
            "", "0", "-1", "1e309", "nan", "inf", "9" * 400, "2026-11-20T14:00:00Z",
            "2026-02-30T00:00:00Z", "2026-11-20T14:00:00+25:00", "1999-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z", "now", "1700000000", "1700000000.5", " 1700000000",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.text(max_size=12),
    st.floats(min_value=at(0), max_value=at(40)).map(lambda t: f"{t:.3f}"),
)  # fmt: skip
RECENT = st.floats(min_value=at(20), max_value=at(39)).map(lambda t: f"{t:.0f}")
NAMES = st.one_of(
    st.sampled_from(
        ["service", "env", "since", "slo", "status", "namespace", "release", "revision",
         "decision_in", "mode", "canary", "baseline", "token", "limit", "__name__", "le",
         "job", "0bad", "a-b", ""]
    ),
    st.text(max_size=8),
)  # fmt: skip
SERVICES = st.one_of(st.just("chatbot-backend"), st.just("chatbot-backend"), VALUES)


def encoded(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """A raw query string: mostly a well-formed gate request with hostile values, plus
    stray, repeated and unknown parameters and raw bytes no encoder would produce."""
    pairs: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)):
        pairs.append(("service", draw(SERVICES)))
    if draw(st.integers(0, 3)):
        pairs.append(("env", draw(VALUES)))
    for label in ("namespace", "status"):  # fixed by the rules: mostly a 400
        if draw(st.integers(0, 5)) == 0:
            pairs.append((label, draw(st.one_of(VALUES, st.just("chatbot")))))
    if draw(st.booleans()):
        pairs.append(("since", draw(st.one_of(SINCES, RECENT))))
    if draw(st.integers(0, 5)) == 0:  # stray, unknown or repeated parameters
        for _ in range(draw(st.integers(1, 3))):
            pairs.append((draw(NAMES), draw(VALUES)))
    parts = [f"{encoded(k)}={encoded(v)}" for k, v in pairs]
    if draw(st.integers(0, 9)) == 0:  # raw bytes: invalid UTF-8, stray % and &
        parts.append(
            draw(
                st.sampled_from(
                    ["env=%ff%fe", "env=%ED%A0%80", "env=%", "env=%zz", "&&", "=x", "env"]
                )
            )
        )
    return "&".join(parts)


@st.composite
def flagger_bodies(draw: st.DrawFn) -> bytes:
    metadata = draw(
        st.dictionaries(
            st.one_of(NAMES, st.text(max_size=5)), st.one_of(VALUES, st.integers()), max_size=4
        )
    )
    body: Any = {
        "name": draw(SERVICES),
        "namespace": "prod",
        "phase": "Progressing",
        "metadata": metadata,
    }
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        body = draw(st.one_of(st.none(), st.integers(), st.lists(st.none()), st.text(max_size=5)))
    if kind == 2:
        body["metadata"] = draw(st.one_of(st.none(), st.integers(), st.lists(st.none())))
    return json.dumps(body).encode()


AUTHS = st.one_of(
    *[st.just(f"Bearer {TOKEN}")] * 6,
    st.just(f"bearer   {TOKEN} "),
    st.sampled_from(
        ["", "Bearer", "Bearer ", "Basic abc", f"Bearer {TOKEN}x", "Bearer é", "Bearer \ufffd"]
    ),
)


# --- the properties ---------------------------------------------------------------------


def check_sent(gate: GateThread, plain: dict[str, set[str]]) -> None:
    """Every query sent parsed, held user values only in literals (see the docstring)."""
    sent_now = gate.recorder.take()
    note("gate: PromQL queries parsed", sum(s.backend == "prometheus" for s in sent_now))
    note("gate: LogQL queries checked", sum(s.backend == "loki" for s in sent_now))
    for sent in sent_now:
        text = sent.body.decode("utf-8", "replace")
        assert not (sent.status == 400 and "parse error" in text), (sent.query, text)
        assert "bad_data" not in text or "parse" not in text, (sent.query, text)
        assert compact(sent.query) in {compact(p) for p in plain[sent.backend]}, sent.query
        if sent.backend == "prometheus":
            formatted = format_query(gate, sent.query)
            assert compact(formatted) in formatted_plain(gate, plain), (sent.query, formatted)


_FORMATTED: dict[str, str] = {}


def format_query(gate: GateThread, query: str) -> str:
    """Prometheus' own parser's rendering of `query` (400 if it does not parse)."""
    body = urllib.parse.urlencode({"query": query}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gate.prometheus.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/format_query",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200 and answer["status"] == "success", (query, answer)
    return str(answer["data"])


def formatted_plain(gate: GateThread, plain: dict[str, set[str]]) -> set[str]:
    """Skeletons of Prometheus' formatting of the plain requests' queries (one literal per
    matcher, whatever it holds: the skeleton is the same for every value)."""
    if not _FORMATTED:
        for sk in plain["prometheus"]:
            plain_query = sk.replace('"_"', quote("v")).replace("[_]", "[5m]")
            _FORMATTED[sk] = compact(format_query(gate, plain_query))
    return set(_FORMATTED.values())


@given(query=query_strings(), authorization=AUTHS)
@example(
    query="service=chatbot-backend&env=" + encoded('prod"} or vector(1) or up{a="'),
    authorization=f"Bearer {TOKEN}",
)
@example(query="service=chatbot-backend&env=" + encoded("\ufffd"), authorization=f"Bearer {TOKEN}")
@example(query="service=chatbot-backend&env=%ED%A0%80", authorization=f"Bearer {TOKEN}")
@example(query="service=chatbot-backend&env=prod%5C", authorization=f"Bearer {TOKEN}")
@example(query="service=chatbot-backend&env=prod&env=prod", authorization=f"Bearer {TOKEN}")
@example(query="service=chatbot-backend&since=1e309", authorization=f"Bearer {TOKEN}")
@fuzz_settings(6.0)
@counted("gate GET query strings")
def test_fuzz_any_gate_query_is_answered_without_a_500_and_sends_only_parsing_queries(
    gate: GateThread, plain_skeletons: dict[str, set[str]], query: str, authorization: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    status, body = gate.request("GET", f"/api/v1/gate?{query}", headers=headers)
    assert status in ALLOWED, (status, body[:500])
    if not body.startswith(b"Got more than"):  # aiohttp's own 400 for a request line > 8190
        json.loads(body)  # every answer of Sentinel's, error or verdict, is JSON
    check_sent(gate, plain_skeletons)


@given(body=flagger_bodies())
@example(
    body=json.dumps({"name": "chatbot-backend", "metadata": {"token": TOKEN, "env": '"}'}}).encode()
)
@fuzz_settings(1.0)
@counted("gate POST Flagger bodies")
def test_fuzz_any_flagger_body_is_answered_without_a_500(
    gate: GateThread, plain_skeletons: dict[str, set[str]], body: bytes
) -> None:
    headers = {"Content-Type": "application/json", **auth()}
    status, answer = gate.request("POST", "/api/v1/gate", body=body, headers=headers)
    assert status in ALLOWED, (status, answer[:500])
    check_sent(gate, plain_skeletons)


@given(query=st.one_of(st.text(max_size=20).map(lambda t: "limit=" + encoded(t)), query_strings()))
@fuzz_settings(0.3)
@counted("gate history query strings")
def test_fuzz_gate_history_answers_200_400_or_401(gate: GateThread, query: str) -> None:
    status, body = gate.request("GET", f"/api/v1/gate/history?{query}", headers=auth())
    assert status in {200, 400, 401}, (status, body[:300])


# --- regressions found by the fuzzing (each failed before its fix) ----------------------


def test_a_label_value_holding_u_fffd_is_sent_as_a_literal_prometheus_parses(
    gate: GateThread, plain_skeletons: dict[str, set[str]]
) -> None:
    """`env=%ED%A0%80` (invalid UTF-8) decodes to U+FFFD, which Prometheus' lexer reads as
    an invalid byte: every query of the request failed with "parse error: invalid UTF-8
    rune" (a 503 'source error', a cause nobody would guess). It is now written \\ufffd."""
    gate.recorder.take()
    for raw in ("%ED%A0%80", "%EF%BF%BD", "a%EF%BF%BDb"):
        status, body = gate.request(
            "GET",
            f"/api/v1/gate?service=chatbot-backend&env={raw}&since={at(30):.0f}",
            headers=auth(),
        )
        assert status in ALLOWED, body
        sent = gate.recorder.take()
        assert [s for s in sent if s.backend == "prometheus"], "no query was sent"
        for s in sent:
            assert s.status == 200, (s.query, s.body[:300])
            assert "\\ufffd" in s.query, s.query
        check_sent(gate, plain_skeletons)


@pytest.mark.parametrize(
    ("metadata", "parameter"),
    [
        ('{"env": "\\ud800"}', "metadata.env"),
        ('{"release": "\\udfff"}', "metadata.release"),
        ('{"\\ud800": "x"}', "metadata.\\ud800"),
    ],
)
def test_a_lone_surrogate_in_a_flagger_body_is_a_400_naming_it_not_a_500(
    gate: GateThread, metadata: str, parameter: str
) -> None:
    """JSON may spell a lone surrogate ("\\ud800"), which is no character: sending it to
    Prometheus or storing it in the audit raised UnicodeEncodeError, a 500."""
    body = f'{{"name": "chatbot-backend", "metadata": {metadata}}}'.encode()
    headers = {"Content-Type": "application/json", **auth()}
    status, answer = gate.request("POST", "/api/v1/gate", body=body, headers=headers)
    assert status == 400, answer
    assert json.loads(answer)["parameter"] == parameter
