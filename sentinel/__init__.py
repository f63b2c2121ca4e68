"""Sentinel: an SLO monitoring daemon for an LLM chatbot platform.

Data flow: rule files -> spec (pydantic) -> model (frozen dataclasses) -> query plan ->
sources (Prometheus, Loki) -> evaluation (pure) -> alert state -> notifiers / gate / dashboards.
"""

__version__ = "0.1.0"
