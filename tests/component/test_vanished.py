"""Instances that vanish (a retired service, a deleted pod): real Prometheus with the
scenario, whose chatbot series are gone from minute 240, and the daemon's parts in-process
on the scenario's clock. A vanished instance is no_data at first; once absent for
`evaluation.forget_after` with quiet alerts it is forgotten (no more results, its alert
rows deleted); one whose alert fires is kept, whatever the time."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentinel.alerting.state import Alert, AlertState
from sentinel.alerting.store import Store
from sentinel.config import load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.evaluate.slo import Status
from sentinel.rules.loader import load_rules
from support.promserver import PrometheusServer
from support.scenario import at

RULES = """\
version: sentinel/v1
service: chatbot
labels: {namespace: chatbot}
slos:
  - name: errors-by-service
    sli: &errors
      promql:
        # chatbot-backend's 5xx ratio, and a service whose series stay: `stayer`, at 0.
        query: >-
          sum by (service) (rate(http_requests_total{status=~"5.."}[$window]))
          / sum by (service) (rate(http_requests_total[$window]))
          or label_replace(vector(0), "service", "stayer", "", "")
    threshold: 0.005
    window: 5m
    group_by: [service]
  - name: errors-or-silence
    description: Missing data is a breach here.
    sli: *errors
    threshold: 0.005
    window: 5m
    group_by: [service]
    alert: {for: 1m, no_data: alerting}
  - name: errors-silence-2h
    description: Missing data for 2 h is a breach here.
    sli: *errors
    threshold: 0.005
    window: 5m
    group_by: [service]
    alert: {no_data_for: 2h}
  - name: backend-only
    description: No other service; all of its data vanishes at once.
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.5%
    window: 5m
    group_by: [service]
"""


class Clock:
    now = at(0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def built(
    tmp_path: Path, prometheus: PrometheusServer
) -> AsyncIterator[tuple[Assembly, Clock]]:
    assembly, clock = await _assemble(tmp_path, prometheus)
    yield assembly, clock
    await assembly.cleanup()


async def _assemble(tmp_path: Path, prometheus: PrometheusServer) -> tuple[Assembly, Clock]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prometheus.url}"}}
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            evaluation: {{forget_after: 10m}}
            """
        )
    )
    config = load_config(tmp_path / "config.yaml")
    clock = Clock()
    assembly = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), clock)
    return assembly, clock


async def replay(assembly: Assembly, clock: Clock, minutes: range) -> None:
    for minute in minutes:
        clock.now = at(minute)
        await assembly.daemon.run_group("chatbot", clock.now)


def backend(assembly: Assembly, slo: str) -> list[Status]:
    results = assembly.daemon.results["chatbot"]
    return [
        r.status for r in results if r.slo == slo and r.labels.get("service") == "chatbot-backend"
    ]


async def test_a_vanished_quiet_instance_is_forgotten_and_others_are_kept(
    built: tuple[Assembly, Clock],
) -> None:
    assembly, clock = built
    await replay(assembly, clock, range(230, 240))
    assert backend(assembly, "errors-by-service") == [Status.NO_DATA]  # idle: 0/0
    store_keys = set(assembly.store.load_alerts())
    quiet_key = next(k for k in store_keys if k.startswith("chatbot-backend/errors-by-service{"))
    firing_key = next(k for k in store_keys if k.startswith("chatbot-backend/errors-or-silence{"))
    assert assembly.manager.alerts[firing_key].state is AlertState.FIRING

    # The series are gone from minute 240 (Prometheus shows them 5 more minutes): within
    # forget_after of the last answer that held them, the instance is still no_data.
    await replay(assembly, clock, range(240, 252))
    assert backend(assembly, "errors-by-service") == [Status.NO_DATA]
    assert quiet_key in assembly.store.load_alerts()

    await replay(assembly, clock, range(252, 260))
    assert backend(assembly, "errors-by-service") == []
    assert quiet_key not in assembly.store.load_alerts()
    assert quiet_key not in assembly.manager.alerts
    stayer = [r for r in assembly.daemon.results["chatbot"] if r.labels.get("service") == "stayer"]
    assert {r.slo for r in stayer} == {
        "errors-by-service",
        "errors-or-silence",
        "errors-silence-2h",
    }
    # `no_data: alerting`: missing data is its breach; forgetting must not resolve it.
    assert backend(assembly, "errors-or-silence") == [Status.NO_DATA]
    assert assembly.store.load_alerts()[firing_key].state is AlertState.FIRING
    # `no_data_for: 2h`: inactive, but counting its missing data towards a breach.
    assert backend(assembly, "errors-silence-2h") == [Status.NO_DATA]
    # Every instance of the SLO vanished at once (all of its data is missing): kept, each
    # instance no_data, rather than one "no data at all" result with no instance.
    assert backend(assembly, "backend-only") == [Status.NO_DATA]


async def test_quiet_states_of_instances_gone_while_sentinel_was_stopped_are_swept(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """Alert states in the store of instances no answer holds any more (a pod deleted while
    Sentinel was stopped): nothing reports them again, so once Sentinel has run
    `forget_after` the quiet ones are deleted; a firing one stays (its no-data policy
    decides). Before, they stayed in the store and in memory for ever."""
    ghost = "chatbot-backend/errors-by-service{service=ghost}"
    firing_ghost = "chatbot-backend/errors-by-service{service=ghost-firing}"
    store = Store(tmp_path / "state.db", clock=lambda: at(0))
    store.commit_cycle(
        [
            Alert(ghost, AlertState.RESOLVED, at(100), "inc0", at(90)),
            Alert(firing_ghost, AlertState.FIRING, at(100), "inc1", at(100)),
        ],
        [],
        [],
        [],
        at(100),
    )
    store.close()
    assembly, clock = await _assemble(tmp_path, prometheus)
    try:
        await replay(assembly, clock, range(230, 239))
        assert ghost in assembly.store.load_alerts()  # not yet forget_after since the start
        await replay(assembly, clock, range(239, 242))
        assert set(assembly.store.load_alerts()) & {ghost, firing_ghost} == {firing_ghost}
        assert ghost not in assembly.manager.alerts
        stayed = assembly.manager.alerts[firing_ghost]
        assert stayed.state is AlertState.FIRING
    finally:
        await assembly.cleanup()
