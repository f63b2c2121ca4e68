"""Command-line clients of a running daemon: `sentinel gate` and `sentinel silence`.

Exit codes of `sentinel gate`: 0 pass, 1 fail, 3 no verdict by the end of `--wait` (still
pending or marginal, or the gate overloaded: 429), 2 error (bad request, token, unknown
service, Sentinel unreachable). While pending (or marginal, in canary mode) it polls every
`--interval`; after a 429 it waits at least the Retry-After the gate asked for. In canary
mode each answer's comparison is printed as a table.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import aiohttp

from sentinel import jsonenc
from sentinel.cli.report import canary_table

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_PENDING = 0, 1, 2, 3


def _headers() -> dict[str, str]:
    token = os.environ.get("SENTINEL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    status, body, _ = await _exchange(session, method, url, **kwargs)
    return status, body


async def _exchange(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, float]:
    """(status, JSON body, Retry-After seconds or 0)."""
    async with session.request(method, url, headers=_headers(), **kwargs) as resp:
        retry_after = resp.headers.get("Retry-After", "")
        wait = float(retry_after) if retry_after.isascii() and retry_after.isdigit() else 0.0
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {"error": (await resp.text())[:300]}
        return resp.status, body, wait


async def gate(
    url: str, params: dict[str, str], wait: float, interval: float, out: Any = None
) -> int:
    out = out or sys.stdout  # looked up per call: tests swap sys.stdout
    deadline = time.monotonic() + wait
    last_reasons: list[str] | None = None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                status, body, retry_after = await _exchange(
                    session, "GET", f"{url.rstrip('/')}/api/v1/gate", params=params
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, body, retry_after = 0, {"error": f"cannot reach sentinel: {exc}"}, 0.0
            if not isinstance(body, dict):
                body = {"error": str(body)[:300]}
            if status in (400, 401, 404):
                print(f"error: {body.get('error')}", file=sys.stderr)
                return EXIT_ERROR
            decision = body.get("decision") if status in (200, 412, 503) else None
            reasons = body.get("reasons", []) if decision else [str(body.get("error"))]
            state = decision or ("overloaded" if status == 429 else "unreachable")
            if reasons != last_reasons:
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {state}", file=out)
                for reason in reasons:
                    print(f"  - {reason}", file=out)
                if isinstance(body.get("canary"), dict):
                    print(canary_table(body["canary"]), file=out)
                last_reasons = reasons
            if decision == "pass":
                return EXIT_PASS
            if decision == "fail":
                return EXIT_FAIL
            pause = max(interval, retry_after) if status == 429 else interval
            if time.monotonic() + pause > deadline:
                print(f"no verdict by the deadline ({state})", file=sys.stderr)
                waiting = ("pending", "marginal", "overloaded")
                return EXIT_PENDING if state in waiting else EXIT_ERROR
            await asyncio.sleep(pause)


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
