"""Verify a Sentinel rollback webhook before acting on it (standard library only).

Sentinel signs each delivery: `X-Sentinel-Signature: sha256=HMAC-SHA256(secret,
"<X-Sentinel-Timestamp>.<raw body>")`. A receiver must check three things, in this order:

1. the signature, over the raw body bytes as received, compared in constant time;
2. the timestamp, within MAX_AGE seconds of its own clock — a captured delivery replayed
   later is refused (the signature covers the timestamp, so it cannot be moved);
3. the incident, acted on once: Sentinel retries a failed delivery (5xx, 429, timeout)
   with a new timestamp and signature, and a replay inside MAX_AGE is still authentic, so
   remember the incident ids acted on (durably, at least as long as a rollback matters)
   and answer a repeat 2xx without acting. Take the id from the signed body, not from
   the `Idempotency-Key` header, which the signature does not cover. With a custom
   `body_template`, keep `{{ rollback.incident_id }}` in the body.

Answer 401 to a refused delivery (Sentinel does not retry a 4xx) and 2xx otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, MutableSet

MAX_AGE = 300  # seconds either side of the receiver's clock


class Refused(Exception):
    """Not an authentic, fresh delivery: answer 401 and do nothing."""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    acted_on: MutableSet[str],
    now: float | None = None,
) -> bool:
    """True: act on this rollback. False: authentic, but this incident was already acted
    on (a retry or a replay): answer 2xx and do nothing. Raises Refused otherwise.
    `headers` must be case-insensitive as HTTP headers are (aiohttp, Flask, Django...)."""
    stamp = headers.get("X-Sentinel-Timestamp", "")
    given = headers.get("X-Sentinel-Signature", "")
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape")):
        raise Refused("bad signature")
    clock = time.time() if now is None else now
    if not stamp.isdigit() or abs(clock - int(stamp)) > MAX_AGE:
        raise Refused("timestamp outside the replay window")
    incident = json.loads(body)["incident_id"]  # signed, unlike Idempotency-Key
    if incident in acted_on:
        return False
    acted_on.add(incident)
    return True
