"""Parsing of points in time given on the command line or in requests."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str) -> float:
    """RFC 3339 ('2026-11-20T14:05:00Z') or Unix seconds ('1763647500') -> Unix seconds."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected RFC 3339 (2026-11-20T14:05:00Z) or Unix seconds, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
