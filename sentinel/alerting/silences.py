"""Silences: label matchers over an alert's labels (service, slo, severity and the
instance labels) with a start and an end. Pure matching; storage lives in the store."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.rules.model import LABEL_NAME


@dataclass(frozen=True)
class SilenceMatcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = (
            re.fullmatch(self.value, actual) is not None if self.is_regex else actual == self.value
        )
        return hit if self.is_equal else not hit


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[SilenceMatcher, ...]
    starts_at: float
    ends_at: float
    author: str
    comment: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [
                {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
                for m in self.matchers
            ],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "author": self.author,
            "comment": self.comment,
            "created_at": self.created_at,
            "status": "active"
            if self.active(now)
            else ("pending" if now < self.starts_at else "expired"),
        }


def parse_matchers(raw: object) -> tuple[SilenceMatcher, ...]:
    """Accept Alertmanager-style [{name, value, isRegex, isEqual}] or {"service": "x"}."""
    items: Sequence[Any]
    if isinstance(raw, dict):
        items = [{"name": k, "value": v} for k, v in raw.items()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError("matchers: expected a list of {name, value} or a mapping")
    if not items:
        raise ValueError("matchers: at least one matcher is required (no silence-everything)")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"matchers[{i}]: expected {{name, value}}")
        name, value = item["name"], item.get("value")
        if not LABEL_NAME.match(name) or not isinstance(value, str):
            raise ValueError(f"matchers[{i}]: invalid label name or non-string value")
        is_regex = bool(item.get("isRegex", False))
        if is_regex:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matchers[{i}].value: invalid regex: {exc}") from None
        out.append(SilenceMatcher(name, value, is_regex, bool(item.get("isEqual", True))))
    return tuple(out)


def alert_labels(
    service: str, slo: str, severity: str, labels: Mapping[str, str]
) -> dict[str, str]:
    return {**labels, "service": service, "slo": slo, "severity": severity}
