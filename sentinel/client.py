"""Command-line clients of a running daemon: `sentinel gate` and `sentinel silence`.

Exit codes of `sentinel gate`: 0 pass, 1 fail, 3 still pending at the deadline, 2 error.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import aiohttp

from sentinel import jsonenc

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_PENDING = 0, 1, 2, 3


def _headers() -> dict[str, str]:
    token = os.environ.get("SENTINEL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, headers=_headers(), **kwargs) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, {"error": (await resp.text())[:300]}


async def gate(
    url: str, params: dict[str, str], wait: float, interval: float, out: Any = sys.stdout
) -> int:
    deadline = time.monotonic() + wait
    last_reasons: list[str] | None = None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                status, body = await _request(
                    session, "GET", f"{url.rstrip('/')}/api/v1/gate", params=params
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, body = 0, {"error": f"cannot reach sentinel: {exc}"}
            if status in (400, 401, 404):
                print(f"error: {body.get('error')}", file=sys.stderr)
                return EXIT_ERROR
            decision = body.get("decision") if status in (200, 412, 503) else None
            reasons = body.get("reasons", []) if decision else [str(body.get("error"))]
            if reasons != last_reasons:
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {decision or 'unreachable'}", file=out)
                for reason in reasons:
                    print(f"  - {reason}", file=out)
                last_reasons = reasons
            if decision == "pass":
                return EXIT_PASS
            if decision == "fail":
                return EXIT_FAIL
            if time.monotonic() + interval > deadline:
                print("still pending at the deadline", file=sys.stderr)
                return EXIT_PENDING if decision == "pending" else EXIT_ERROR
            await asyncio.sleep(interval)


async def silence(
    url: str, action: str, payload: dict[str, Any] | None, silence_id: str | None
) -> int:
    base = f"{url.rstrip('/')}/api/v1/silences"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            if action == "add":
                status, body = await _request(session, "POST", base, json=payload)
            elif action == "expire":
                status, body = await _request(session, "DELETE", f"{base}/{silence_id}")
            else:
                status, body = await _request(session, "GET", base)
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"error: cannot reach sentinel: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if status >= 400:
        print(f"error: HTTP {status}: {body.get('error', body)}", file=sys.stderr)
        return EXIT_ERROR if status != 404 else 1
    if action == "list":
        for s in body:
            matchers = ",".join(
                f"{m['name']}{'=~' if m['isRegex'] else '='}{m['value']}" for m in s["matchers"]
            )
            ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["ends_at"]))
            who = f"{s['author']}: {s['comment']}"
            print(f"{s['id']}  {s['status']:<8} {matchers}  until {ends}  {who}")
    else:
        print(jsonenc.dumps(body, indent=2))
    return 0
