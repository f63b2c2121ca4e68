"""Parsing of human units used in config and rule files: durations and percentages.

Everything is normalised at the boundary: durations to float seconds, percentages to 0..1.
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}
# Longer than any window, period or timeout means anything; beyond it a value is a typo
# (or an attack) that would overflow datetime arithmetic and the scheduler downstream.
MAX_DURATION = 100 * _UNIT_SECONDS["y"]


def parse_duration(value: object) -> float:
    """'1h30m' / '1.5s' / '250ms' / 30 (seconds) -> seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5m' or '1.5s', got {value!r}")
    if isinstance(value, int | float):
        seconds = _as_float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"expected a duration like '5m', '1h30m' or '1.5s', got {value!r}")
    else:
        raise ValueError(f"expected a duration like '5m' or '1.5s', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and >= 0, got {_short(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must be at most 100y, got {_short(value)}")
    return seconds


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond 1e308
        return math.inf


def _short(value: object) -> str:
    """The value as a message shows it: a 400-digit number is not worth printing."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge number"
    return text if len(text) <= 60 else text[:57] + "..."


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest PromQL duration ('5m', '1h30m', '754s', '1500ms')."""
    if seconds <= 0:
        return "0s"
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    remaining = int(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            out.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(out)


def parse_percent(value: object) -> float:
    """'99.5%' or 99.5 -> 0.995. Must lie strictly between 0 and 100."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage like '99.5%', got {value!r}")
    number: float
    if isinstance(value, int | float):
        number = _as_float(value)
    elif isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a percentage like '99.5%', got {value!r}") from None
    else:
        raise ValueError(f"expected a percentage like '99.5%', got {value!r}")
    if not (0 < number < 100):
        shown = value[:60] if isinstance(value, str) else _short(value)
        raise ValueError(f"must be between 0 and 100 (got {shown})")
    return number / 100.0


# The SLIKind values (sentinel.rules.model) shown as percentages and in seconds; every
# other kind is a plain number. Matched as strings, so values read back from JSON
# (outbox payloads) format the same as live ones.
_PERCENT_KINDS = frozenset({"ratio", "log_ratio"})
_SECOND_KINDS = frozenset({"latency"})


def format_measure(
    kind: str, value: float | None, *, digits: int = 3, missing: str = "no data"
) -> str:
    """The one way an SLI value or threshold is written for people: `2.31 s`, `0.5 %`,
    `0.993`; `missing` when there is no value."""
    if value is None:
        return missing
    if kind in _PERCENT_KINDS:
        return f"{value * 100:.{digits}g} %"
    if kind in _SECOND_KINDS:
        return f"{value:.{digits}g} s"
    return f"{value:.{digits + 1}g}"


def comparison(good_when: str, breached: bool) -> str:
    """The operator between a value and its threshold, as the breach wording needs it:
    `>` breaches a `below` SLO, `<=` holds it (and `<` / `>=` for `above`)."""
    below = good_when != "above"
    if breached:
        return ">" if below else "<"
    return "<=" if below else ">="
