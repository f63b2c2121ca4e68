"""End to end: how `sentinel run` stops. A SIGTERM lets the running cycle finish and
commit; a second signal or `evaluation.shutdown_timeout` cuts it short, with a log line
and still exit 0. Prometheus is real, behind a proxy that makes every query slow."""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.procs import Proc, start_sentinel, wait_for
from support.promserver import PrometheusServer, free_port
from support.slowprom import SlowPrometheus

pytestmark = pytest.mark.e2e

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot}
interval: 30s
slos:
  - name: chat-latency-p95
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
"""


def write_config(workdir: Path, prometheus_url: str, shutdown_timeout: str) -> Path:
    (workdir / "rules").mkdir()
    (workdir / "rules" / "chatbot.yaml").write_text(RULES)
    config = workdir / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prometheus_url}", timeout: 20s, retries: 0}}
            rules: [rules/*.yaml]
            evaluation: {{interval: 30s, cycle_timeout: 25s, shutdown_timeout: {shutdown_timeout}}}
            server: {{listen: "127.0.0.1:{free_port()}"}}
            state: {{path: "{workdir / "state.db"}"}}
            """
        )
    )
    return config


def committed_alert_rows(workdir: Path) -> int:
    with sqlite3.connect(workdir / "state.db") as db:
        count: int = db.execute("SELECT count(*) FROM alerts").fetchone()[0]
    return count


@pytest.fixture
def slow_prometheus(prometheus: PrometheusServer) -> Iterator[SlowPrometheus]:
    proxy = SlowPrometheus(prometheus.url, delay=4.0).start()
    yield proxy
    proxy.stop()


def start_in_cycle(workdir: Path, proxy: SlowPrometheus, shutdown_timeout: str) -> Proc:
    """Start the daemon and return 1 s after its first cycle sent its query."""
    daemon = start_sentinel(write_config(workdir, proxy.url, shutdown_timeout))
    wait_for(lambda: proxy.queries, 20, "the first cycle's query")
    time.sleep(max(0.0, proxy.queries[0] + 1.0 - time.monotonic()))
    return daemon


def assert_clean_exit(daemon: Proc, timeout: float) -> None:
    assert daemon.process.wait(timeout=timeout) == 0
    log = daemon.log()
    assert "Traceback" not in log, log
    assert "CancelledError" not in log, log


def test_sigterm_lets_the_running_cycle_finish_and_commit_then_exits_0(
    tmp_path: Path, slow_prometheus: SlowPrometheus
) -> None:
    daemon = start_in_cycle(tmp_path, slow_prometheus, "10s")
    try:
        sent = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert_clean_exit(daemon, timeout=15)
        waited = time.monotonic() - sent
    finally:
        daemon.stop()
    # The cycle still had about 3 s to go: the daemon waited for it, and its results
    # went through the result hooks into the state store before the exit.
    assert waited >= 2.0, waited
    log = daemon.log()
    assert "chatbot-backend/chat-latency-p95 new -> " in log
    assert committed_alert_rows(tmp_path) == 1
    assert "shutting down gracefully" in log
    assert "cancelling" not in log
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    operators = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if (
        platform.libc_ver()[0] == "glibc"
        and not any(k in os.environ for k in operators)
        and "glibc.malloc.mmap_threshold=" not in tunables
        and "glibc.malloc.trim_threshold=" not in tunables
    ):
        # The allocator's settings, for whoever reads RSS (an operator's own are not ours).
        assert "malloc: MALLOC_MMAP_THRESHOLD_=524288 MALLOC_TRIM_THRESHOLD_=4194304" in log


def test_a_second_sigterm_cancels_the_running_cycle_promptly(
    tmp_path: Path, slow_prometheus: SlowPrometheus
) -> None:
    slow_prometheus.delay = 10.0
    daemon = start_in_cycle(tmp_path, slow_prometheus, "30s")
    try:
        daemon.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert daemon.process.poll() is None, "the first SIGTERM must wait for the cycle"
        sent = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert_clean_exit(daemon, timeout=15)
        took = time.monotonic() - sent
    finally:
        daemon.stop()
    assert took < 4.0, took  # the cycle had about 8.5 s to go
    log = daemon.log()
    assert "second stop signal" in log
    assert "cancelling cycle:chatbot before it finished" in log
    assert committed_alert_rows(tmp_path) == 0


def test_shutdown_timeout_cancels_a_cycle_that_runs_longer_and_still_exits_0(
    tmp_path: Path, slow_prometheus: SlowPrometheus
) -> None:
    slow_prometheus.delay = 10.0
    daemon = start_in_cycle(tmp_path, slow_prometheus, "1s")
    try:
        sent = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert_clean_exit(daemon, timeout=15)
        took = time.monotonic() - sent
    finally:
        daemon.stop()
    assert took < 5.0, took  # the cycle had about 9 s to go
    assert "shutdown_timeout 1s: cancelling cycle:chatbot before it finished" in daemon.log()
