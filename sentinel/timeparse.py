"""Parsing of points in time given on the command line or in requests.

Only two forms are accepted, and only instants that every later step can format again:
Unix seconds as plain digits (`1763647500`, `1763647500.25`) and RFC 3339
(`2026-11-20T14:05:00Z`), between 1970-01-01 and 9999-12-31. `nan`, `inf`, `1e20` or a
year-1 date would otherwise reach `int()` or `datetime.fromtimestamp` deep inside an
evaluation and surface as a 500 after the queries were already sent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNIX_SECONDS = re.compile(r"\d{1,12}(\.\d+)?")
# 9999-12-31T23:59:59Z: the last instant datetime (and so rfc3339) can represent.
LATEST = 253402300799.0
FORMS = "RFC 3339 (2026-11-20T14:05:00Z) or Unix seconds (1795183500)"


def parse_time(value: str) -> float:
    """RFC 3339 ('2026-11-20T14:05:00Z') or Unix seconds ('1763647500') -> Unix seconds.

    Raises ValueError naming the accepted forms for anything else, including non-finite
    numbers and instants outside 1970-01-01..9999-12-31."""
    text = value.strip()
    seconds = float(text) if _UNIX_SECONDS.fullmatch(text) else _rfc3339(text, value)
    if not 0.0 <= seconds <= LATEST:
        raise ValueError(f"expected a time between 1970-01-01 and 9999-12-31, got {value!r}")
    return seconds


def _rfc3339(text: str, value: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"expected {FORMS}, got {value!r}") from None
