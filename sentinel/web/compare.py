"""Comparing a secret a caller sent with the one Sentinel holds: in constant time, and
never failing on what the caller chose to send.

`hmac.compare_digest` takes as long for every wrong guess of the same length, so response
times tell an attacker nothing about how much of a token, CSRF token or cookie signature
was right. Given two `str`, it raises TypeError if either holds a non-ASCII character — a
request with `csrf=é` or a cookie signature `é` was a 500; comparing the UTF-8 bytes
(surrogates passed through, as a lone one can arrive in JSON) never raises.
"""

from __future__ import annotations

import hmac


def same_secret(given: str | None, expected: str) -> bool:
    """Whether `given` equals `expected`, in time independent of where they differ."""
    if not given or not expected:
        return False
    return hmac.compare_digest(_utf8(given), _utf8(expected))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
