"""Gate throughput: `sentinel run` against a bare aiohttp endpoint, in one run.

    .venv/bin/python bench/gate_bench.py [--seconds 10] [--connections 50]

Starts the simulator, a Prometheus scraping it, `sentinel run` with the shipped rules, and
the bare endpoint; warms the gate, then loads both with the same client and prints one
table. Every gate answer comes from the fresh-result cache (cache_ttl), which is how a
pipeline fleet polling the gate is served.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from load import LoadResult, run_load
from support.fakeloki import FakeLoki
from support.procs import http, start_sentinel, start_simulator, wait_for
from support.promserver import PrometheusServer, free_port

TOKEN = "bench-token"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        loki = FakeLoki().start()
        sim, sim_url = start_simulator(work)
        prom = PrometheusServer(work / "prom", scrape_targets=(sim_url.removeprefix("http://"),))
        prom.workdir.mkdir()
        prom.start()
        (work / "rules").symlink_to(REPO / "rules")
        port, bare_port = free_port(), free_port()
        config = work / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "{prom.url}"}}
                loki: {{url: "{loki.url}"}}
                rules: [rules/*.yaml]
                server: {{listen: "127.0.0.1:{port}", api_token: "{TOKEN}"}}
                state: {{path: state.db}}
                gate: {{cache_ttl: 60s}}
                """
            )
        )
        daemon = start_sentinel(config)
        bare = subprocess.Popen(
            [sys.executable, str(REPO / "bench/bare_server.py"), str(bare_port)]
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 30, "sentinel ready")
            wait_for(
                lambda: http("GET", f"http://127.0.0.1:{bare_port}/api/v1/gate")[0] == 200,
                10,
                "bare",
            )
            gate_url = f"{url}/api/v1/gate?service=chatbot-backend"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            status, body, _ = http("GET", gate_url, headers=auth)
            print(f"gate warm-up: HTTP {status}, decision {body.get('decision')}", flush=True)
            results = {
                "sentinel gate": run_load(gate_url, auth, args.connections, args.seconds),
                "bare aiohttp": run_load(
                    f"http://127.0.0.1:{bare_port}/api/v1/gate", {}, args.connections, args.seconds
                ),
            }
        finally:
            bare.terminate()
            daemon.stop()
            prom.stop()
            sim.stop()
            loki.stop()
    print_table(results, args.connections)
    return 0


def print_table(results: dict[str, LoadResult], connections: int) -> None:
    floor = results["bare aiohttp"]
    print(
        f"\n{'target':<16}{'tool':<9}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}"
    )
    for name, r in results.items():
        ratio = r.rps / floor.rps if floor.rps else 0
        print(
            f"{name:<16}{r.tool:<9}{r.requests:>10}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{ratio:>9.2f}"
        )
    print(
        f"({connections} connections; statuses: "
        + json.dumps({k: v.statuses for k, v in results.items()})
        + ")"
    )
    _ = time


if __name__ == "__main__":
    raise SystemExit(main())
