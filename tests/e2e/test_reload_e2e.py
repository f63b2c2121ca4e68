"""End to end: SIGHUP reloads of a running `sentinel run`. A reload is built completely
before it replaces anything; whatever is refused keeps the old config running, and
`/health/detailed` says what happened. Dropping the API token needs an explicit word."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.procs import REPO, Proc, http, start_sentinel, wait_for
from support.promserver import PrometheusServer, free_port

pytestmark = pytest.mark.e2e

SILENCE = {"matchers": [{"name": "service", "value": "a"}], "duration": "1h", "comment": "t"}


def rule_file(service: str, interval: str = "1s") -> str:
    return textwrap.dedent(
        f"""\
        version: sentinel/v1
        service: {service}
        interval: {interval}
        slos:
          - name: latency
            sli:
              latency: {{histogram: chatbot_response_latency_seconds, quantile: 0.95}}
            threshold: 1.5s
            window: 5m
        """
    )


class Running:
    def __init__(self, workdir: Path, prometheus_url: str) -> None:
        self.dir = workdir
        self.prometheus_url = prometheus_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "config.yaml"
        (workdir / "rules").mkdir()
        self.daemon: Proc | None = None

    def write_config(self, server_extra: str = "", prometheus_url: str | None = None) -> None:
        self.config.write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "{prometheus_url or self.prometheus_url}", retries: 0}}
                rules: [rules/*.yaml]
                evaluation: {{interval: 1s}}
                server: {{listen: "127.0.0.1:{self.port}"{server_extra}}}
                state: {{path: "{self.dir / "state.db"}"}}
                """
            )
        )

    def start(self) -> Proc:
        self.daemon = start_sentinel(self.config)
        wait_for(lambda: http("GET", f"{self.url}/health/ready")[0] == 200, 20, "readiness")
        return self.daemon

    def reload(self) -> dict[str, Any]:
        """SIGHUP; wait for the reload's outcome; return it."""
        assert self.daemon is not None
        before = self.detailed()["config"]["last_reload"]["at"]
        self.daemon.process.send_signal(signal.SIGHUP)
        last: dict[str, Any] = wait_for(
            lambda: (r := self.detailed()["config"]["last_reload"])["at"] != before and r,
            10,
            "reload outcome",
        )
        return last

    def detailed(self) -> dict[str, Any]:
        body: dict[str, Any] = http("GET", f"{self.url}/health/detailed")[1]
        return body

    def cycles(self) -> dict[str, int]:
        return {name: g["cycles"] for name, g in self.detailed()["rule_groups"].items()}


@pytest.fixture
def running(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[Running]:
    run = Running(tmp_path, prometheus.url)
    yield run
    if run.daemon is not None:
        run.daemon.stop()


def assert_no_lost_task(daemon: Proc) -> None:
    log = daemon.log()
    assert "Task exception was never retrieved" not in log, log
    assert "Traceback" not in log, log


def test_a_reload_with_an_unschedulable_interval_is_refused_and_every_group_keeps_running(
    running: Running,
) -> None:
    (running.dir / "rules" / "a.yaml").write_text(rule_file("a"))
    (running.dir / "rules" / "b.yaml").write_text(rule_file("b"))
    running.write_config()
    daemon = running.start()

    (running.dir / "rules" / "b.yaml").write_text(rule_file("b", "1000000000d"))
    outcome = running.reload()

    assert outcome["status"] == "failed"
    assert any("b.yaml" in e and "interval" in e for e in outcome["errors"]), outcome
    before = running.cycles()
    time.sleep(2.5)
    after = running.cycles()
    assert after["a"] > before["a"] and after["b"] > before["b"], (before, after)
    assert http("GET", f"{running.url}/health/ready")[0] == 200
    assert_no_lost_task(daemon)


def test_a_config_that_cannot_be_decoded_is_refused_on_reload_and_shown(
    running: Running,
) -> None:
    (running.dir / "rules" / "a.yaml").write_text(rule_file("a"))
    running.write_config()
    daemon = running.start()

    running.config.write_bytes(running.config.read_bytes() + b"# caf\xe9\n")
    outcome = running.reload()

    assert outcome["status"] == "failed"
    assert any(str(running.config) in e for e in outcome["errors"]), outcome
    before = running.cycles()["a"]
    wait_for(lambda: running.cycles()["a"] > before, 5, "evaluation goes on")
    assert http("GET", f"{running.url}/health/ready")[0] == 200
    assert "Task exception was never retrieved" not in daemon.log()


def test_a_reload_that_drops_the_api_token_is_refused_unless_the_file_says_so(
    running: Running,
) -> None:
    (running.dir / "rules" / "a.yaml").write_text(rule_file("a"))
    running.write_config(", api_token: s3cret")
    daemon = running.start()
    silences = f"{running.url}/api/v1/silences"
    assert http("POST", silences, SILENCE)[0] == 401

    # An emptied file (an editor's crash, a half-written deploy) is not "all defaults".
    running.config.write_text("")
    outcome = running.reload()
    assert outcome["status"] == "failed"
    assert http("POST", silences, SILENCE)[0] == 401

    # A file without the token is refused, naming the key and the way to mean it.
    running.write_config()
    outcome = running.reload()
    assert outcome["status"] == "failed"
    assert any(
        "server.api_token" in e and "allow_unauthenticated" in e for e in outcome["errors"]
    ), outcome
    assert http("POST", silences, SILENCE)[0] == 401
    assert http("GET", f"{running.url}/health/ready")[0] == 200

    # Said explicitly, it is taken; that and a new Prometheus URL are logged and shown.
    moved = running.prometheus_url.replace("127.0.0.1", "localhost")
    running.write_config(", allow_unauthenticated: true", prometheus_url=moved)
    outcome = running.reload()
    assert outcome["status"] == "ok", outcome
    assert any("server.api_token removed" in c for c in outcome["changes"]), outcome
    url_change = f"prometheus url changed: {running.prometheus_url} -> {moved}"
    assert url_change in outcome["changes"]
    assert http("POST", silences, SILENCE)[0] == 201
    log = daemon.log()
    assert f"reload: {url_change}" in log
    assert "reload: server.api_token removed" in log
    assert "s3cret" not in log
    assert_no_lost_task(daemon)


def rules_info(url: str) -> list[str]:
    """The fingerprint label of every `sentinel_rules_info` series in /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return re.findall(r'^sentinel_rules_info\{fingerprint="([0-9a-f]+)"\} 1\.0$', text, re.M)


def test_the_rules_fingerprint_names_what_the_rules_say_and_follows_a_reload(
    running: Running, tmp_path: Path
) -> None:
    """Replicas that loaded different rules judge the same traffic differently: each one
    shows what it runs, so `count(count by (fingerprint) (sentinel_rules_info)) > 1`
    finds the odd one out. Comments, layout and file paths are not the rules."""
    (running.dir / "rules" / "a.yaml").write_text(rule_file("a"))
    running.write_config()
    running.start()
    first = running.detailed()["rules"]
    assert first["slos"] == 1
    assert rules_info(running.url) == [first["fingerprint"]]

    # The same rules with a comment and another layout, in another directory: the same.
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "a.yaml").write_text("# reviewed 2026-11-26\n\n" + rule_file("a"))
    text = running.config.read_text().replace("rules: [rules/*.yaml]", f"rules: [{other}/*.yaml]")
    running.config.write_text(text)
    assert running.reload()["status"] == "ok"
    assert running.detailed()["rules"]["fingerprint"] == first["fingerprint"]

    # A changed threshold is other rules: a new fingerprint, and the old series is gone.
    (other / "a.yaml").write_text(rule_file("a").replace("threshold: 1.5s", "threshold: 2s"))
    assert running.reload()["status"] == "ok"
    changed = running.detailed()["rules"]["fingerprint"]
    assert changed != first["fingerprint"]
    assert rules_info(running.url) == [changed]


def test_replicas_that_loaded_the_same_rules_show_the_same_fingerprint(tmp_path: Path) -> None:
    """Every shipped rule file, loaded by two processes with different hash seeds (string
    hashing differs between processes, so nothing set- or hash-ordered may leak in)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        'prometheus: {url: "http://127.0.0.1:9"}\nloki: {url: "http://127.0.0.1:9"}\n'
        f'rules: ["{REPO}/rules/*.yaml"]\n'
    )
    code = (
        "import sys; from pathlib import Path; from sentinel.config import load_config; "
        "from sentinel.rules.loader import load_rules; "
        "print(load_rules(load_config(Path(sys.argv[1]))).fingerprint)"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", code, str(config)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(prints) == 1 and len(next(iter(prints))) == 16, prints
