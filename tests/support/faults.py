"""Process-level faults for chaos runs, and the invariants a run is judged by.

The protocol-faithful Slack, Loki and webhook servers of tests/support/ normally run in a
thread of the test process; a chaos run needs each in a process of its own, so it can be
SIGKILLed, SIGSTOPped and restarted. `python -m support.faults serve KIND --port P
--journal FILE` runs one. What a real service would keep across a crash (Slack's messages,
Loki's pushed lines) is appended to the journal before the answer leaves, and replayed on
start; the webhook receiver journals each delivery it received and each it acknowledged
(its 2xx fully written). Slow answers, 429 storms and 5xx are switched on through
`POST /_chaos/fault` (JSON `{"status": 429, "count": 20, "delay": 0, "retry_after": 1}`).

`FakeProcess` starts, kills, pauses and resumes such a process on a fixed port. The
invariant checks at the bottom are pure functions of what the fakes journaled and what
the load generator saw, so tests/e2e/test_chaos_invariants.py can feed them known-bad
histories.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[2]


# -- the journal -----------------------------------------------------------------------


class Journal:
    """JSON lines appended and flushed before an answer leaves: the page cache survives a
    SIGKILL of the writer, so what was acknowledged is never lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._out = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps({"t": time.time(), **record}) + "\n")
            self._out.flush()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete record (a record cut short by a SIGKILL is left out)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# -- the fakes as processes ------------------------------------------------------------


@dataclass
class Planned:
    """A fault for every request until `until` (monotonic): an HTTP status (429/5xx; 0 =
    answer normally) and/or a delay before answering. Storms last a time, as real ones
    do, so a client's backoff decides how many of its requests they hit."""

    status: int = 0
    delay: float = 0.0
    retry_after: int = 1
    until: float = 0.0


class Storm:
    def __init__(self) -> None:
        self.planned = Planned()

    def current(self) -> Planned | None:
        return self.planned if time.monotonic() < self.planned.until else None


def _chaos_route(app: web.Application, storm: Storm) -> None:
    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        storm.planned = Planned(
            int(body.get("status", 0)),
            float(body.get("delay", 0.0)),
            int(body.get("retry_after", 1)),
            time.monotonic() + float(body.get("seconds", 1.0)),
        )
        return web.json_response({"planned": True})

    app.router.add_post("/_chaos/fault", control)
    app.router.add_get("/_chaos/ready", lambda r: _ok())


async def _ok() -> web.Response:
    return web.Response(text="ready\n")


def _slack_server(journal_path: Path, port: int) -> Any:
    from support.fakeslack import Failure, FakeSlack, Message

    journal = Journal(journal_path)

    class ChaosSlack(FakeSlack):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.port = port
            self.storm = Storm()
            for record in read_journal(journal_path):
                if record["op"] == "post":
                    self.messages.append(Message(**record["message"]))
                elif record["op"] == "update":
                    for m in self.messages:
                        if m.ts == record["ts"]:
                            m.text, m.updates = record["text"], m.updates + 1

        def app(self) -> web.Application:
            app = super().app()
            _chaos_route(app, self.storm)
            return app

        async def _handle(self, request: web.Request) -> web.Response:
            method = request.match_info["method"]
            planned = self.storm.current()
            if planned is not None and method.startswith("chat."):
                if planned.status:
                    failure = Failure(planned.status, retry_after=planned.retry_after)
                else:
                    failure = Failure(delay=planned.delay)
                self.fail_next(method, failure)
            return await super()._handle(request)

        def _chat_postMessage(self, params: dict[str, Any]) -> web.Response:
            response = super()._chat_postMessage(params)
            body = json.loads(response.body)  # type: ignore[arg-type]
            if body.get("ok"):
                m = self.messages[-1]
                message = {
                    "channel": m.channel,
                    "ts": m.ts,
                    "text": m.text,
                    "blocks": [],
                    "thread_ts": m.thread_ts,
                    "metadata": m.metadata,
                }
                journal.write({"op": "post", "message": message})
            return response

        def _chat_update(self, params: dict[str, Any]) -> web.Response:
            response = super()._chat_update(params)
            if json.loads(response.body).get("ok"):  # type: ignore[arg-type]
                journal.write({"op": "update", "ts": params.get("ts"), "text": params.get("text")})
            return response

    return ChaosSlack()


def _loki_server(journal_path: Path, port: int) -> Any:
    from support.fakeloki import FakeLoki, Fault

    journal = Journal(journal_path)

    class ChaosLoki(FakeLoki):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.port = port
            self.storm = Storm()
            for record in read_journal(journal_path):
                self.push(record["stream"], [(ts, line) for ts, line in record["lines"]])

        def app(self) -> web.Application:
            app = super().app()
            _chaos_route(app, self.storm)
            return app

        async def _fault(self) -> web.Response | None:
            planned = self.storm.current()
            if planned is not None:
                self.faults.append(Fault(planned.status, planned.retry_after, planned.delay))
            return await super()._fault()

        async def _push(self, request: web.Request) -> web.Response:
            body = await request.json()
            for s in body["streams"]:
                lines = [(int(ts) / 1e9, line) for ts, line in s["values"]]
                journal.write({"op": "push", "stream": s["stream"], "lines": lines})
                self.push(s["stream"], lines)
            return web.Response(status=204)

    return ChaosLoki()


def _webhook_server(journal_path: Path, port: int) -> Any:
    from support.threaded import ThreadedServer
    from support.webhookrx import SECRET

    journal = Journal(journal_path)

    class ChaosWebhook(ThreadedServer):
        def __init__(self) -> None:
            super().__init__()
            self.port = port
            self.storm = Storm()

        def app(self) -> web.Application:
            app = web.Application()
            app.router.add_post("/hooks/rollback", self._handle)
            _chaos_route(app, self.storm)
            return app

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            key = request.headers.get("Idempotency-Key", "")
            planned = self.storm.current() or Planned()
            journal.write({"op": "recv", "key": key, "status": planned.status})
            if planned.delay:
                await asyncio.sleep(planned.delay)
            if planned.status:
                headers = {"Retry-After": str(planned.retry_after)} if planned.status == 429 else {}
                return web.Response(status=planned.status, text="try later", headers=headers)
            stamp = request.headers.get("X-Sentinel-Timestamp", "")
            mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256)
            expected = "sha256=" + mac.hexdigest()
            ok = hmac.compare_digest(expected, request.headers.get("X-Sentinel-Signature", ""))
            fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
            if not (ok and fresh):
                journal.write({"op": "bad-signature", "key": key})
                return web.json_response({"error": "bad signature"}, status=401)
            response = web.json_response({"accepted": True}, status=202)
            await response.prepare(request)
            await response.write_eof()
            journal.write({"op": "ack", "key": key, "body": json.loads(raw)})
            return response

    return ChaosWebhook()


SERVERS = {"slack": _slack_server, "loki": _loki_server, "webhook": _webhook_server}


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run a test fake as its own process")
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args(argv)
    # Blocked before the server's thread starts (it inherits the mask), then awaited here.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = SERVERS[args.kind](args.journal, args.port)
    server.start()
    print(f"{args.kind}: serving on {server.url}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


@dataclass
class FakeProcess:
    """One fake in a process of its own, on a port that stays the same across restarts."""

    kind: str
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def journal(self) -> Path:
        return self.workdir / f"{self.kind}.journal"

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
        cmd = [sys.executable, "-m", "support.faults", "serve", self.kind]
        cmd += ["--port", str(self.port), "--journal", str(self.journal)]
        with (self.workdir / f"{self.kind}.log").open("ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}")
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start within {timeout}s")

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/_chaos/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.paused:
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.paused = False

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def storm(self, seconds: float, status: int = 0, delay: float = 0.0) -> None:
        """Every request for `seconds` answered `status` (429 with Retry-After: 1) and/or
        after `delay`."""
        import urllib.request

        body = json.dumps({"status": status, "seconds": seconds, "delay": delay}).encode()
        req = urllib.request.Request(f"{self.url}/_chaos/fault", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def stop(self) -> None:
        self.resume()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the invariants --------------------------------------------------------------------


@dataclass
class Outage:
    """A source unreachable from `start` until it answered again at `end`."""

    source: str
    kind: str
    start: float
    end: float


@dataclass
class GateCall:
    sent: float
    answered: float
    status: int  # 0: no HTTP answer (connection error, client timeout)
    decision: str | None = None
    # The sources the SLOs of the request read (`slo=` narrows them): an outage of any
    # other source must not keep the gate from passing.
    sources: tuple[str, ...] = ("prometheus", "loki")


@dataclass
class Findings:
    """What a chaos run broke (empty lists: every invariant held) and its counts."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def slack_deliveries(journal: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(kind, incident digest, thread_ts) of each message Slack stored, in order; the
    kind and digest come from the outbox key (`notifier:kind:digest`) in its metadata."""
    out = []
    for record in journal:
        if record["op"] != "post":
            continue
        message = record["message"]
        key = ((message.get("metadata") or {}).get("event_payload") or {}).get(
            "idempotency_key", ""
        )
        _, kind, digest = ([*key.split(":", 2), "", "", ""])[:3]
        out.append((kind, digest, message.get("thread_ts")))
    return out


def check_slack(expected_incidents: int, journal: list[dict[str, Any]], f: Findings) -> None:
    """Each incident: one FIRING root message, then one RESOLVED reply in its thread and
    the root updated to RESOLVED; incidents one after another; nothing twice."""
    messages = slack_deliveries(journal)
    firing = [d for k, d, _ in messages if k == "firing"]
    resolved = [d for k, d, _ in messages if k == "resolved"]
    dup = (len(firing) - len(set(firing))) + (len(resolved) - len(set(resolved)))
    f.counts["slack"] = {
        "expected": 2 * expected_incidents,
        "delivered": len(set(firing)) + len(set(resolved)),
        "duplicates": dup,
    }
    if dup:
        f.problems.append(f"slack: {dup} duplicate message(s)")
    if len(set(firing)) != expected_incidents:
        f.problems.append(
            f"slack: {len(set(firing))} FIRING messages, expected {expected_incidents}"
        )
    if len(set(resolved)) != expected_incidents:
        f.problems.append(
            f"slack: {len(set(resolved))} RESOLVED replies, expected {expected_incidents}"
        )
    # In order: FIRING 1, RESOLVED 1, FIRING 2, ... (a resolve never before its firing).
    sequence = [(k, d) for k, d, _ in messages if k in ("firing", "resolved")]
    wanted = [x for d in dict.fromkeys(firing) for x in (("firing", d), ("resolved", d))]
    if list(dict.fromkeys(sequence)) != wanted[: len(dict.fromkeys(sequence))]:
        f.problems.append(f"slack: out of order: {sequence}")
    roots = {r["message"]["ts"]: r["message"]["text"] for r in journal if r["op"] == "post"}
    for record in journal:
        if record["op"] == "update" and record["ts"] in roots:
            roots[record["ts"]] = record["text"]
    still = [t for t in roots.values() if t.startswith("🔴 FIRING")]
    if still:
        f.problems.append(f"slack: {len(still)} root message(s) never updated to RESOLVED")


def check_webhook(expected_incidents: int, journal: list[dict[str, Any]], f: Findings) -> None:
    """One acknowledged rollback per incident. A delivery the receiver got but never
    acknowledged (killed first) may come again with the same Idempotency-Key, as any
    at-least-once sender's must; a second *acknowledged* one is a duplicate."""
    acked = Counter(r["key"] for r in journal if r["op"] == "ack")
    received = Counter(r["key"] for r in journal if r["op"] == "recv")
    dup = sum(n - 1 for n in acked.values())
    f.counts["webhook"] = {
        "expected": expected_incidents,
        "delivered": len(acked),
        "duplicates": dup,
        "redelivered_unacknowledged": sum(received.values()) - sum(acked.values()),
    }
    if dup:
        f.problems.append(f"webhook: {dup} rollback(s) acknowledged twice")
    if len(acked) != expected_incidents:
        f.problems.append(f"webhook: {len(acked)} rollbacks, expected {expected_incidents}")
    bad = sum(1 for r in journal if r["op"] == "bad-signature")
    if bad:
        f.problems.append(f"webhook: {bad} deliveries with a bad or stale signature")


def check_gate(
    calls: list[GateCall], outages: list[Outage], down_after: float, slack: float, f: Findings
) -> None:
    """No 5xx but the gate's own 503 `pending`; no pass while a source the request reads
    had been down longer than `down_after` plus `slack` (the time Sentinel needs to see an outage: an
    evaluation interval and a source timeout)."""
    statuses = Counter(str(c.status) if c.status else "no answer" for c in calls)
    f.counts["gate"] = {"requests": len(calls), "statuses": dict(sorted(statuses.items()))}
    f.counts["gate"]["decisions"] = dict(Counter(c.decision or "-" for c in calls))
    errors = [c for c in calls if c.status >= 500 and not (c.status == 503 and c.decision)]
    if errors:
        f.problems.append(f"gate: {len(errors)} 5xx answers that are not a pending verdict")
    unanswered = statuses.get("no answer", 0)
    if unanswered:
        f.problems.append(f"gate: {unanswered} requests got no HTTP answer")
    during = [
        (c, o)
        for c in calls
        for o in outages
        if o.source in c.sources and o.start + down_after + slack <= c.sent and c.answered <= o.end
    ]
    f.counts["gate"]["during_long_outages"] = dict(Counter(c.decision or "-" for c, _ in during))
    bad = [(c, o) for c, o in during if c.decision == "pass"]
    if bad:
        c, o = bad[0]
        f.problems.append(
            f"gate: {len(bad)} pass answers while a source was down beyond source_down_after "
            f"(first: {o.source} {o.kind} from {o.start:.1f}, pass at {c.sent:.1f})"
        )


def check_bounded(
    samples: list[tuple[float, int, int]], f: Findings, rss_growth_mb: float, fd_growth: int
) -> None:
    """RSS (KB) and open FDs after the first fifth of the run (warm-up) may grow at most
    by the given margins."""
    if not samples:
        f.problems.append("resources: no samples of the Sentinel process")
        return
    warm = samples[max(0, len(samples) // 5) :]
    base_rss, base_fd = warm[0][1], warm[0][2]
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    f.counts["resources"] = {
        "rss_kb": (min(rss), max(rss)),
        "fds": (min(fds), max(fds)),
        "samples": len(samples),
    }
    if max(s[1] for s in warm) > base_rss + rss_growth_mb * 1024:
        f.problems.append(
            f"resources: RSS grew from {base_rss} KB to {max(s[1] for s in warm)} KB after warm-up"
        )
    if max(s[2] for s in warm) > base_fd + fd_growth:
        f.problems.append(
            f"resources: open FDs grew from {base_fd} to {max(s[2] for s in warm)} after warm-up"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
