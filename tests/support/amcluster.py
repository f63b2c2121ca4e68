"""A real Alertmanager cluster on loopback (Debian's `prometheus-alertmanager`), gossiping
between its members, whose webhook receiver records every notification it sends."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from support.promserver import find_binary, free_port
from support.threaded import ThreadedServer

BINARY = "prometheus-alertmanager"


@dataclass
class NotificationRecorder(ThreadedServer):
    """Alertmanager's webhook receiver: records each notification body."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/am", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.notifications.append(body)
        return web.Response(status=200)

    def with_status(self, status: str) -> list[dict[str, Any]]:
        with self._lock:
            return [n for n in self.notifications if n["status"] == status]


# group_interval above the peer timeout (3 s, below), as in production (5m vs 15s): a
# member other than the first checks the notification log peer-timeout x position after
# its flush, with the alerts as they were at the flush. Were its next flush due sooner,
# a change landing in that wait (a resolve) is notified by the first member, then the
# second notifies its stale FIRING again (and the first the RESOLVED again).
CONFIG = """\
route:
  receiver: recorder
  group_by: [service, slo]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: recorder
    webhook_configs:
      - url: {url}
        send_resolved: true
"""

# Also to the protocol-faithful Slack server, as a team would route pages.
SLACK = """    slack_configs:
      - api_url: {api_url}
        channel: "{channel}"
        send_resolved: true
        http_config: {{authorization: {{credentials: {token}}}}}
"""


@dataclass
class Member:
    port: int
    cluster_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class AlertmanagerCluster:
    def __init__(self, workdir: Path, receiver_url: str, size: int = 2, slack: str = "") -> None:
        binary = find_binary(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} not installed (apt-get install prometheus-alertmanager)")
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(textwrap.dedent(CONFIG.format(url=receiver_url)) + slack)
        self.members = [Member(free_port(), free_port()) for _ in range(size)]

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 30.0) -> AlertmanagerCluster:
        for i, member in enumerate(self.members):
            storage = self.workdir / f"am{i}"
            storage.mkdir(exist_ok=True)
            peers = [f"--cluster.peer=127.0.0.1:{m.cluster_port}" for m in self.members]
            cmd = [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{member.port}",
                f"--cluster.listen-address=127.0.0.1:{member.cluster_port}",
                f"--cluster.advertise-address=127.0.0.1:{member.cluster_port}",
                *[p for p in peers if not p.endswith(f":{member.cluster_port}")],
                # A member waits position x peer-timeout before notifying, then checks
                # the gossiped notification log: short on loopback to keep tests quick.
                "--cluster.peer-timeout=3s",
                "--cluster.gossip-interval=100ms",
                "--cluster.pushpull-interval=2s",
                "--log.level=debug",
            ]
            with (self.workdir / f"am{i}.log").open("ab") as log:
                member.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._peers(m) == len(self.members) for m in self.members):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Alertmanager cluster not formed:\n{self.logs()}")

    def _peers(self, member: Member) -> int:
        try:
            with urllib.request.urlopen(f"{member.url}/api/v2/status", timeout=2) as resp:
                status = json.load(resp)
        except OSError:
            return 0
        cluster = status.get("cluster", {})
        return len(cluster.get("peers") or []) if cluster.get("status") == "ready" else 0

    def alerts(self, member: int) -> list[dict[str, Any]]:
        url = f"{self.members[member].url}/api/v2/alerts"
        with urllib.request.urlopen(url, timeout=5) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)
        return alerts

    def kill(self, member: int) -> None:
        process = self.members[member].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("am*.log"))
        )

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)
