"""The daemon watches itself: a rule group that stops finishing cycles makes it unready,
a background task that fails is logged, counted and shown in health, a reload is
scheduled completely or not at all. The daemon runs in-process against the real
Prometheus, with an injected clock."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.daemon.runner import Daemon
from sentinel.daemon.scheduling import schedule_jobs
from sentinel.errors import ConfigError
from sentinel.evaluate.slo import SLOResult
from sentinel.evaluate.wiring import build_engine, build_sources
from sentinel.rules.loader import load_rules
from sentinel.rules.model import RuleGroup, RuleSet
from sentinel.selfmetrics import SelfMetrics
from support.promserver import PrometheusServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


def rule_file(service: str, threshold: str = "1.5s") -> str:
    return textwrap.dedent(
        f"""\
        version: sentinel/v1
        service: {service}
        interval: 60s
        slos:
          - name: latency
            sli:
              latency: {{histogram: chatbot_response_latency_seconds, quantile: 0.95}}
            threshold: {threshold}
            window: 5m
        """
    )


@pytest.fixture
async def daemon(tmp_path: Path, prometheus: PrometheusServer) -> AsyncIterator[Daemon]:
    (tmp_path / "rules").mkdir()
    for service in ("a", "b"):
        (tmp_path / "rules" / f"{service}.yaml").write_text(rule_file(service))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f'prometheus: {{url: "{prometheus.url}"}}\nrules: [rules/*.yaml]\n')
    config = load_config(config_path)
    built = Daemon(
        str(config_path),
        config,
        load_rules(config),
        engine=build_engine(config),
        metrics=SelfMetrics(),
        source_factory=build_sources,
        clock=Clock(),
    )
    yield built
    await built.stop()


async def first_cycles_done(daemon: Daemon) -> None:
    await daemon.start()
    for _ in range(200):
        if all(s.completed_at for s in daemon.group_status.values()) and len(
            daemon.group_status
        ) == len(daemon.rules.groups):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("first cycles did not finish")


async def test_a_group_that_stops_finishing_cycles_makes_ready_fail_naming_it(
    daemon: Daemon,
) -> None:
    clock = daemon.clock
    assert isinstance(clock, Clock)
    await first_cycles_done(daemon)
    assert daemon.readiness() == []

    # A result hook hangs (a locked store, a stuck notifier): group a's next cycle never
    # finishes, while group b carries on.
    release = asyncio.Event()

    async def hang(group: RuleGroup, results: list[SLOResult], at: float) -> None:
        if group.name == "a":
            await release.wait()

    daemon.result_hooks.append(hang)
    stuck = asyncio.ensure_future(daemon.run_group("a"))
    clock.now += 179
    await daemon.run_group("b")
    assert daemon.readiness() == []  # under 3 intervals of 60 s: no verdict yet

    clock.now += 2
    assert daemon.readiness() == [
        "rule group 'a' has not finished an evaluation for 3m1s (3 intervals of 1m)"
    ]

    release.set()
    await stuck
    assert daemon.readiness() == []


async def test_a_failing_background_task_is_logged_counted_and_shown_in_health(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("disk on fire")

    assert daemon.extra_health()["background_tasks"]["status"] == "healthy"
    task = daemon.tasks.spawn(broken(), "reload")
    await asyncio.wait({task})
    await asyncio.sleep(0)  # done-callbacks run on the next loop iteration

    check = daemon.extra_health()["background_tasks"]
    assert check["status"] == "unhealthy"
    assert check["failures_total"] == 1
    assert check["last_failure"]["task"] == "reload"
    assert check["last_failure"]["error"] == "RuntimeError: disk on fire"
    assert any(
        r.levelno == logging.ERROR and "background task reload failed" in r.getMessage()
        for r in caplog.records
    )
    failures = daemon.metrics.registry.get_sample_value(
        "sentinel_background_task_failures_total", {"task": "reload"}
    )
    assert failures == 1.0


def test_groups_the_scheduler_cannot_hold_are_refused_with_their_file() -> None:
    groups = tuple(
        RuleGroup(name, f"rules/{name}.yaml", "svc", interval, ())
        for name, interval in (
            ("huge", 1_000_000_000 * 86400.0),
            ("overflows-later", 900_000_000 * 86400.0),
            ("zero", 0.0),
            ("fine", 30.0),
        )
    )
    with pytest.raises(ConfigError) as err:
        schedule_jobs(RuleSet(groups))
    files = [p.file for p in err.value.problems]
    assert files == ["rules/huge.yaml", "rules/overflows-later.yaml", "rules/zero.yaml"]
    assert all(p.path == "interval" for p in err.value.problems)
    assert [j.group for j in schedule_jobs(RuleSet(groups[3:]))] == ["fine"]


async def test_a_reload_that_fails_while_switching_keeps_the_old_rules_and_schedule(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    await first_cycles_done(daemon)
    assert daemon._scheduler is not None
    scheduler = daemon._scheduler.aps  # fault injection: the scheduler refuses one job
    add_job = scheduler.add_job
    calls = {"n": 0}

    def add_job_failing_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # the second group of the new schedule
            raise OverflowError("date value out of range")
        return add_job(*args, **kwargs)

    monkeypatch.setattr(scheduler, "add_job", add_job_failing_once)
    rules_dir = Path(daemon.config_path).parent / "rules"
    (rules_dir / "a.yaml").write_text(rule_file("a", threshold="60s"))

    assert await daemon.reload() is False

    assert daemon.reload_status.status == "failed"
    assert daemon.reload_status.errors == [
        "reload not applied: OverflowError: date value out of range"
    ]
    assert {slo.threshold for slo in daemon.rules.slos} == {1.5}
    assert sorted(job.id for job in scheduler.get_jobs()) == ["group:a", "group:b"]


async def test_a_reload_whose_hook_fails_is_applied_and_reported_partial(
    daemon: Daemon,
) -> None:
    async def sync_dashboards() -> None:
        raise OSError("read-only file system")

    daemon.reload_hooks.append(sync_dashboards)
    assert await daemon.reload() is True
    assert daemon.reload_status.status == "partial"
    assert daemon.reload_status.errors == ["sync_dashboards failed: OSError: read-only file system"]
