"""The scheduler adapter: APScheduler 3 behind the few calls the daemon needs.

Each rule group is one interval job (`max_instances=1`, coalescing: a slow backend never
stacks cycles). Triggers are built and proven able to compute their next fire time
before any job is replaced, so an interval the scheduler cannot hold (`1000000000d`
overflows a datetime, `0s` would spin) is refused as a config problem naming its file
instead of failing inside the scheduler after the old jobs are gone.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sentinel.errors import ConfigError, Problem
from sentinel.rules.model import RuleSet


@dataclass(frozen=True)
class GroupJob:
    group: str
    interval: float
    trigger: IntervalTrigger


def schedule_jobs(rules: RuleSet) -> list[GroupJob]:
    """One interval trigger per group. Raises ConfigError naming every group that
    cannot be scheduled."""
    now = datetime.now(UTC)
    jobs, problems = [], []
    for group in rules.groups:
        interval = group.interval
        try:
            if not math.isfinite(interval) or interval <= 0:
                raise ValueError("must be a positive duration")
            trigger = IntervalTrigger(seconds=interval, timezone=UTC)
            trigger.get_next_fire_time(now, now)
        except (OverflowError, ValueError) as exc:
            problems.append(
                Problem(group.file, None, "interval", f"{interval:g}s cannot be scheduled: {exc}")
            )
            continue
        jobs.append(GroupJob(group.name, interval, trigger))
    if problems:
        raise ConfigError(problems)
    return jobs


class GroupScheduler:
    """Runs `job(group_name)` on each group's interval, the first time right away."""

    def __init__(self, job: Callable[[str], Awaitable[None]]) -> None:
        self.job = job
        self.aps = AsyncIOScheduler(timezone="UTC")

    def replace(self, jobs: Sequence[GroupJob]) -> None:
        """Drop every job and add these (synchronous: no cycle sees a half-done set)."""
        self.aps.remove_all_jobs()
        for job in jobs:
            self.aps.add_job(
                self.job,
                job.trigger,
                args=[job.group],
                id=f"group:{job.group}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(job.interval)),
                next_run_time=datetime.now(UTC),
            )

    def start(self) -> None:
        self.aps.start()

    def shutdown(self) -> None:
        """Stop firing jobs. APScheduler cancels the jobs it is running: the daemon's jobs
        only await cycles it owns, which go on."""
        if self.aps.running:
            self.aps.shutdown(wait=False)
