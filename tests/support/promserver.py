"""A real Prometheus (Debian's package) on a free loopback port, for tests and benchmarks.

Data is backfilled with `promtool tsdb create-blocks-from openmetrics` before start; an
optional scrape config lets it scrape live test exporters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str | None:
    return shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )


def backfill(openmetrics: Path, storage: Path) -> None:
    promtool = find_binary("promtool")
    assert promtool, "promtool not found (apt-get install prometheus)"
    storage.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(storage)],
        check=True,
        capture_output=True,
    )


@dataclass
class PrometheusServer:
    workdir: Path
    port: int = 0
    scrape_targets: tuple[str, ...] = ()
    scrape_interval: str = "1s"
    rule_files: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "data"

    def start(self, timeout: float = 30.0) -> None:
        binary = find_binary("prometheus")
        assert binary, "prometheus not found (apt-get install prometheus)"
        if not self.port:
            self.port = free_port()
        config: dict[str, object] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "5s"}
        }
        if self.rule_files:
            config["rule_files"] = list(self.rule_files)
        if self.scrape_targets:
            config["scrape_configs"] = [
                {"job_name": "test", "static_configs": [{"targets": list(self.scrape_targets)}]}
            ]
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.process = self._spawn(binary, config_path, log)
        self._wait_ready(timeout)

    def _spawn(self, binary: str, config_path: Path, log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=100y",
                "--web.enable-lifecycle",
                "--query.lookback-delta=5m",
            ],
            stdout=log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus exited: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def query_count(self, handler: str = "/api/v1/query") -> float:
        """Prometheus' own count of requests to `handler` (its self-metrics)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if (
                line.startswith("prometheus_http_requests_total{")
                and f'handler="{handler}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total
