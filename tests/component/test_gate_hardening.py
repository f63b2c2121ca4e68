"""The gate as an attacker or a flood of pipelines meets it: a request can only narrow
what a rule measures, every odd `since` is a 400 before any query, fresh evaluations are
budgeted (429 beyond), a slow source is answered `pending` by the deadline, gate queries
never take the scheduled cycles' source slots, and the audit trail is pruned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from sentinel.alerting.store import Store
from sentinel.errors import GateOverloaded
from sentinel.gate.budget import EvaluationBudget
from sentinel.gate.service import Gate
from support.fakeloki import FakeLoki
from support.fakeprom import FakePrometheus, element
from support.gatestack import TOKEN, GateClient, make_client, running_gate
from support.promserver import PrometheusServer
from support.scenario import at
from support.stallprom import stalling_prometheus

# The README's example rule: the histogram is fixed to one route, the file to env=prod.
ROUTE_RULE = """\
    version: sentinel/v1
    service: shop
    labels: {env: prod, namespace: shop}
    slos:
      - name: checkout-latency
        sli:
          latency:
            histogram: http_request_duration_seconds
            quantile: 0.95
            matchers: {route: /api/chat}
        threshold: 1s
        window: 5m
"""
RULES = {"shop.yaml": ROUTE_RULE}
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def wait_until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def chatbot(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    extra = "gate: {request_labels: [env, status, namespace]}\n"
    async for client in make_client(tmp_path, prometheus.url, monkeypatch, extra, loki.url):
        yield client


# -- requests only narrow (21.1) --------------------------------------------------------


async def test_a_label_not_in_gate_request_labels_is_refused_naming_it_and_the_allowed(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(tmp_path, prometheus.url, monkeypatch, "", loki.url) as gate:
        before = prometheus.query_count()
        status, body, _ = await gate.get(service="chatbot-backend", route="/healthz")
        assert status == 400
        assert body["parameter"] == "route"
        assert "gate.request_labels (env)" in body["error"]
        assert "since" in body["error"] and "slo" in body["error"]
        assert prometheus.query_count() == before


async def test_status_200_cannot_turn_the_5xx_selector_into_good_traffic(
    chatbot: GateClient, prometheus: PrometheusServer
) -> None:
    chatbot.clock.now = at(130)  # inside the 5xx burst
    before = prometheus.query_count()
    status, body, _ = await chatbot.get(
        service="chatbot-backend", status="200", since=str(int(at(125))), slo="http-5xx-ratio"
    )
    assert status == 400, body
    assert body["parameter"] == "status"
    assert 'http-5xx-ratio already selects status=~"5.."' in body["error"]
    assert prometheus.query_count() == before
    # Without it, the burst is judged as it is.
    status, body, _ = await chatbot.get(
        service="chatbot-backend", since=str(int(at(125))), slo="http-5xx-ratio"
    )
    assert status == 412, body


async def test_a_label_the_rule_fixes_to_another_value_is_refused(chatbot: GateClient) -> None:
    status, body, _ = await chatbot.get(service="chatbot-backend", namespace="other")
    assert status == 400
    assert body["parameter"] == "namespace"
    assert 'already selects namespace="chatbot"' in body["error"]
    status, body, _ = await chatbot.get(service="chatbot-backend", namespace="chatbot", env="prod")
    assert status != 400, body


async def test_the_readme_route_example_cannot_judge_other_traffic(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {request_labels: [env, route]}\n"
    async with running_gate(tmp_path, prometheus.url, monkeypatch, extra, rules=RULES) as gate:
        status, body, _ = await gate.get(service="shop", route="/healthz", env="staging")
        assert status == 400
        assert body["parameter"] in ("env", "route")
        assert "a request can only narrow" in body["error"]
        status, body, _ = await gate.get(service="shop", route="/api/chat", env="prod")
        assert status == 503 and body["decision"] == "pending"  # no such series: no data


async def test_a_parameter_given_twice_is_refused(chatbot: GateClient) -> None:
    params = [("service", "chatbot-backend"), ("env", "prod"), ("env", "staging")]
    async with chatbot.session.get(
        chatbot.server.make_url("/api/v1/gate"), params=params, headers=HEADERS
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "env: given more than once"


async def test_an_empty_label_value_is_refused(chatbot: GateClient) -> None:
    # env="" would select the series WITHOUT an env label: other traffic.
    status, body, _ = await chatbot.get(service="chatbot-backend", env="")
    assert (status, body["parameter"]) == (400, "env")


# -- since (21.3) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    [
        "nan",
        "inf",
        "-inf",
        "-1e20",
        "-9223372036854775808",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1999-12-31T23:59:59Z",
        "0",
        str(int(at(40) + 3600)),  # an hour ahead of the daemon's clock
    ],
)
async def test_every_odd_since_is_a_400_naming_it_before_any_query(
    chatbot: GateClient, prometheus: PrometheusServer, loki: FakeLoki, since: str
) -> None:
    prom_before, loki_before = prometheus.query_count(), len(loki.queries)
    status, body, _ = await chatbot.get(service="chatbot-backend", since=since)
    assert status == 400, body
    assert body["parameter"] == "since"
    assert body["error"].startswith("since: ")
    assert prometheus.query_count() == prom_before
    assert len(loki.queries) == loki_before


async def test_a_since_slightly_ahead_is_pending_without_a_query(
    chatbot: GateClient, prometheus: PrometheusServer
) -> None:
    before = prometheus.query_count()
    status, body, headers = await chatbot.get(
        service="chatbot-backend", since=str(int(at(40) + 120))
    )
    assert status == 503 and body["reasons"] == ["only 0s since deploy"]
    assert headers["Retry-After"] == "30"
    assert prometheus.query_count() == before


async def test_sinces_older_than_every_window_share_one_evaluation(
    chatbot: GateClient, prometheus: PrometheusServer
) -> None:
    before = prometheus.query_count()
    for minutes in (1, 2, 3):
        status, body, _ = await chatbot.get(service="chatbot-backend", since=str(int(at(minutes))))
        assert status == 200, body
        assert body["window"]["from"] == f"2026-11-20T12:0{minutes}:00Z"
    assert prometheus.query_count() - before == 4  # one evaluation: 4 PromQL gate SLOs


# -- the evaluation budget (21.4) -------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_burst_then_reserves_future_tokens() -> None:
    clock = FakeMonotonic()
    budget = EvaluationBudget(rate=2, max_pending=10, clock=clock)
    assert [budget.reserve(5.0) for _ in range(2)] == [0.0, 0.0]
    assert budget.reserve(5.0) == pytest.approx(0.5)
    assert budget.reserve(5.0) == pytest.approx(1.0)
    with pytest.raises(GateOverloaded) as refused:
        budget.reserve(1.2)  # the next token is 1.5 s away: past the deadline
    assert refused.value.retry_after == 2
    clock.now += 10  # refilled, but never above the burst
    assert budget.tokens == pytest.approx(-2.0)
    assert [budget.reserve(0.0) for _ in range(2)] == [0.0, 0.0]


def test_the_pending_cap_refuses_until_an_evaluation_finishes() -> None:
    budget = EvaluationBudget(rate=1000, max_pending=2, clock=FakeMonotonic())
    budget.reserve(1.0)
    budget.reserve(1.0)
    with pytest.raises(GateOverloaded, match=r"gate\.max_pending_evaluations"):
        budget.reserve(1.0)
    budget.release()
    assert budget.reserve(1.0) == 0.0


async def test_distinct_requests_beyond_the_budget_get_429_with_retry_after(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {max_evaluations_per_second: 0.01}\n"
    async with running_gate(tmp_path, prometheus.url, monkeypatch, extra, loki.url) as gate:
        before = prometheus.query_count()
        first = await gate.get(service="chatbot-backend", since=str(int(at(35))))
        assert first[0] == 200
        status, body, headers = await gate.get(service="chatbot-backend", since=str(int(at(36))))
        assert status == 429, body
        assert body["decision"] is None
        assert "gate.max_evaluations_per_second" in body["error"]
        assert int(headers["Retry-After"]) >= 90
        # A request the cache answers costs no evaluation: still served.
        assert (await gate.get(service="chatbot-backend", since=str(int(at(35)))))[0] == 200
        assert prometheus.query_count() - before == 4


async def test_requests_within_the_budget_wait_briefly_and_are_all_answered(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {max_evaluations_per_second: 4}\n"
    async with running_gate(tmp_path, prometheus.url, monkeypatch, extra, loki.url) as gate:
        answers = await asyncio.gather(
            *(gate.get(service="chatbot-backend", since=str(int(at(32 + i)))) for i in range(6))
        )
        assert [a[0] for a in answers] == [200] * 6


async def test_a_stalled_source_is_answered_pending_by_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {deadline: 300ms, source_down_after: 10m, max_evaluations_per_second: 100}\n"
    async with (
        stalling_prometheus(stall=lambda q: True) as prom,
        running_gate(
            tmp_path, prom.url, monkeypatch, extra, rules=RULES, source_extra="timeout: 60s"
        ) as gate,
    ):
        gate.clock.now = at(40)
        timeout = aiohttp.ClientTimeout(total=10)

        async def ask(i: int) -> tuple[int, dict[str, object], str | None]:
            async with gate.session.get(
                gate.server.make_url("/api/v1/gate"),
                params={"service": "shop", "since": str(int(at(36) + 10 * i))},
                headers=HEADERS,
                timeout=timeout,
            ) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        answers = await asyncio.gather(*(ask(i) for i in range(12)))
        pending = [a for a in answers if a[0] == 503]
        refused = [a for a in answers if a[0] == 429]
        # gate.max_pending_evaluations (8) evaluations wait on the source; the rest
        # are refused at once instead of queueing behind them.
        assert (len(pending), len(refused)) == (8, 4)
        for _, body, retry_after in pending:
            assert body["decision"] == "pending"
            assert "evaluation still running after 300ms" in str(body["reasons"])
            assert retry_after == "1"
        gate.built.gate.flush_audit()
        history = gate.built.store.gate_history("shop", 100)
        assert {h["decision"] for h in history} == {"pending"}


async def test_a_late_evaluation_is_kept_for_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "gate: {deadline: 100ms, source_down_after: 10m}\n"
    async with (
        stalling_prometheus(delay=0.5) as prom,
        running_gate(tmp_path, prom.url, monkeypatch, extra, rules=RULES) as gate,
    ):
        params = {"service": "shop", "since": str(int(at(10)))}
        status, body, _ = await gate.get(**params)
        assert status == 503 and "still running" in body["reasons"][0]
        await wait_until(lambda: len(prom.answered) == 1, "the evaluation to finish")
        await wait_until(lambda: not gate.built.gate._inflight, "the evaluation to be kept")
        status, body, _ = await gate.get(**params)
        assert status == 503
        assert "still running" not in str(body["reasons"])
        assert body["slos"][0]["status"] == "no_data"
        assert len(prom.queries) == 1


async def test_scheduled_cycles_keep_their_source_slots_under_gate_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = """\
        evaluation: {cycle_timeout: 5s}
        gate: {deadline: 200ms, source_down_after: 10m}
        """
    async with (
        stalling_prometheus(stall=lambda q: 'env="stall' in q) as prom,
        running_gate(
            tmp_path,
            prom.url,
            monkeypatch,
            extra,
            rules={"shop.yaml": ROUTE_RULE.replace("env: prod, ", "")},
            source_extra="timeout: 60s, retries: 0, max_in_flight: 1",
        ) as gate,
    ):
        answers = await asyncio.gather(
            *(gate.get(service="shop", env=f"stall-{i}") for i in range(5))
        )
        assert {a[0] for a in answers} == {503}
        # The gate's own clients hold gate.max_in_flight (2) stalled queries...
        await wait_until(lambda: len(prom.queries) == 2, "two stalled gate queries")
        # ...and the scheduled cycle still gets its one slot.
        group = gate.built.daemon.rules.groups[0].name
        await gate.built.daemon.run_group(group)
        state = gate.built.daemon.group_status[group]
        assert state.last_outcome == "ok", state.last_error
        assert len(prom.answered) == 1
        assert sum('env="stall' in q for q in prom.queries) == 2


# -- audit retention (21.4) -------------------------------------------------------------


def _rows(at_times: list[float], service: str = "svc") -> list[tuple[float, str, str, str, str]]:
    return [
        (t, service, "pass", f'{{"service": "{service}", "n": {i}}}', f'{{"n": {i}}}')
        for i, t in enumerate(at_times)
    ]


def test_pruning_works_in_batches_of_the_oldest_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.record_gates(_rows([100.0 + i for i in range(25)]))
    assert [store.prune_gate_audit(1000.0, 100, limit=10) for _ in range(4)] == [10, 10, 5, 0]
    store.record_gates(_rows([2000.0 + i for i in range(5)]))
    assert store.prune_gate_audit(0.0, 2, limit=10) == 3
    assert [h["at"] for h in store.gate_history(None, 10)] == [2004.0, 2003.0]
    store.close()


def test_pruning_drops_rows_past_retention_then_the_oldest_beyond_the_cap(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.record_gates(_rows([100.0, 200.0, 300.0, 400.0, 500.0]))
    assert store.prune_gate_audit(older_than=250.0, max_rows=2) == 3
    assert [h["at"] for h in store.gate_history(None, 10)] == [500.0, 400.0]
    # Texts nobody refers to are gone; the kept rows still read back whole.
    assert store.db.execute("SELECT COUNT(*) FROM gate_blobs").fetchone()[0] == 4
    # A text stored before the prune and seen again afterwards is stored again.
    store.record_gates(_rows([600.0]))
    assert store.gate_history(None, 1)[0]["inputs"] == {"service": "svc", "n": 0}
    store.close()


async def test_audit_retention_applies_at_start_and_while_the_gate_is_used(
    tmp_path: Path, prometheus: PrometheusServer, loki: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = 86400.0
    store = Store(tmp_path / "state.db")
    store.record_gates(_rows([at(40) - 40 * day, at(40) - 1 * day], "chatbot-backend"))
    store.close()
    extra = "gate: {audit_retention: 30d, audit_max_rows: 100}\n"
    monkeypatch.setattr(Gate, "prune_every", 0.05)
    async with running_gate(tmp_path, prometheus.url, monkeypatch, extra, loki.url) as gate:

        async def history() -> list[float]:
            _, rows, _ = await gate.get("/api/v1/gate/history", service="chatbot-backend")
            return [r["at"] for r in rows]

        assert await history() == [at(40) - day]
        gate.clock.now = at(40) + 30 * day  # a month later: that row is past retention too
        assert (await gate.get(service="chatbot-backend"))[0] == 503  # no recent traffic
        await wait_until(
            lambda: (
                [h["at"] for h in gate.built.store.gate_history(None, 10)] == [at(40) + 30 * day]
            ),
            "the periodic prune",
        )
        assert await history() == [at(40) + 30 * day]


def test_stream_selectors_of_log_slos_count_as_the_rules_matchers() -> None:
    from sentinel.errors import GateInputError
    from sentinel.gate.request import check_narrowing
    from sentinel.rules.model import SLO, LogRatioSLI, Matcher, MatchOp

    sli = LogRatioSLI('{app="chat", env=~"prod|eu-prod"}', "| json", 'level="error"', None)
    slo = SLO(service="chat", name="errors", sli=sli, threshold=0.01, window=300)
    check_narrowing([slo], [Matcher("env", MatchOp.EQ, "eu-prod")])
    with pytest.raises(GateInputError, match=r'errors already selects env=~"prod\|eu-prod"'):
        check_narrowing([slo], [Matcher("env", MatchOp.EQ, "staging")])


async def test_sentinel_gate_treats_429_as_no_verdict_yet_and_honours_retry_after(
    tmp_path: Path,
    prometheus: PrometheusServer,
    loki: FakeLoki,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sentinel.cli.client import gate as gate_cli

    monkeypatch.setenv("SENTINEL_TOKEN", TOKEN)
    extra = "gate: {max_evaluations_per_second: 0.01}\n"
    async with running_gate(tmp_path, prometheus.url, monkeypatch, extra, loki.url) as gate:
        assert (await gate.get(service="chatbot-backend", since=str(int(at(35)))))[0] == 200
        params = {"service": "chatbot-backend", "since": str(int(at(36)))}
        # Retry-After (100 s) is past --wait: give up at once, as "no verdict" (3).
        assert await gate_cli(gate.url, params, 5.0, 0.1) == 3
        captured = capsys.readouterr()
        assert " overloaded\n  - gate overloaded: " in captured.out
        assert "no verdict by the deadline (overloaded)" in captured.err


async def decision_after(client: GateClient, cycle: bool = True) -> str:
    """30 s later (after a scheduled cycle when `cycle`), the gate's decision."""
    client.clock.now += 30
    if cycle:
        await client.built.daemon.run_group("checkout")
    status, body, _ = await client.get(service="checkout")
    assert status == {"pass": 200, "fail": 412}.get(body["decision"]), body
    return str(body["decision"])


def answering(port: int | None = None) -> FakePrometheus:
    server = FakePrometheus()
    if port is not None:
        server.port = port  # the same address, answering again
    server.start().answer([element({}, "0.1")])
    return server


async def test_a_cached_verdict_never_outlives_a_change_in_its_sources_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation cache (`cache_ttl`) held the last healthy evaluation; the source-down
    policy judged only no_data results, so a cached `ok` passed for the whole ttl while
    Prometheus was down (with `cache_ttl` above `source_down_after`, past the point the
    policy says fail). Each change the cycles or the gate's clients see (an outage, a
    recovery, the next outage of a flapping Prometheus) now ends the cached evaluation."""
    rules = {
        "checkout.yaml": """\
            version: sentinel/v1
            service: checkout
            interval: 30s
            slos:
              - name: queue-depth
                sli: {promql: {query: "max(queue_depth)"}}
                threshold: 0.5
                window: 5m
            """
    }
    extra = "gate: {cache_ttl: 10m, source_down_after: 0s}\n"
    servers = [answering()]
    port = servers[0].port
    try:
        async for client in make_client(tmp_path, servers[0].url, monkeypatch, extra, rules=rules):
            client.clock.now = time.time()  # the sources' health records wall-clock times
            assert await decision_after(client, cycle=False) == "pass"
            servers.pop().stop()  # an outage
            assert await decision_after(client) == "fail"  # was: the cached pass
            servers.append(answering(port))  # recovered
            assert await decision_after(client) == "pass"  # not the cached fail
            # Flapping: an outage only a cycle saw, a recovery only the gate's own query
            # saw (its pass taken while the cycles' client still failed), the next outage.
            servers.pop().stop()
            client.clock.now += 30
            await client.built.daemon.run_group("checkout")
            servers.append(answering(port))
            assert await decision_after(client, cycle=False) == "pass"
            servers.pop().stop()
            assert await decision_after(client) == "fail"
    finally:
        for server in servers:
            server.stop()


async def test_a_sustained_outage_slower_than_the_deadline_reaches_the_source_down_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blackholed Prometheus: every query times out, later than `gate.deadline`, so the
    gate answers `pending` and keeps the evaluation for the retry. The cache must keep it
    through the outage (a cycle failing again meanwhile is the same outage), or every
    retry starts a new evaluation and the pipeline waits for ever instead of getting the
    source-down policy's verdict (review of the first health-keyed cache)."""
    extra = "gate: {deadline: 100ms, source_down_after: 0s, cache_ttl: 10m}\n"
    async with (
        stalling_prometheus(stall=lambda q: True) as prom,
        running_gate(
            tmp_path, prom.url, monkeypatch, extra, rules=RULES, source_extra="timeout: 300ms"
        ) as gate,
    ):
        gate.clock.now = time.time()  # the sources' health records wall-clock times
        decisions = []
        for _ in range(4):
            _, body, _ = await gate.get(service="shop")
            decisions.append((body["decision"], " ".join(body["reasons"])))
            await asyncio.sleep(0.4)  # the evaluation times out meanwhile
            gate.clock.now += 30
            await gate.built.daemon.run_group("shop")  # and a scheduled cycle fails too
        decision, reasons = decisions[-1]
        assert decision == "fail" and "source down" in reasons, decisions
