"""Sentinel's own metrics, served at `/metrics` (prometheus-client, private registry).

SLO gauges let Grafana and Alertmanager use Sentinel's verdicts directly:
`sentinel_slo_breached == 1` is an alert expression on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from sentinel import __version__
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.model import SLIKind
from sentinel.slicing import ITEMS_PER_YIELD, run

_STATUS_CODE = {Status.OK: 0.0, Status.BREACH: 1.0, Status.NO_DATA: -1.0}
# A result's service, SLO and labels as they come (cheaper to build than the instance label).
_Ref = tuple[str, str, tuple[tuple[str, str], ...]]


def instance_label(result: SLOResult) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(result.labels.items()))


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.eval_duration = Histogram(
            "sentinel_evaluation_duration_seconds",
            "Duration of one evaluation cycle of a rule group.",
            ["group"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.cycles = Counter(
            "sentinel_evaluation_cycles_total",
            "Evaluation cycles by outcome (ok, source_error, overrun, crash).",
            ["group", "outcome"],
            registry=r,
        )
        self.queries = Counter(
            "sentinel_queries_total", "Queries sent, by source.", ["source"], registry=r
        )
        self.query_errors = Counter(
            "sentinel_query_errors_total",
            "Failed queries by source and error type.",
            ["source", "error_type"],
            registry=r,
        )
        self.last_success = Gauge(
            "sentinel_last_successful_evaluation_timestamp_seconds",
            "Unix time of the last cycle without source errors.",
            ["group"],
            registry=r,
        )
        labels = ["service", "slo", "instance"]
        self.slo_status = Gauge(
            "sentinel_slo_status",
            "SLO status: 0 ok, 1 breach, -1 no_data.",
            labels,
            registry=r,
        )
        self.slo_breached = Gauge(
            "sentinel_slo_breached", "1 while the SLO breaches.", labels, registry=r
        )
        self.slo_value = Gauge(
            "sentinel_slo_value", "Measured SLI value (NaN without data).", labels, registry=r
        )
        self.slo_threshold = Gauge(
            "sentinel_slo_threshold", "Threshold the SLI is compared with.", labels, registry=r
        )
        self.budget_remaining = Gauge(
            "sentinel_slo_error_budget_remaining",
            "Fraction of the error budget left over the SLO period (negative when overspent).",
            labels,
            registry=r,
        )
        self.burn_rate = Gauge(
            "sentinel_slo_burn_rate",
            "Error-budget burn rate over a window (1 = exactly on budget).",
            [*labels, "window"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "sentinel_dependency_up", "1 if the last call succeeded.", ["dependency"], registry=r
        )
        self.reloads = Counter(
            "sentinel_config_reloads_total", "Config reloads by outcome.", ["outcome"], registry=r
        )
        self.task_failures = Counter(
            "sentinel_background_task_failures_total",
            "Background tasks (reload, cycle) that ended with an unexpected exception.",
            ["task"],
            registry=r,
        )
        self.notifications = Counter(
            "sentinel_notifications_total",
            "Notification deliveries by notifier and outcome.",
            ["notifier", "outcome"],
            registry=r,
        )
        self.gate_decisions = Counter(
            "sentinel_gate_decisions_total", "Gate verdicts.", ["decision"], registry=r
        )
        # Synthetic probes (sentinel/daemon/probes.py): the success ratio over a window,
        # `avg_over_time(sentinel_probe_success{probe="chat"}[5m])`, is an SLI of its own.
        self.probe_success = Gauge(
            "sentinel_probe_success",
            "1 if the probe's last run passed, else 0.",
            ["probe"],
            registry=r,
        )
        self.probe_duration = Histogram(
            "sentinel_probe_duration_seconds",
            "Duration of a probe run (the request and the readiness check).",
            ["probe"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60),
            registry=r,
        )
        self.probe_last_run = Gauge(
            "sentinel_probe_last_run_timestamp_seconds",
            "Unix time the probe's last run started.",
            ["probe"],
            registry=r,
        )
        # Fed by daemon/looplag.py: how late the event loop ran a task that was due. Every
        # answer (the gate included) waits this long on top of its own work.
        self.loop_lag = Histogram(
            "sentinel_event_loop_lag_seconds",
            "How late the event loop woke a task that was due (time the loop was held).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        Info("sentinel_build", "Sentinel build information.", registry=r).info(
            {"version": __version__}
        )
        self._slo_series: dict[str, set[tuple[str, str, str]]] = {}
        self._burn_series: dict[str, set[tuple[str, str, str, str]]] = {}
        self._children: dict[
            str, dict[tuple[str, str, tuple[tuple[str, str], ...]], _Children]
        ] = {}

    def record_results(self, group: str, results: Iterable[SLOResult]) -> None:
        """Set the SLO gauges of one cycle's results; remove the series of instances that
        are gone (in one piece; the daemon runs `record_steps` in slices)."""
        run(self.record_steps(group, results))

    def record_steps(self, group: str, results: Iterable[SLOResult]) -> Iterator[None]:
        """`record_results` as a generator yielding every few results (sentinel/slicing.py).
        The gauges' children are kept per instance between cycles: looking them up by
        label values (`Gauge.labels`) was most of this method's cost, which runs on the
        event loop after every cycle. The group's bookkeeping is replaced at the end only,
        so a scrape between two slices sees the gauges of both cycles, never a series
        removed that is still there."""
        previous = self._children.get(group, {})
        children: dict[_Ref, _Children] = {}
        current = set()
        burn_keys = set()
        nan = float("nan")
        breach = Status.BREACH
        for n, res in enumerate(results, 1):
            if n % ITEMS_PER_YIELD == 0:
                yield
            ref = (res.service, res.slo, tuple(res.labels.items()))
            entry = children.get(ref) or previous.get(ref)
            if entry is None:
                key = (res.service, res.slo, instance_label(res))
                entry = _Children(
                    key,
                    self.slo_status.labels(*key),
                    self.slo_breached.labels(*key),
                    self.slo_value.labels(*key),
                    self.slo_threshold.labels(*key),
                )
            children[ref] = entry
            key = entry.key
            if res.budget is not None and res.kind != SLIKind.BURN_RATE:
                remaining = res.budget.get("remaining")
                if entry.remaining is None:
                    entry.remaining = self.budget_remaining.labels(*key)
                entry.remaining.set(nan if remaining is None else remaining)
                for window, rate in res.budget.get("burn_rates", {}).items():
                    burn_keys.add((*key, window))
                    child = entry.burn.get(window)
                    if child is None:
                        child = entry.burn[window] = self.burn_rate.labels(*key, window)
                    child.set(nan if rate is None else rate)
            current.add(key)
            entry.status.set(_STATUS_CODE[res.status])
            entry.breached.set(1.0 if res.status is breach else 0.0)
            entry.value.set(nan if res.value is None else res.value)
            entry.threshold.set(res.threshold)
        # Series of SLOs/instances that disappeared (reload, vanished instance) are removed,
        # so dashboards do not show a frozen last value.
        for key in self._slo_series.get(group, set()) - current:
            for gauge in (self.slo_status, self.slo_breached, self.slo_value, self.slo_threshold):
                gauge.remove(*key)
            with contextlib.suppress(KeyError):
                self.budget_remaining.remove(*key)
        gone = self._burn_series.get(group, set()) - burn_keys
        for burn_key in gone:
            self.burn_rate.remove(*burn_key)
        if gone:  # a removed child must not be set again: the next lookup makes a new one
            for entry in children.values():
                for window in [w for w in entry.burn if (*entry.key, w) in gone]:
                    del entry.burn[window]
        self._slo_series[group] = current
        self._burn_series[group] = burn_keys
        self._children[group] = children

    def forget_group(self, group: str) -> None:
        self.record_results(group, [])
        self._slo_series.pop(group, None)

    def record_probe(self, probe: str, success: bool, duration: float, at: float) -> None:
        self.probe_success.labels(probe).set(1.0 if success else 0.0)
        self.probe_duration.labels(probe).observe(duration)
        self.probe_last_run.labels(probe).set(at)

    def forget_probe(self, probe: str) -> None:
        """A probe removed by a reload: its series go, as a removed SLO's do."""
        for metric in (self.probe_success, self.probe_duration, self.probe_last_run):
            with contextlib.suppress(KeyError):
                metric.remove(probe)
        self.forget_group(f"probe:{probe}")


@dataclass(slots=True)
class _Children:
    """One SLO instance's gauge children (what `Gauge.labels(...)` returns), kept
    between cycles."""

    key: tuple[str, str, str]  # service, slo, instance
    status: Gauge
    breached: Gauge
    value: Gauge
    threshold: Gauge
    remaining: Gauge | None = None
    burn: dict[str, Gauge] = field(default_factory=dict)
