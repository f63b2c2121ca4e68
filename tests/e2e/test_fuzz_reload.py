"""Fuzzing the reload of a running `sentinel run`: fuzzed config and rule files (the
strategies of `sentinel check`'s fuzzing, tests/support/fuzz_yaml.py) sent by SIGHUP. A
refused file leaves the running config in place (same rule groups, same service), the
refusal is reported in /health/detailed with located lines, and the daemon never dies or
logs a traceback. A fuzzed file that happens to be valid is taken, then the good one is
restored before the next input. One daemon serves all inputs: a few suffice here, the
thousands run in-process in tests/component/test_fuzz_config.py."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzz_yaml import CONFIG_HEAD, LOCATED, VALID_RULE, config_files, rule_files
from support.fuzzing import counted, fuzz_settings
from support.procs import Proc, http, start_sentinel, wait_for
from support.promserver import free_port


class Running:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.good = CONFIG_HEAD + f"server: {{listen: '127.0.0.1:{self.port}'}}\n"
        self.good += "state: {path: state.db}\n"
        self.config = workdir / "config.yaml"
        self.rule = workdir / "rules" / "checkout.yaml"
        self.rule.parent.mkdir()
        self.config.write_text(self.good)
        self.rule.write_bytes(VALID_RULE)
        self.proc: Proc = start_sentinel(self.config)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: http("GET", f"{self.url}/health/live")[0] == 200, 20, "the daemon")

    def detailed(self) -> dict[str, Any]:
        status, body, _ = http("GET", f"{self.url}/health/detailed")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def reload(self) -> dict[str, Any]:
        """SIGHUP, then the outcome of that reload (its `at` differs from the last one)."""
        before = self.detailed()["config"]["last_reload"]["at"]
        self.proc.process.send_signal(signal.SIGHUP)

        def done() -> dict[str, Any] | None:
            reload: dict[str, Any] = self.detailed()["config"]["last_reload"]
            return reload if reload["at"] != before else None

        return wait_for(done, 30, "the reload")

    def restore(self) -> None:
        self.config.write_text(self.good)
        for extra in self.rule.parent.iterdir():
            extra.unlink()
        self.rule.write_bytes(VALID_RULE)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = Running(tmp_path_factory.mktemp("fuzz-reload"))
    try:
        yield running
    finally:
        running.proc.stop()


@given(
    which=st.sampled_from(["config", "rule"]),
    config=config_files(),
    rule=rule_files(),
)
@fuzz_settings(0.5)
@counted("config/rule file (SIGHUP)")
def test_fuzz_a_refused_reload_keeps_the_running_config_and_says_where(
    daemon: Running, which: str, config: bytes, rule: bytes
) -> None:
    daemon.restore()
    groups = daemon.detailed()["rule_groups"]
    if which == "config":
        daemon.config.write_bytes(config)
    else:
        daemon.rule.write_bytes(rule)
    outcome = daemon.reload()
    assert daemon.proc.process.poll() is None, daemon.proc.log()[-3000:]
    if outcome["status"] == "failed":
        assert outcome["errors"], outcome
        for line in outcome["errors"]:
            assert LOCATED.match(line), f"not a located problem: {line!r}"
        assert daemon.detailed()["rule_groups"].keys() == groups.keys()
    else:
        daemon.restore()
        assert daemon.reload()["status"] == "ok"
    log = daemon.proc.log()
    assert "Traceback" not in log, log[-3000:]
