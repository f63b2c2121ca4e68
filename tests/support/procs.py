"""Starting Sentinel and the simulator as real processes, and polling them over HTTP."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from support.promserver import free_port

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(), hdrs


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_simulator(
    workdir: Path, rate: float = 50.0, log_file: Path | None = None
) -> tuple[Proc, str]:
    port = free_port()
    log_path = workdir / "simulator.log"
    cmd = [sys.executable, str(REPO / "examples" / "simulator.py"), "--port", str(port)]
    cmd += ["--rate", str(rate)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", f"{url}/metrics")[0] == 200, 15, "simulator")
    return Proc(proc, log_path), url


def start_sentinel(config: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = config.parent / "sentinel.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "run", "-c", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env={**os.environ, **(env or {})},
        )
    return Proc(proc, log_path)


def stop_children_on_sigterm() -> None:
    """For the benchmark and reliability runners: SIGTERM (a CI timeout, `kill`) raises
    SystemExit in the main thread instead of ending the process on the spot, so the
    runner's `finally` blocks stop the servers it started (Prometheus, the fakes, `sentinel
    run`); before, they outlived it."""
    state = {"leaving": False, "again": False}

    def leave(signum: int, frame: FrameType | None) -> None:
        if state["leaving"] and not state["again"]:
            # A second SIGTERM (a CI timeout signals the whole process group, then
            # again) must not interrupt the clean-up the first one started.
            return
        state["again"] = False
        if not state["leaving"]:
            state["leaving"] = True
            # The clean-up has a bound: past it, say where it hung, stop the children
            # the `finally` blocks did not reach, and leave.
            watchdog = threading.Timer(CLEANUP_SECONDS, _give_up, (128 + signum,))
            watchdog.daemon = True
            watchdog.start()
        raise SystemExit(128 + signum)

    previous = sys.unraisablehook

    def swallowed(info: Any) -> None:
        if isinstance(info.exc_value, SystemExit) and state["leaving"]:
            # The signal landed while Python ran a weakref callback or a __del__, where
            # it ignores every exception: the SystemExit vanished and the runner went on
            # with its cycles (one CI run's soak did, until the test gave up). Signal it
            # again once this hook has returned (raised in here, it would be ignored
            # too); a real signal also wakes a main thread blocked in a system call.
            state["again"] = True
            again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            again.daemon = True
            again.start()
            return
        previous(info)

    sys.unraisablehook = swallowed
    signal.signal(signal.SIGTERM, leave)


CLEANUP_SECONDS = 30.0


def _give_up(code: int) -> None:
    print(f"clean-up after SIGTERM still running after {CLEANUP_SECONDS:g} s:", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for pid in child_pids(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(code)


def child_pids(parent: int) -> dict[int, str]:
    """Direct children of `parent` -> their command line (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out[int(entry.name)] = cmdline
    return out
