"""The HTTP side of a synthetic probe: send the configured request (and the readiness
GET), time it, read a bounded answer, and describe a failure in words. Nothing is judged
here (sentinel/evaluate/probe_check.py does), and nothing raises: a service that does not
answer is an `Exchange` with its error, which the judge turns into a failed run.

Every request is marked (`X-Sentinel-Probe: 1`, `User-Agent: sentinel-probe/VERSION`) so
the service can leave probe traffic out of its user-facing SLIs. Redirects are not
followed (a redirect to a login page is a failure, not a pass) and cookies are not kept
between runs.
"""

from __future__ import annotations

import os
import time

import aiohttp

from sentinel import __version__, jsonenc
from sentinel.config import ProbeConfig
from sentinel.redact import redact_text, redact_url
from sentinel.sources.exchange import Exchange

PROBE_HEADER = "X-Sentinel-Probe"
USER_AGENT = f"sentinel-probe/{__version__}"
# An answer larger than this is not read further (and fails a probe that asserts fields).
MAX_BODY = 1024 * 1024


class ProbeClient:
    """One probe's HTTP session, reused across its runs."""

    def __init__(self, name: str, config: ProbeConfig, max_body: int = MAX_BODY) -> None:
        self.name = name
        self.config = config
        self.max_body = max_body
        self._session: aiohttp.ClientSession | None = None

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, **self.config.header_values()}
        headers[PROBE_HEADER] = "1"  # last: a configured header cannot unmark the probe
        if self.config.body is not None:
            headers.setdefault("Content-Type", "application/json")
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers(),
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=4),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self) -> Exchange:
        config = self.config
        body = None if config.body is None else jsonenc.dumps(config.body).encode()
        return await self.exchange(config.method, config.url, body)

    async def ready(self) -> Exchange | None:
        if self.config.ready_url is None:
            return None
        return await self.exchange("GET", self.config.ready_url, None)

    async def exchange(self, method: str, url: str, body: bytes | None) -> Exchange:
        """One request, bounded by the probe's timeout (connecting, waiting and reading)."""
        shown = redact_url(url)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        started = time.monotonic()
        try:
            async with self._get_session().request(
                method, url, data=body, timeout=timeout, allow_redirects=False
            ) as resp:
                content, truncated = await self._read(resp)
                status = resp.status
        except TimeoutError:
            return Exchange(
                method,
                shown,
                None,
                elapsed=time.monotonic() - started,
                error=f"no answer within {self.config.timeout:g}s",
            )
        except aiohttp.ClientError as exc:
            return Exchange(
                method, shown, None, elapsed=time.monotonic() - started, error=_describe(exc)
            )
        return Exchange(method, shown, status, content, time.monotonic() - started, None, truncated)

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_body:
                return b"".join(chunks), True  # the rest is dropped with the connection
            chunks.append(chunk)
        return b"".join(chunks), False


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio words a refused connection as "Connect call failed ('10.0.0.5', 80)";
        # name resolution errors have negative numbers and their own words.
        error = exc.os_error
        words = os.strerror(error.errno) if error.errno and error.errno > 0 else error.strerror
        return f"cannot connect: {words or error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    # Some aiohttp errors quote the URL; this text reaches Slack and gate answers.
    return redact_text(f"{type(exc).__name__}: {exc}")
