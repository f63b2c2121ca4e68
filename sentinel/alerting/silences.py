"""Silences: label matchers over an alert's labels (service, slo, severity and the
instance labels) with a start and an end. Pure matching; storage lives in the store."""

from __future__ import annotations

import functools
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
        if not self.is_regex:
            hit = actual == self.value
        else:
            # The regex, resolved at the first match and kept on the matcher (not a field:
            # the store writes the fields): looked up by a value of 100,000 characters
            # at every match, the cache compared them all again for each alert.
            pattern = getattr(self, "_pattern", None)
            if pattern is None:
                pattern = regex_matcher(self.value)
                object.__setattr__(self, "_pattern", pattern)
            if type(pattern) is frozenset:
                hit = actual in pattern
            else:
                hit = pattern.fullmatch(actual) is not None  # type: ignore[union-attr]
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
                regex_matcher(value)
            except re.error as exc:
                raise ValueError(f"matchers[{i}].value: invalid regex: {exc}") from None
        out.append(SilenceMatcher(name, value, is_regex, bool(item.get("isEqual", True))))
    return tuple(out)


def alert_labels(
    service: str, slo: str, severity: str, labels: Mapping[str, str]
) -> dict[str, str]:
    return {**labels, "service": service, "slo": slo, "severity": severity}


# Silences' regexes, each compiled (or read as names) once for the process: the store
# gives new matcher objects at every cycle, and `re`'s own cache holds 512 patterns.
@functools.lru_cache(maxsize=1024)
def regex_matcher(value: str) -> frozenset[str] | re.Pattern[str]:
    """What a regex matcher's `value` matches in full (anchored, as in Alertmanager).

    A Slack click on a message of many services silences them with one regex, their
    escaped names joined by `|`. At 10,000 services `re` took ~80 ms to compile it, on
    the request path, and ~9 µs to match each alert against it (62 ms per cycle for
    7,000 alerts), since an alternation is tried branch by branch. Read as the set of
    names it lists, the same silence costs a set lookup; anything that is not purely
    such a list is compiled, with the same meaning either way
    (tests/unit/test_silence_matching.py checks both against `re.fullmatch`)."""
    names = literal_alternatives(value)
    return names if names is not None else re.compile(value)


_SPECIAL = frozenset(".^$*+?{}[]()")


def literal_alternatives(value: str) -> frozenset[str] | None:
    """The strings a regex made only of literal text, backslash-escaped punctuation and
    `|` matches in full, or None for anything else (classes, groups, quantifiers, `\\d`,
    backreferences...)."""
    names: list[str] = []
    current: list[str] = []
    i, end = 0, len(value)
    while i < end:
        char = value[i]
        if char == "\\":
            if i + 1 == end:
                return None
            escaped = value[i + 1]
            # `\d`, `\1`, `\b`, `\x41`: a class, a reference or an escape code, not the
            # character itself. Only punctuation and spaces stand for themselves.
            if escaped.isalnum() or escaped == "_":
                return None
            current.append(escaped)
            i += 2
            continue
        if char == "|":
            names.append("".join(current))
            current = []
        elif char in _SPECIAL:
            return None
        else:
            current.append(char)
        i += 1
    names.append("".join(current))
    return frozenset(names)
