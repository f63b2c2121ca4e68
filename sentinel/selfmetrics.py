"""Sentinel's own metrics, served at `/metrics` (prometheus-client, private registry).

SLO gauges let Grafana and Alertmanager use Sentinel's verdicts directly:
`sentinel_slo_breached == 1` is an alert expression on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sentinel import __version__
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.model import SLIKind

_STATUS_CODE = {Status.OK: 0.0, Status.BREACH: 1.0, Status.NO_DATA: -1.0}


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
        # The SLO gauges are built at scrape time from each group's latest results
        # (`_SLOGauges`): prometheus-client children per instance cost ~3 KB and a lock
        # each, 12 per instance with budgets (24 MB and a third of the record step's CPU
        # per cycle at 1,000 services x 3 SLIs).
        self.slo_gauges = _SLOGauges()
        r.register(self.slo_gauges)
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
        # Plain counts, turned into the counter family when scraped: a prometheus-client
        # child's inc (a lock and checks) was ~3 % of a gate request's CPU.
        self.gate_decisions = _Counts("sentinel_gate_decisions", "Gate verdicts.", "decision")
        r.register(self.gate_decisions)
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
        # One series, the loaded rules' fingerprint as a label (set at start and on every
        # reload): `count(count by (fingerprint) (sentinel_rules_info)) > 1` finds
        # replicas that run different rules.
        self._rules_shown: str | None = None
        self.rules_info = Gauge(
            "sentinel_rules_info",
            "The loaded rules' fingerprint (RuleSet.fingerprint), always 1.",
            ["fingerprint"],
            registry=r,
        )

    def record_rules(self, fingerprint: str) -> None:
        # The new series first, then the old one removed: /metrics renders in a worker
        # thread, and a scrape between a clear and a set would see no rules at all.
        self.rules_info.labels(fingerprint).set(1)
        if self._rules_shown not in (None, fingerprint):
            self.rules_info.remove(self._rules_shown)
        self._rules_shown = fingerprint

    def record_results(self, group: str, results: Iterable[SLOResult]) -> None:
        """Publish one cycle's results as the group's SLO gauges (the series of instances
        that are gone disappear with them)."""
        self.slo_gauges.results[group] = tuple(results)

    def record_steps(self, group: str, results: Iterable[SLOResult]) -> Iterator[None]:
        """`record_results` for the daemon's sliced record step (sentinel/slicing.py):
        one assignment, nothing to slice."""
        self.record_results(group, results)
        yield from ()

    def forget_group(self, group: str) -> None:
        self.slo_gauges.results.pop(group, None)

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


class _Counts(Collector):
    """A counter with one label whose values are counted in a plain dict by the event
    loop (`counts[value] += 1`) and read when scraped (in a worker thread: a dict of ints
    is read consistently enough for a counter, which never goes back)."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.counts: dict[str, int] = {}

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.counts.copy().items()):
            family.add_metric([value], float(count))
        yield family


class _SLOGauges(Collector):
    """`sentinel_slo_*` gauges of every group's latest results, built when scraped (in
    the worker thread that renders /metrics: `results` is replaced per group, never
    changed in place, so a snapshot of its values is consistent)."""

    def __init__(self) -> None:
        self.results: dict[str, tuple[SLOResult, ...]] = {}

    def describe(self) -> list[Metric]:
        return []  # families are known only when collected; none is registered twice

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "slo", "instance"]
        status = GaugeMetricFamily(
            "sentinel_slo_status", "SLO status: 0 ok, 1 breach, -1 no_data.", labels=labels
        )
        breached = GaugeMetricFamily(
            "sentinel_slo_breached", "1 while the SLO breaches.", labels=labels
        )
        value = GaugeMetricFamily(
            "sentinel_slo_value", "Measured SLI value (NaN without data).", labels=labels
        )
        threshold = GaugeMetricFamily(
            "sentinel_slo_threshold", "Threshold the SLI is compared with.", labels=labels
        )
        remaining = GaugeMetricFamily(
            "sentinel_slo_error_budget_remaining",
            "Fraction of the error budget left over the SLO period (negative when overspent).",
            labels=labels,
        )
        burn = GaugeMetricFamily(
            "sentinel_slo_burn_rate",
            "Error-budget burn rate over a window (1 = exactly on budget).",
            labels=[*labels, "window"],
        )
        nan = float("nan")
        # One series per (service, slo, instance): the last result wins, as a gauge set
        # twice would (a scrape must never hold a duplicate series).
        latest: dict[tuple[str, str, str], SLOResult] = {}
        for results in list(self.results.values()):
            for res in results:
                latest[(res.service, res.slo, instance_label(res))] = res
        for key, res in latest.items():
            series = list(key)
            status.add_metric(series, _STATUS_CODE[res.status])
            breached.add_metric(series, 1.0 if res.status is Status.BREACH else 0.0)
            value.add_metric(series, nan if res.value is None else res.value)
            threshold.add_metric(series, res.threshold)
            if res.budget is not None and res.kind != SLIKind.BURN_RATE:
                left = res.budget.get("remaining")
                remaining.add_metric(series, nan if left is None else left)
                for window, rate in res.budget.get("burn_rates", {}).items():
                    burn.add_metric([*series, window], nan if rate is None else rate)
        yield from (status, breached, value, threshold, remaining, burn)
