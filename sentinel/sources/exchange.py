"""One HTTP request of a synthetic probe as it happened: what was asked, what came back,
how long it took, or how it failed. Plain data, so the judging (sentinel/evaluate/
probe_check.py) is pure and tested without a server; sentinel/sources/probe.py makes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exchange:
    method: str
    url: str  # redacted: no credentials, query string or known secret
    status: int | None  # None: no answer (`error` says why)
    body: bytes = b""
    elapsed: float = 0.0  # seconds until the whole answer was read, or until it failed
    error: str | None = None  # "cannot connect: ...", "no answer within 5s", ...
    truncated: bool = False  # the answer was larger than the probe reads

    @property
    def request(self) -> str:
        return f"{self.method} {self.url}"
