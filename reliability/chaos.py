"""Chaos under load: a real `sentinel run` judged by what it delivers while its
dependencies are killed, paused, slowed and rate-limited and its config is reloaded.

    .venv/bin/python reliability/chaos.py --minutes 10      # CI runs --minutes 1

The stack: the chatbot simulator (examples/simulator.py) scraped every second by Debian's
Prometheus; the protocol-faithful Loki, Slack and webhook servers, each a process of its
own (tests/support/faults.py); Sentinel evaluating every 2 s. The scenario switches the
simulator between healthy and 20 % 5xx every `--phase` seconds, so every breach phase
implies one incident: a FIRING Slack message, a signed rollback webhook, and a RESOLVED
update and reply once the healthy phase's data reaches the window. Meanwhile the gate is
asked `--rate` times a second, and one injector per target draws faults at random
(`--seed`): SIGKILL then restart, SIGSTOP then SIGCONT, slow answers, 429 storms, 5xx;
Sentinel gets SIGHUPs with valid and invalid configs. Faults on Prometheus end early
enough in each phase for Sentinel to see every phase (the scenario's data must reach it
for its state changes to be implied at all); everything else is faulted at any time.

After `--minutes` the faults stop, the last phase is healthy, and the run waits for the
outbox to drain. Then it checks: every implied FIRING/RESOLVED delivered exactly once, in
order, to Slack and the webhook; no gate pass while Prometheus or Loki had been down
longer than `gate.source_down_after` (plus the evaluation interval and source timeout
Sentinel needs to notice); no 5xx but the gate's pending 503; every reload applied or
refused as it should; RSS and open FDs bounded after warm-up. It prints the figures and
exits 1 when an invariant broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402

from support.fakeslack import CHANNEL, TOKEN  # noqa: E402
from support.faults import (  # noqa: E402
    FakeProcess,
    Findings,
    GateCall,
    Outage,
    check_bounded,
    check_gate,
    check_slack,
    check_webhook,
    read_journal,
)
from support.procs import (  # noqa: E402
    Proc,
    http,
    start_sentinel,
    start_simulator,
    stop_children_on_sigterm,
    wait_for,
)
from support.promserver import PrometheusServer, free_port  # noqa: E402
from support.webhookrx import SECRET  # noqa: E402

API_TOKEN = "chaos-api-token"
INTERVAL = 2.0
SOURCE_TIMEOUT = 2.0
DOWN_AFTER = 4.0
WINDOW = 6  # seconds: the 5xx SLO's window (a phase must outlast it plus the lag)
WARMUP = 8.0
QUIET_END = 7.0  # no Prometheus fault in the last seconds of a phase

RULES = f"""\
version: sentinel/v1
service: chatbot-backend
labels: {{namespace: chatbot, service: chatbot-backend}}
interval: {INTERVAL:g}s
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {{metric: http_requests_total, matchers: {{status: "=~5.."}}}}
        total: {{metric: http_requests_total}}
    objective: 99%
    window: {WINDOW}s
    severity: page
    notify: [oncall, rollback]
    alert: {{for: 0s, keep_firing_for: 0s, rollback: true}}
  - name: error-log-rate
    sli:
      log_ratio:
        selector: '{{app="chatbot-backend", namespace="chatbot"}}'
        pipeline: '| json'
        bad: 'level="error"'
    objective: 50%
    window: 10s
    severity: ticket
"""


def config_text(stack: dict[str, str], cache_ttl: str = "5s", broken: str = "") -> str:
    text = textwrap.dedent(
        f"""\
        prometheus: {{url: "{stack["prom"]}", timeout: {SOURCE_TIMEOUT:g}s, retries: 0}}
        loki: {{url: "{stack["loki"]}", timeout: {SOURCE_TIMEOUT:g}s, retries: 0}}
        rules: [rules/*.yaml]
        evaluation: {{interval: {INTERVAL:g}s, shutdown_timeout: 5s}}
        server: {{listen: "127.0.0.1:{stack["port"]}", api_token: "{API_TOKEN}"}}
        state: {{path: state.db}}
        gate:
          source_down_after: {DOWN_AFTER:g}s
          source_down_policy: fail_closed
          cache_ttl: {cache_ttl}
        notifiers:
          oncall:
            type: slack
            token: {TOKEN}
            channel: {CHANNEL}
            base_url: {stack["slack"]}/api/
            charts: false
          rollback:
            type: webhook
            url: {stack["webhook"]}/hooks/rollback
            secret: {SECRET}
            cooldown: 0s
            timeout: 3s
        """
    )
    if broken == "yaml":
        return text + "gate: [unclosed\n"
    if broken == "field":
        return text.replace("shutdown_timeout: 5s", "shutdown_timeout: 5s, bogus: 1")
    if broken == "value":
        return text.replace(f"interval: {INTERVAL:g}s,", "interval: -3s,")
    return text


class Run:
    """Shared state of one chaos run: the clock of the scenario, what was injected."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.stop_faults = threading.Event()
        self.finished = threading.Event()
        self.faults: Counter[str] = Counter()
        self.outages: list[Outage] = []
        self.calls: list[GateCall] = []
        self.samples: list[tuple[float, int, int]] = []
        self.reloads: Counter[str] = Counter()
        self.breaches = 0
        self.t0 = 0.0
        self.lock = threading.Lock()
        self.problems: list[str] = []

    def phase_at(self, t: float) -> tuple[int, float]:
        """(phase number from 0, seconds into it); phase 0 is the warm-up."""
        if t < self.t0 + WARMUP:
            return 0, t - self.t0
        k, into = divmod(t - self.t0 - WARMUP, self.args.phase)
        return int(k) + 1, into

    def count(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1

    def sleep(self, seconds: float) -> bool:
        """False once faults must stop."""
        return not self.stop_faults.wait(seconds)


# -- the scenario ----------------------------------------------------------------------


def set_mode(sim_url: str, mode: str) -> None:
    req = urllib.request.Request(f"{sim_url}/fault?mode={mode}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def scenario(run: Run, sim_url: str) -> None:
    """Breach in odd phases, healthy in even ones; after the faults stop, the breach phase
    in progress completes and the rest is healthy."""
    current = "none"
    while not run.finished.is_set():
        phase, _ = run.phase_at(time.time())
        ending = run.stop_faults.is_set()
        mode = "5xx" if phase % 2 == 1 else "none"
        if ending and current == "none":
            mode = "none"
        if mode != current:
            set_mode(sim_url, mode)
            if mode == "5xx":
                run.breaches += 1
            current = mode
        run.finished.wait(0.2)


def push_logs(run: Run, loki: FakeProcess) -> None:
    """The runtime's answer logs, 20 lines a second, pushed with a short timeout (a paused
    Loki loses those lines, as a real shipper with a full buffer would)."""
    n = 0
    while not run.finished.is_set():
        now = time.time_ns()
        values = []
        for i in range(10):
            n += 1
            line = {"level": "info", "request_id": f"chaos-{n}", "answer_mode": "llm-summary"}
            values.append([str(now - (10 - i) * 50_000_000), json.dumps(line)])
        stream = {"app": "chatbot-backend", "namespace": "chatbot", "env": "prod"}
        body = json.dumps({"streams": [{"stream": stream, "values": values}]}).encode()
        req = urllib.request.Request(f"{loki.url}/loki/api/v1/push", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=1) as resp:
                resp.read()
        except OSError:
            pass
        run.finished.wait(0.5)


# -- the fault injectors ---------------------------------------------------------------


def prometheus_faults(run: Run, prom: PrometheusServer) -> None:
    """Kill + restart or pause + resume, ending QUIET_END before the phase does; once a
    minute a long outage (3 x source_down_after) from the start of a phase."""
    rng = random.Random(f"{run.args.seed}-prometheus")
    next_long = time.time() + 20
    while run.sleep(rng.uniform(3, 7)):
        phase, into = run.phase_at(time.time())
        if phase == 0:
            continue
        long = time.time() >= next_long and into < 1.5
        duration = 3 * DOWN_AFTER if long else rng.uniform(0.5, 3.0)
        if into + duration + 4 > run.args.phase - QUIET_END:
            continue
        kind = rng.choice(["kill", "pause"])
        start = time.time()
        assert prom.process is not None
        if kind == "kill":
            prom.process.kill()
            prom.process.wait()
            time.sleep(duration)
            prom.process = None
            prom.start()
        else:
            prom.process.send_signal(signal.SIGSTOP)
            time.sleep(duration)
            prom.process.send_signal(signal.SIGCONT)
        wait_for(lambda: http("GET", f"{prom.url}/-/ready")[0] == 200, 30, "prometheus")
        run.outages.append(Outage("prometheus", kind, start, time.time()))
        run.count(f"prometheus {kind}{' (long)' if long else ''}")
        if long:
            next_long = time.time() + 60


def fake_faults(run: Run, fake: FakeProcess, source: bool) -> None:
    """Kill + restart, pause + resume, slow answers, a 429 storm or 5xx, at any time."""
    rng = random.Random(f"{run.args.seed}-{fake.kind}")
    next_long = time.time() + 15
    kinds = ["kill", "pause", "slow", "429", "500"]
    while run.sleep(rng.uniform(2, 6)):
        kind = rng.choice(kinds)
        long = source and time.time() >= next_long and kind in ("kill", "pause")
        duration = 3 * DOWN_AFTER if long else rng.uniform(0.5, 3.0)
        start = time.time()
        if kind == "kill":
            fake.kill()
            time.sleep(duration)
            fake.start()
        elif kind == "pause":
            fake.pause()
            time.sleep(duration)
            fake.resume()
        elif kind == "slow":
            fake.storm(duration, delay=rng.uniform(0.5, 2.5))
            time.sleep(duration)
        else:
            fake.storm(duration, status=int(kind))
            time.sleep(duration)
        if kind in ("kill", "pause"):
            run.outages.append(Outage(fake.kind, kind, start, time.time()))
            if long:
                next_long = time.time() + 60
        run.count(f"{fake.kind} {kind}{' (long)' if long else ''}")


def sighups(run: Run, sentinel: Proc, config: Path, stack: dict[str, str], url: str) -> None:
    """Alternate valid (a changed gate.cache_ttl) and invalid configs; each must be
    applied or refused, as `config.last_reload` in /health/detailed shows."""
    variants = ["valid", "yaml", "valid", "field", "valid", "value"]
    n = 0
    while run.sleep(run.rng.uniform(4, 9)):
        variant = variants[n % len(variants)]
        n += 1
        ttl = "4s" if n % 4 == 1 else "5s"
        config.write_text(config_text(stack, ttl, "" if variant == "valid" else variant))
        sent = time.time()
        sentinel.process.send_signal(signal.SIGHUP)
        want = "ok" if variant == "valid" else "failed"
        try:
            status = wait_for(lambda s=sent: reload_status(url, s), 20, "reload outcome")
        except AssertionError as exc:
            run.problems.append(f"reload ({variant}): {exc}")
            status = "none"
        if status != want:
            run.problems.append(f"reload ({variant} config): status {status}, expected {want}")
        run.reloads[f"{variant} -> {status}"] += 1
        run.count("sentinel SIGHUP " + ("valid" if variant == "valid" else "invalid"))
        config.write_text(config_text(stack, ttl))  # the file as it runs, for the next one


def reload_status(url: str, after: float) -> str | None:
    _status, body, _ = http(
        "GET", f"{url}/health/detailed", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    last = body["config"]["last_reload"] if isinstance(body, dict) else {}
    return str(last["status"]) if (last.get("at") or 0) >= after - 0.5 else None


def sample(run: Run, pid: int) -> None:
    while not run.finished.is_set():
        try:
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return
        run.samples.append((time.time(), rss, fds))
        run.finished.wait(1.0)


# -- the gate load ---------------------------------------------------------------------


async def gate_load(run: Run, url: str, until: float) -> int:
    """`--rate` requests a second (a few distinct keys: most share the cache, as a
    pipeline fleet does); returns how many could not be sent (too many in flight)."""
    since = int(run.t0) - 300
    variants = [
        {"service": "chatbot-backend", "since": str(since)},
        {"service": "chatbot-backend", "since": str(since), "env": "prod"},
        {"service": "chatbot-backend", "since": str(since), "slo": "http-5xx-ratio"},
    ]
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=15)
    skipped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, params: dict[str, str]) -> None:
        # http-5xx-ratio reads Prometheus only; the whole service also reads Loki.
        sources = ("prometheus",) if "slo" in params else ("prometheus", "loki")
        sent = time.time()
        status, decision = 0, None
        try:
            async with session.get(f"{url}/api/v1/gate", params=params, headers=headers) as r:
                status = r.status
                with_body = await r.read()
            body = json.loads(with_body)
            decision = body.get("decision") if isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        run.calls.append(GateCall(sent, time.time(), status, decision, sources))

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start, n = time.monotonic(), 0
        while time.time() < until:
            n += 1
            delay = start + n / run.args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= 256:
                skipped += 1
                continue
            params = variants[0] if run.rng.random() < 0.8 else run.rng.choice(variants)
            task = asyncio.create_task(one(session, params))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return skipped


# -- the run ---------------------------------------------------------------------------


def settle(run: Run, slack: FakeProcess, webhook: FakeProcess, timeout: float) -> float:
    """Seconds until Slack and the webhook hold every implied notification (or timeout)."""
    start = time.time()
    while time.time() - start < timeout:
        f = Findings()
        check_slack(run.breaches, read_journal(slack.journal), f)
        check_webhook(run.breaches, read_journal(webhook.journal), f)
        if not f.problems:
            break
        time.sleep(1)
    time.sleep(3)  # a late duplicate would show up here
    return time.time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="gate requests per second")
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per scenario phase")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--settle", type=float, default=180.0, help="max wait for the outbox")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    stop_children_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-chaos-"))
    try:
        return chaos(args, workdir)
    finally:
        if args.keep:
            print(f"working directory kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def chaos(args: argparse.Namespace, workdir: Path) -> int:
    run = Run(args, workdir)
    sim, sim_url = start_simulator(workdir, rate=50.0)
    prom = PrometheusServer(workdir / "prom", scrape_targets=(sim_url.removeprefix("http://"),))
    prom.workdir.mkdir()
    fakes = {k: FakeProcess(k, workdir, free_port()) for k in ("loki", "slack", "webhook")}
    sentinel: Proc | None = None
    try:
        prom.start()
        for fake in fakes.values():
            fake.start()
        stack = {
            "prom": prom.url,
            "loki": fakes["loki"].url,
            "slack": fakes["slack"].url,
            "webhook": fakes["webhook"].url,
            "port": str(free_port()),
        }
        url = f"http://127.0.0.1:{stack['port']}"
        (workdir / "rules").mkdir()
        (workdir / "rules" / "chatbot.yaml").write_text(RULES)
        config = workdir / "config.yaml"
        config.write_text(config_text(stack))
        threading.Thread(target=push_logs, args=(run, fakes["loki"]), daemon=True).start()
        sentinel = start_sentinel(config)
        wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 60, "sentinel ready")
        run.t0 = time.time()
        until = run.t0 + args.minutes * 60
        threads = [
            threading.Thread(target=scenario, args=(run, sim_url)),
            threading.Thread(target=sample, args=(run, sentinel.process.pid)),
            threading.Thread(target=prometheus_faults, args=(run, prom)),
            threading.Thread(target=fake_faults, args=(run, fakes["loki"], True)),
            threading.Thread(target=fake_faults, args=(run, fakes["slack"], False)),
            threading.Thread(target=fake_faults, args=(run, fakes["webhook"], False)),
            threading.Thread(target=sighups, args=(run, sentinel, config, stack, url)),
        ]
        for thread in threads:
            thread.daemon = True
            thread.start()
        skipped = asyncio.run(gate_load(run, url, until))
        run.stop_faults.set()
        for thread in threads[2:]:
            thread.join(60)
        settled = settle(run, fakes["slack"], fakes["webhook"], args.settle)
        run.finished.set()
        threads[0].join(5)
        threads[1].join(5)
        return report(run, fakes, skipped, settled, sentinel)
    finally:
        run.finished.set()
        run.stop_faults.set()
        if sentinel is not None:
            sentinel.process.send_signal(signal.SIGTERM)
            try:
                sentinel.process.wait(15)
            except Exception:
                sentinel.stop()
        for fake in fakes.values():
            fake.stop()
        prom.stop()
        sim.stop()


def report(
    run: Run, fakes: dict[str, FakeProcess], skipped: int, settled: float, sentinel: Proc
) -> int:
    f = Findings(problems=list(run.problems))
    check_slack(run.breaches, read_journal(fakes["slack"].journal), f)
    check_webhook(run.breaches, read_journal(fakes["webhook"].journal), f)
    check_gate(run.calls, run.outages, DOWN_AFTER, INTERVAL + SOURCE_TIMEOUT + 1.0, f)
    check_bounded(run.samples, f, rss_growth_mb=40, fd_growth=32)
    if "Traceback" in sentinel.log():
        f.problems.append("sentinel: a traceback in its log")
    duration = run.args.minutes * 60
    print(f"\nChaos run: {run.args.minutes:g} min, seed {run.args.seed}, phase {run.args.phase:g}s")
    print(f"\n{'fault injected':<32} {'count':>6}")
    for kind, n in sorted(run.faults.items()):
        print(f"{kind:<32} {n:>6}")
    print(f"{'total':<32} {sum(run.faults.values()):>6}")
    print(f"\nreloads: {dict(run.reloads)}")
    gate = f.counts["gate"]
    print(
        f"\ngate: {gate['requests']} requests ({gate['requests'] / duration:.0f}/s; "
        f"{skipped} not sent: client saturated)"
    )
    print(f"  statuses:  {gate['statuses']}")
    print(f"  decisions: {gate['decisions']}")
    print(
        f"  answers while Prometheus or Loki had been down > source_down_after + "
        f"{INTERVAL + SOURCE_TIMEOUT + 1:g}s: {gate['during_long_outages']}"
    )
    print(f"\n{'notifications':<10} {'expected':>9} {'delivered':>10} {'duplicates':>11}")
    for name in ("slack", "webhook"):
        c = f.counts[name]
        print(f"{name:<10} {c['expected']:>9} {c['delivered']:>10} {c['duplicates']:>11}")
    redelivered = f.counts["webhook"]["redelivered_unacknowledged"]
    print(f"  (webhook deliveries received but never acknowledged, then resent: {redelivered})")
    print(f"  outbox drained {settled:.0f}s after the faults stopped")
    res = f.counts.get("resources")
    if res:
        (rmin, rmax), (fmin, fmax) = res["rss_kb"], res["fds"]
        print(
            f"\nsentinel RSS {rmin / 1024:.1f}-{rmax / 1024:.1f} MB, open FDs {fmin}-{fmax} "
            f"({res['samples']} samples)"
        )
    if f.problems:
        print("\nINVARIANTS BROKEN:")
        for problem in f.problems:
            print(f"  - {problem}")
        return 1
    print("\nall invariants held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
