"""The local demo: a simulated chatbot runtime, Prometheus scraping it, and `sentinel run`
on config.example.yaml with the shipped rules. Ctrl-C stops everything it started.

    bash examples/demo.sh          # sets up and runs this
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: {url} did not come up")


def prometheus_config(sim_port: int, sentinel_port: int = 8080, scrape_interval: str = "5s") -> str:
    """Scrape the simulator as Kubernetes would scrape the runtime: the backend and the
    gateway as their own jobs whose targets carry namespace/service/env (so `up` has the
    labels the shipped rules select), cAdvisor + kube-state-metrics, and Sentinel itself
    (its /metrics: the overview dashboard and the synthetic probe's success)."""
    target = f"127.0.0.1:{sim_port}"
    jobs: list[dict[str, Any]] = []
    for job, path, service in (
        ("chatbot-backend", "/metrics", "chatbot-backend"),
        ("chatbot-gateway", "/gateway/metrics", "chatbot-gateway"),
        ("kubernetes-cadvisor", "/infra/metrics", None),
    ):
        labels = {"namespace": "chatbot", "service": service, "env": "prod"} if service else {}
        jobs.append(
            {
                "job_name": job,
                "metrics_path": path,
                "honor_labels": True,  # the runtime's own namespace/service/env labels win
                "static_configs": [{"targets": [target], "labels": labels}],
            }
        )
    jobs.append(
        {"job_name": "sentinel", "static_configs": [{"targets": [f"127.0.0.1:{sentinel_port}"]}]}
    )
    config = {"global": {"scrape_interval": scrape_interval}, "scrape_configs": jobs}
    return str(yaml.safe_dump(config, sort_keys=False))


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(prometheus):
        print("demo: Debian's prometheus package is missing: apt-get install prometheus")
        return 2
    WORK.mkdir(exist_ok=True)
    sim_port, prom_port = free_port(), free_port()
    # No Loki build installs from Debian or PyPI: the demo runs the protocol-faithful
    # Loki the tests use (push + the LogQL metric queries Sentinel sends).
    sys.path.insert(0, str(REPO / "tests"))
    from support.fakeloki import FakeLoki

    loki = FakeLoki().start()
    (WORK / "prometheus.yml").write_text(prometheus_config(sim_port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "examples/simulator.py"),
                    "--port",
                    str(sim_port),
                    "--schedule",
                    "--log-file",
                    str(WORK / "answers.jsonl"),
                    "--loki-url",
                    loki.url,
                ]
            )
        )
        with (WORK / "prometheus.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={WORK / 'prometheus.yml'}",
                        f"--storage.tsdb.path={WORK / 'prometheus-data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        env = {
            **os.environ,
            "PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}",
            "LOKI_URL": loki.url,
            "SENTINEL_STATE": str(WORK / "state.db"),
            # The simulator's chat API, for a synthetic probe (`probes:` in the config).
            "CHATBOT_URL": f"http://127.0.0.1:{sim_port}",
        }
        slos = "curl -s http://127.0.0.1:8080/api/v1/slos | python3 -m json.tool"
        print(
            f"\ndemo: Prometheus on http://127.0.0.1:{prom_port}, "
            "Sentinel on http://127.0.0.1:8080\n"
            f"demo: watch the SLOs:  {slos}\n"
            "demo: faults: latency at ~1 min, 5xx at ~3 min, fallback surge at ~5 min, then\n"
            "demo: failover, refusals, slow tokens, prompt bloat, thumbs-down, 4xx, DB pool,\n"
            "demo: CPU, memory, backend down, gateway down, unready, stall, errors (~50 min)\n"
            f"demo: or set one: curl -X POST 'http://127.0.0.1:{sim_port}/fault?mode=refusal'\n",
            flush=True,
        )
        sentinel = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "run", "-c", str(REPO / "config.example.yaml")],
            env=env,
            cwd=REPO,
        )
        procs.append(sentinel)
        return sentinel.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        loki.stop()


if __name__ == "__main__":
    raise SystemExit(main())
