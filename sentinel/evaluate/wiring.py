"""Builds real sources and engines from config: the factory the daemon (at start and on
reload), the gate (its own source clients) and the offline commands all use."""

from __future__ import annotations

from sentinel.config import Config
from sentinel.evaluate.engine import Engine, QueryRenderer
from sentinel.query.promql import slo_query
from sentinel.sources.base import Source
from sentinel.sources.prometheus import PrometheusSource


def build_sources(config: Config) -> dict[str, Source]:
    sources: dict[str, Source] = {"prometheus": PrometheusSource(config.prometheus)}
    if config.loki is not None:
        from sentinel.sources.loki import LokiSource

        sources["loki"] = LokiSource(config.loki)
    return sources


def renderers() -> dict[str, QueryRenderer]:
    from sentinel.query.logql import slo_logql

    return {"prometheus": slo_query, "loki": slo_logql}


def build_engine(config: Config, daemon: bool = False) -> Engine:
    """`daemon`: the engine of scheduled cycles, which may reuse long windows' answers
    (evaluation.long_window_refresh); offline commands evaluate every instant afresh."""
    recorded = config.evaluation.budget_source == "recorded"
    reuse = daemon and config.evaluation.long_window_refresh == "auto"
    return Engine(
        build_sources(config), renderers(), recorded_budgets=recorded, reuse_windows=reuse
    )
