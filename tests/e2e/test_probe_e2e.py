"""End to end: a `sentinel run` process probes a chat runtime on its schedule; a fault
shows in `/api/v1/slos`, the gate and `/metrics` with the failing assertion, and a stop
with a probe request in flight is clean."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chatserver import ChatServer
from support.procs import Proc, http, start_sentinel, start_simulator, wait_for
from support.promserver import free_port

OTHER_RULES = """\
version: sentinel/v1
service: other
slos:
  - name: latency
    sli:
      latency: {histogram: other_latency_seconds, quantile: 0.95}
    threshold: 1s
    window: 5m
"""


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def sentinel(tmp_path: Path, chat: ChatServer) -> Iterator[tuple[str, Proc]]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "other.yaml").write_text(OTHER_RULES)
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://127.0.0.1:{free_port()}", timeout: 1s, retries: 0}}
            rules: [rules/*.yaml]
            server: {{listen: "127.0.0.1:{port}"}}
            state: {{path: state.db}}
            evaluation: {{shutdown_timeout: 10s}}
            probes:
              chat:
                service: chatbot
                url: {chat.chat_url}
                ready_url: {chat.ready_url}
                interval: 1s
                timeout: 1s
                headers: {{Authorization: "Bearer ${{CHAT_PROBE_TOKEN}}"}}
                body: {{message: "có được nghỉ thứ 7 không?"}}
                expect:
                  max_latency: 5s
                  json:
                    answer_mode: {{equals: llm-summary}}
                    provider_used: {{in: [spoon-policy, spoon-ops]}}
                    answer: {{non_empty: true}}
            """
        )
    )
    proc = start_sentinel(config, env={"CHAT_PROBE_TOKEN": "probe-secret-token-42"})
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()


def probe_slo(url: str) -> dict[str, Any]:
    _, body, _ = http("GET", f"{url}/api/v1/slos?service=chatbot")
    (result,) = body
    assert isinstance(result, dict)
    return result


def test_the_daemon_probes_on_schedule_and_a_fault_reaches_slos_gate_and_metrics(
    sentinel: tuple[str, Proc], chat: ChatServer
) -> None:
    url, proc = sentinel
    wait_for(lambda: probe_slo(url)["status"] == "ok", 30, "the probe's first pass")
    headers = chat.requests[-1][0]
    assert headers["X-Sentinel-Probe"] == "1" and headers["Authorization"].endswith("-42")

    chat.mode = "fallback"
    failed = wait_for(lambda: (r := probe_slo(url))["status"] == "breach" and r, 30, "breach")
    assert failed["reason"].startswith(
        'answer_mode: expected "llm-summary", got "snippet-fallback"'
    )
    status, body, _ = http("GET", f"{url}/api/v1/gate?service=chatbot")
    assert status == 412
    assert body["reasons"][0] == f"probe-chat: {failed['reason']}"

    _, metrics, _ = http("GET", f"{url}/metrics")
    assert 'sentinel_probe_success{probe="chat"} 0.0' in metrics
    assert 'sentinel_probe_duration_seconds_count{probe="chat"}' in metrics
    assert 'sentinel_probe_last_run_timestamp_seconds{probe="chat"}' in metrics
    assert "probe-secret-token-42" not in proc.log()  # the header is held as a secret


def test_a_stalled_answer_fails_within_the_timeout_and_the_daemon_still_stops_cleanly(
    sentinel: tuple[str, Proc], chat: ChatServer
) -> None:
    url, proc = sentinel
    wait_for(lambda: probe_slo(url)["status"] == "ok", 30, "the probe's first pass")
    chat.mode = "stall"  # answers would come after 30 s
    stalled = wait_for(lambda: (r := probe_slo(url))["status"] == "breach" and r, 30, "breach")
    assert stalled["reason"] == f"POST {chat.chat_url}: no answer within 1s"
    proc.process.send_signal(signal.SIGTERM)
    assert proc.process.wait(timeout=20) == 0
    assert "Task was destroyed but it is pending" not in proc.log()


def probe_simulator(config: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "probe", "--once", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def test_sentinel_probe_once_against_the_simulator_names_each_fault(tmp_path: Path) -> None:
    sim, sim_url = start_simulator(tmp_path)
    try:
        config = tmp_path / "probe.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                rules: []
                probes:
                  chat:
                    service: chatbot-backend
                    url: {sim_url}/api/chat/sentinel-probe
                    ready_url: {sim_url}/health/ready
                    timeout: 1s
                    body: {{message: "có được nghỉ thứ 7 không?"}}
                    expect:
                      json:
                        answer_mode: {{equals: llm-summary}}
                        provider_used: {{in: [spoon-policy, spoon-ops]}}
                        answer: {{non_empty: true}}
                """
            )
        )
        # The simulator falls back on 1 % of healthy answers, as a real runtime might:
        # a healthy runtime passes within a few runs.
        wait_for(lambda: probe_simulator(config)[0] == 0, 20, "a healthy answer passes")
        expected = {
            "fallback": '  - answer_mode: expected "llm-summary", got "snippet-fallback"',
            "error": '  - status: expected 200, got 500 (body: {"error": "provider chain exhausted"})',
            "stall": f"  - POST {sim_url}/api/chat/sentinel-probe: no answer within 1s",
            "unready": f"  - ready: GET {sim_url}/health/ready: expected 200, got 503",
        }
        for mode, failure in expected.items():
            http("POST", f"{sim_url}/fault?mode={mode}&seconds=30")
            code, out = probe_simulator(config)
            assert (code, out.splitlines()[0].split(" in ")[0]) == (
                1,
                "FAIL chat (chatbot-backend)",
            )
            assert failure in out, (mode, out)
    finally:
        sim.stop()
