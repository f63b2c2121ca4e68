"""The benchmark and reliability runners start servers of their own (Prometheus, the fake
Slack, `sentinel run`). A SIGTERM to a runner (a CI timeout, `kill`) must stop them too:
before, the runner died on the spot and its Prometheus kept running, holding a port and a
core, after every interrupted soak, chaos or benchmark run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> dict[int, str]:
    """Direct children of `pid` -> their command line."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out[int(entry.name)] = cmdline
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_sigterm_to_the_soak_runner_stops_the_prometheus_it_started(tmp_path: Path) -> None:
    soak = [sys.executable, str(REPO / "reliability" / "soak.py"), "--cycles", "20000"]
    output = tmp_path / "soak.out"
    with output.open("wb") as out:
        runner = subprocess.Popen(
            [*soak, "--services", "2", "--flapping", "1"], stdout=out, stderr=subprocess.STDOUT
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not started and time.monotonic() < deadline:
            assert runner.poll() is None, output.read_text()
            started = [p for p, cmd in _children(runner.pid).items() if "prometheus" in cmd]
            time.sleep(0.2)
        assert started, "the soak never started its Prometheus"
        time.sleep(1.0)  # into its cycles

        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
        gone_by = time.monotonic() + 15
        while any(_running(p) for p in started) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not any(_running(p) for p in started), "Prometheus outlived the runner"
    finally:
        for pid in [runner.pid, *started]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        runner.wait()
