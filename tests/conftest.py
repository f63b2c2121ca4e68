"""Shared fixtures: a real Prometheus holding the scenario data, configs and rule files.

In CI (`CI` set) a missing prometheus binary is a failure; on a laptop without it the
Prometheus tests are skipped with the reason.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.fakeloki import FakeLoki
from support.promserver import PrometheusServer, backfill, find_binary
from support.scenario import LOG_STREAM, log_lines, write_file

PLATFORM_SERVICES = 1000


def _require_prometheus() -> None:
    if find_binary("prometheus") and find_binary("promtool"):
        return
    if os.environ.get("CI"):
        pytest.fail("prometheus/promtool missing: .ci/run must apt-get install prometheus")
    pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus)")


@pytest.fixture(scope="session")
def prometheus_binaries() -> None:
    _require_prometheus()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus with the scenario backfilled (chatbot timeline + 1,000 platform services)."""
    _require_prometheus()
    workdir = tmp_path_factory.mktemp("prometheus")
    data = workdir / "scenario.om"
    write_file(data, services=PLATFORM_SERVICES)
    server = PrometheusServer(workdir)
    backfill(data, server.storage)
    data.unlink()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def loki() -> Iterator[FakeLoki]:
    """The protocol-faithful Loki holding the scenario's JSON answer logs."""
    server = FakeLoki().start()
    server.push(LOG_STREAM, log_lines())
    yield server
    server.stop()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config plus rule files into tmp_path; returns the config path."""

    def write(prometheus_url: str, rules: dict[str, str], extra: str = "") -> Path:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(exist_ok=True)
        for name, text in rules.items():
            (rules_dir / name).write_text(textwrap.dedent(text))
        config = tmp_path / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                prometheus:
                  url: {prometheus_url}
                  timeout: 5s
                  retries: 1
                rules: [rules/*.yaml]
                state:
                  path: {tmp_path / "state.db"}
                """
            )
            + textwrap.dedent(extra)
        )
        return config

    return write


REPO = Path(__file__).resolve().parent.parent


TIERS = ("unit", "component", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries its tier's marker, from the folder it lives in."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz tests' inputs tried per target (tests/support/fuzzing.py), when any ran."""
    from support.fuzzing import summary

    for line in summary():
        terminalreporter.write_line(line)
