"""The demo's simulated runtime (examples/simulator.py): its chat API and faults as the
synthetic probe relies on them, every fault breaching the shipped SLOs it is for (the
simulator driven on a simulated clock, its registries scraped every 15 s into `sentinel
test`'s in-process engine), and the demo's scrape configuration giving every shipped query
its series on a real Prometheus."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import REPO
from sentinel.cli.main import main
from sentinel.config import Config, LokiConfig
from sentinel.evaluate.slo import evaluate
from sentinel.offline.ruletest.promql_engine import InProcessPrometheus, SeriesData
from sentinel.query.promql import slo_query
from sentinel.rules.loader import load_rules
from sentinel.rules.model import SLO
from sentinel.sources.base import Sample
from support.procs import Proc, http, start_simulator, wait_for
from support.promserver import find_binary, free_port


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simulator = load_example("simulator")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_simulator(tmp_path_factory.mktemp("sim"), rate=20.0)
    yield url
    proc.stop()


def chat(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/api/chat",
        data=json.dumps({"message": "có được nghỉ thứ 7 không?"}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def set_fault(url: str, mode: str, **params: str) -> None:
    query = "&".join(f"{k}={v}" for k, v in {"mode": mode, **params}.items())
    status, _, _ = http("POST", f"{url}/fault?{query}")
    assert status == 200


def test_the_chat_api_answers_as_the_post_deploy_check_expects(sim: str) -> None:
    set_fault(sim, "none")
    status, body = chat(sim)
    assert status == 200
    assert set(body) == {"answer", "answer_mode", "provider_used"} and body["answer"]
    assert body["answer_mode"] == "llm-summary"
    assert body["provider_used"] in ("spoon-policy", "spoon-ops")
    assert http("GET", f"{sim}/health/ready")[0] == 200
    assert http("GET", f"{sim}/health/live")[0] == 200


@pytest.mark.parametrize(
    ("mode", "chat_status", "answer_mode", "ready"),
    [
        ("fallback", 200, "snippet-fallback", 200),
        ("error", 500, None, 200),
        ("unready", 200, "llm-summary", 503),
        ("down", 503, None, 503),
    ],
)
def test_each_probe_fault_fails_the_way_the_probe_is_tested_for(
    sim: str, mode: str, chat_status: int, answer_mode: str | None, ready: int
) -> None:
    set_fault(sim, mode)
    try:
        status, body = chat(sim)
        assert status == chat_status
        if answer_mode is not None:
            assert body["answer_mode"] == answer_mode
        assert http("GET", f"{sim}/health/ready")[0] == ready
    finally:
        set_fault(sim, "none")


def test_a_stalled_answer_outlasts_the_client_timeout(sim: str) -> None:
    set_fault(sim, "stall", seconds="3")
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            chat(sim, timeout=0.5)
        assert time.monotonic() - started < 2.5
    finally:
        set_fault(sim, "none")


def test_unknown_faults_are_refused_and_the_backend_down_fails_its_scrape(sim: str) -> None:
    assert http("POST", f"{sim}/fault?mode=meltdown")[0] == 400
    assert http("POST", f"{sim}/fault?mode=stall&seconds=soon")[0] == 400
    set_fault(sim, "down")
    try:
        assert http("GET", f"{sim}/metrics")[0] == 503  # Prometheus records up == 0
        assert http("GET", f"{sim}/gateway/metrics")[0] == 200
    finally:
        set_fault(sim, "none")


def test_probe_requests_stay_out_of_the_user_metrics(sim: str) -> None:
    def answers() -> float:
        text = urllib.request.urlopen(f"{sim}/metrics", timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("chatbot_answers_total{")
        )

    set_fault(sim, "idle")  # no simulated traffic: only the chat API counts
    try:
        before = answers()
        chat(sim, headers={"X-Sentinel-Probe": "1"})
        assert answers() == before
        chat(sim)
        assert answers() == before + 1
    finally:
        set_fault(sim, "none")


# --- every fault breaches its SLOs -------------------------------------------------------

SCRAPE = 15.0
BACKEND, GATEWAY = "chatbot-backend", "chatbot-gateway"


def shipped_prometheus_slos() -> list[SLO]:
    config = Config(rules=[str(REPO / "rules" / "*.yaml")], loki=LokiConfig(url="http://x"), base_dir="/")  # fmt: skip
    return [slo for slo in load_rules(config).slos if slo.source == "prometheus"]


def run_simulated(modes: list[tuple[str, float]], rate: float = 5.0) -> InProcessPrometheus:
    """Drive a Simulator through (mode, minutes) phases on a simulated clock and scrape
    its three registries every 15 s, as the demo's Prometheus does (a scrape of a target
    that is down fails: no samples, `up` 0)."""
    sim = simulator.Simulator(rate=rate)
    series: dict[tuple[tuple[str, str], ...], SeriesData] = {}

    def record(name: str, labels: dict[str, str], t: float, value: float) -> None:
        key = tuple(sorted({**labels, "__name__": name}.items()))
        series.setdefault(key, SeriesData(dict(key))).points.append((t, value))

    t, tick = 0.0, 0.25
    for mode, minutes in modes:
        sim.mode = mode
        for _ in range(int(minutes * 60 / tick)):
            sim.generate(tick)
            t += tick
            if t % SCRAPE:
                continue
            targets = ((sim.metrics.backend, BACKEND, "down"), (sim.metrics.gateway, GATEWAY, "gateway-down"), (sim.metrics.infra, None, None))  # fmt: skip
            for registry, service, down_in in targets:
                if service is not None:
                    up = {"namespace": "chatbot", "service": service, "env": "prod"}
                    record("up", up, t, 0.0 if mode == down_in else 1.0)
                if mode == down_in:
                    continue
                for metric in registry.collect():
                    for sample in metric.samples:
                        if not sample.name.endswith("_created"):
                            record(sample.name, sample.labels, t, sample.value)
    return InProcessPrometheus(list(series.values()))


def statuses(prom: InProcessPrometheus, at_minute: float) -> dict[str, str]:
    out = {}
    for slo in shipped_prometheus_slos():
        at = at_minute * 60
        samples = [Sample(dict(k), v) for k, v in prom.query(slo_query(slo), at).items()]
        for result in evaluate(slo, samples, at):
            out[f"{result.service}/{result.slo}"] = result.status.value
    return out


PROBE_SLOS = {f"{BACKEND}/probe-availability", f"{BACKEND}/probe-availability-24h"}


def test_the_healthy_simulator_keeps_every_shipped_slo_ok() -> None:
    result = statuses(run_simulated([("none", 35)]), 35)
    assert {k for k, v in result.items() if v != "ok"} == PROBE_SLOS  # no probe in here
    assert {result[k] for k in PROBE_SLOS} == {"no_data"}


FAULTS: list[tuple[str, float, set[str]]] = [
    ("latency", 10, {f"{BACKEND}/chat-latency-p95", f"{BACKEND}/http-latency-p95", f"{GATEWAY}/http-latency-p95"}),
    ("5xx", 10, {f"{BACKEND}/http-5xx-ratio", f"{GATEWAY}/http-5xx-alert", f"{GATEWAY}/http-5xx-ratio"}),
    ("error", 10, {f"{BACKEND}/http-5xx-ratio", f"{GATEWAY}/http-5xx-alert"}),
    ("stall", 10, {f"{BACKEND}/chat-latency-p95", f"{BACKEND}/http-latency-p99", f"{GATEWAY}/http-latency-p99"}),
    ("down", 10, {f"{BACKEND}/service-down", f"{BACKEND}/availability", f"{BACKEND}/availability-24h", f"{GATEWAY}/http-5xx-alert"}),
    ("gateway-down", 10, {f"{GATEWAY}/service-down", f"{GATEWAY}/availability", f"{GATEWAY}/availability-24h"}),
    ("4xx", 10, {f"{BACKEND}/http-4xx-alert", f"{BACKEND}/http-4xx-ratio", f"{GATEWAY}/http-4xx-alert", f"{GATEWAY}/http-4xx-ratio"}),
    ("failover", 10, {f"{BACKEND}/provider-failover-rate"}),
    ("refusal", 10, {f"{BACKEND}/refusal-rate"}),
    ("thumbs-down", 10, {f"{BACKEND}/negative-feedback-rate"}),
    ("tokens", 10, {f"{BACKEND}/tokens-per-answer", f"{BACKEND}/cost-per-answer"}),
    ("llm-slow", 10, {f"{BACKEND}/ttft-p95", f"{BACKEND}/tpot-p95"}),
    ("db", 10, {f"{BACKEND}/db-pool-waiting", f"{BACKEND}/db-pool-available"}),
    ("cpu", 25, {f"{s}/{n}" for s in (BACKEND, GATEWAY) for n in ("cpu-usage", "cpu-usage-alert")}),
    ("memory", 25, {f"{s}/{n}" for s in (BACKEND, GATEWAY) for n in ("memory-usage", "memory-usage-alert")}),
]  # fmt: skip


@pytest.mark.parametrize(("mode", "minutes", "breaching"), FAULTS, ids=[f[0] for f in FAULTS])
def test_every_fault_breaches_the_shipped_slos_it_is_for(
    mode: str, minutes: float, breaching: set[str]
) -> None:
    result = statuses(run_simulated([("none", 10), (mode, minutes)]), 10 + minutes)
    missing = {key: result[key] for key in breaching if result[key] != "breach"}
    assert missing == {}


def test_every_metric_slo_of_the_shipped_rules_has_a_fault() -> None:
    covered = set().union(*(b for _, _, b in FAULTS))
    # The two probe SLOs come from Sentinel's own probe; cost-unpriced-tokens from a model
    # the runtime does not use; the log SLOs (fallback, error lines) from Loki.
    uncovered = {f"{s.service}/{s.name}" for s in shipped_prometheus_slos()} - covered
    assert uncovered == PROBE_SLOS | {f"{BACKEND}/cost-unpriced-tokens"}


# --- the demo's scrape configuration -----------------------------------------------------


@pytest.fixture
def demo_prometheus(sim: str, tmp_path: Path, prometheus_binaries: None) -> Iterator[str]:
    demo = load_example("demo")
    port = free_port()
    config = demo.prometheus_config(int(sim.rsplit(":", 1)[1]), free_port(), scrape_interval="1s")
    (tmp_path / "prometheus.yml").write_text(config)
    binary = find_binary("prometheus")
    assert binary
    with (tmp_path / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(process, tmp_path / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http("GET", f"{url}/-/ready")[0] == 200, 30, "prometheus")
        yield url
    finally:
        proc.stop()


def test_the_demo_scrape_config_gives_every_shipped_query_its_series(
    sim: str, demo_prometheus: str, tmp_path: Path
) -> None:
    set_fault(sim, "none")

    def query(expr: str) -> list[Any]:
        params = urllib.parse.urlencode({"query": expr})
        return list(http("GET", f"{demo_prometheus}/api/v1/query?{params}")[1]["data"]["result"])

    wait_for(lambda: len(query('up{namespace="chatbot"} == 1')) == 2, 30, "both targets up")
    wait_for(lambda: query("count(count_over_time(up[1m]) >= 6)"), 30, "six scrapes")
    config = tmp_path / "config.yaml"
    rules = ", ".join(str(REPO / "rules" / f) for f in ("gateway.yaml", "backend-platform.yaml", "backend-llm.yaml", "chatbot.yaml"))  # fmt: skip
    config.write_text(
        f"prometheus: {{url: '{demo_prometheus}'}}\n"
        "loki: {url: 'http://127.0.0.1:9', retries: 0}\n"
        f"rules: [{rules}]\n"
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["eval", "-c", str(config), "--format", "json"])
    rows = [r for r in json.loads(out.getvalue()) if r["kind"] not in ("burn_rate", "log_ratio")]
    no_series = {f"{r['service']}/{r['slo']}" for r in rows if "no series" in r["reason"]}
    assert no_series == PROBE_SLOS  # no probe configured; every other query finds its data
    # `up` carries the labels the rules select: both services answered every scrape.
    by_key = {f"{r['service']}/{r['slo']}": r for r in rows}
    assert by_key[f"{BACKEND}/service-down"]["value"] == 1
    assert by_key[f"{GATEWAY}/service-down"]["value"] == 1
