"""The one JSON encoding rule of the project: every document Sentinel writes (API
answers, stored rows, outbox payloads, webhook bodies, `--format json`, JSON logs) is
valid JSON (RFC 8259), which has no NaN or Infinity.

A non-finite float becomes `null`. Callers that can say why (an SLO value that is not a
number) carry the reason in a sibling field; this module only guarantees the encoding
never produces `NaN`/`Infinity` and never raises on an odd value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any


def finite(value: float | None) -> float | None:
    """The value when it is a finite number, else None."""
    if value is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None


def sanitize(data: Any) -> Any:
    """A copy of `data` with every non-finite float replaced by None (containers walked)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: sanitize(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [sanitize(v) for v in data]
    return data


# `json.dumps` with any argument builds an encoder per call: a third of the cost of the
# small documents written thousands of times a cycle (alert rows, a storm's alerts).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str)


def dumps(data: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text: non-finite floats as null, unknown objects as their str()."""
    try:
        if indent is None and not sort_keys:
            return _ENCODER.encode(data)
        return json.dumps(
            data,
            ensure_ascii=False,
            allow_nan=False,
            default=str,
            indent=indent,
            sort_keys=sort_keys,
        )
    except ValueError:
        # Only reached when a non-finite float is present: walk and replace once.
        return json.dumps(
            sanitize(data),
            ensure_ascii=False,
            allow_nan=False,
            default=str,
            indent=indent,
            sort_keys=sort_keys,
        )


def list_parts(items: Iterable[Any]) -> Iterator[str]:
    """The text of `dumps(list(items))` in pieces, one element at a time, for an answer
    written as it is encoded (web.app.stream_json): json's C encoder holds the interpreter
    for a whole call, so one call over a large answer (5.5 MB, ~100 ms) held the event
    loop as long; between elements it gets its turn."""
    yield "["
    sep = ""
    for item in items:
        yield sep + dumps(item)
        sep = ", "
    yield "]"
