"""The state database on storage that fails for real, under a running `sentinel run`:
a full filesystem while an incident fires, and the database made read-only while an
incident resolves. Either way: a clear error in /health/detailed, /health/ready 503, the
alert changes held in memory, and once the storage takes writes again every
notification delivered once, in order. (tests/e2e/test_store_faults.py covers a full
database through SQLite's max_page_count, in-process, and unusable files at start.)

How the storage fails:
- full: a 4 MB tmpfs mounted for the test holds the database; a filler file takes the
  rest of it (ENOSPC: "database or disk is full"), and is deleted to free it. Where
  mounting is not allowed (a container without CAP_SYS_ADMIN), the fallback is a file
  size limit on the Sentinel process (`prlimit --fsize`, EFBIG: "disk I/O error"): also
  the kernel refusing the write, but per process. The test prints which one ran; under
  CI=1 it never skips. SENTINEL_TEST_NO_MOUNT=1 forces the fallbacks.
- read-only: `chattr +i` on the database and its WAL (root ignores file modes; a
  read-only remount is refused while SQLite holds the file open for writing). The
  immutable flag is enforced on open descriptors by ext4/xfs/btrfs, not by tmpfs, so the
  database lives in pytest's temporary directory when that filesystem enforces it, else
  on a loop-mounted ext4 image. The -shm file is left writable: SQLite maps it, and a
  mapped page that cannot be written is a SIGBUS, not an error a program can handle.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.procs import Proc, http, start_sentinel, start_simulator, wait_for
from support.promserver import PrometheusServer, free_port

pytestmark = pytest.mark.timeout(240)

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend}
interval: 1s
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99%
    window: 5s
    severity: page
    alert: {for: 0s, keep_firing_for: 0s}
"""


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


def _must(reason: str) -> None:
    """No way to fail the storage here: a failure under CI, a skip with the reason else."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def mounted(kind: str, source: str, target: Path, *options: str) -> Iterator[bool]:
    """Mount `source` (a `kind` filesystem) at `target`; yields False when this machine
    does not allow it."""
    target.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SENTINEL_TEST_NO_MOUNT"):  # try the fallbacks on a machine that mounts
        yield False
        return
    result = _run("mount", "-t", kind, *options, source, str(target))
    if result.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        _run("umount", "-l", str(target))


def enforces_immutable(directory: Path) -> bool:
    """Does this filesystem refuse writes through an open descriptor once the file is
    immutable (ext4, xfs, btrfs do; tmpfs and overlayfs do not)?"""
    probe = directory / "immutable-probe"
    with probe.open("wb") as out:
        if _run("chattr", "+i", str(probe)).returncode != 0:
            return False
        try:
            out.write(b"x")
            out.flush()
            return False
        except OSError as exc:
            return exc.errno == errno.EPERM
        finally:
            _run("chattr", "-i", str(probe))
            probe.unlink()


@dataclass
class Stack:
    sim_url: str
    slack: FakeSlack
    sentinel: Proc
    url: str
    state: Path

    def mode(self, mode: str) -> None:
        assert http("POST", f"{self.sim_url}/fault?mode={mode}")[0] == 200

    def store_health(self) -> dict[str, Any]:
        body = http("GET", f"{self.url}/health/detailed")[1]
        return body["checks"]["state_store"]  # type: ignore[no-any-return]

    def alerts(self) -> list[dict[str, Any]]:
        return http("GET", f"{self.url}/api/v1/alerts")[1]["alerts"]  # type: ignore[no-any-return]

    def ready(self) -> tuple[int, Any]:
        status, body, _ = http("GET", f"{self.url}/health/ready")
        return status, body


@contextlib.contextmanager
def stack(workdir: Path, state_dir: Path) -> Iterator[Stack]:
    sim, sim_url = start_simulator(workdir)
    prom = PrometheusServer(workdir / "prom", scrape_targets=(sim_url.removeprefix("http://"),))
    prom.workdir.mkdir()
    slack = FakeSlack().start()
    sentinel: Proc | None = None
    try:
        prom.start()
        (workdir / "rules").mkdir()
        (workdir / "rules" / "chatbot.yaml").write_text(RULES)
        port = free_port()
        state = state_dir / "state.db"
        config = workdir / "config.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "{prom.url}", timeout: 2s, retries: 0}}
                rules: [rules/*.yaml]
                evaluation: {{interval: 1s, shutdown_timeout: 5s}}
                server: {{listen: "127.0.0.1:{port}"}}
                state: {{path: "{state}"}}
                notifiers:
                  oncall:
                    type: slack
                    token: {TOKEN}
                    channel: {CHANNEL}
                    base_url: {slack.url}/api/
                    charts: false
                """
            )
        )
        sentinel = start_sentinel(config)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 60, "sentinel ready")
        yield Stack(sim_url, slack, sentinel, url, state)
    finally:
        if sentinel is not None:
            sentinel.stop()
        slack.stop()
        prom.stop()
        sim.stop()


def roots(slack: FakeSlack) -> list[str]:
    return [m.text for m in slack.roots()]


def resolve_replies(slack: FakeSlack) -> list[str]:
    return [m.text for m in slack.messages if m.thread_ts and "Resolved" in m.text]


def assert_held_in_memory(s: Stack, kind: str, error: str) -> None:
    """The store is unhealthy with the kernel's error, unready, the change unsaved."""
    health = wait_for(
        lambda: (h := s.store_health())["status"] == "unhealthy" and h, 30, "unhealthy store"
    )
    assert error in health["last_error"], health
    wait_for(
        lambda: [a for a in s.alerts() if a["state"] == kind and a["saved"] is False],
        30,
        f"{kind} alert held in memory",
    )
    status, body = s.ready()
    assert status == 503
    assert any("state store cannot save" in r and error in r for r in body["reasons"]), body
    assert health["unsaved_notifications"] >= 1 or s.store_health()["unsaved_notifications"] >= 1


def assert_delivered_once_in_order(s: Stack) -> None:
    wait_for(lambda: resolve_replies(s.slack), 60, "the RESOLVED reply")
    wait_for(lambda: s.ready()[0] == 200, 30, "ready again")
    assert [t.split(":")[0] for t in roots(s.slack)] == ["✅ RESOLVED"]  # one root, updated
    assert len(resolve_replies(s.slack)) == 1
    posts = [
        (m, p.get("text", "")) for m, p in s.slack.calls if m in ("chat.postMessage", "chat.update")
    ]
    assert posts[0][1].startswith("🔴 FIRING: chatbot-backend — http-5xx-ratio"), posts
    assert s.store_health()["status"] == "healthy"
    assert "Traceback" not in s.sentinel.log()


# -- a full filesystem -----------------------------------------------------------------


class FullDisk:
    """Fills the database's filesystem (tmpfs) or, where nothing can be mounted, caps
    the process' file size; `free` undoes it."""

    def __init__(self, directory: Path, mounted: bool) -> None:
        self.directory = directory
        self.mounted = mounted
        self.pid = 0

    @property
    def error(self) -> str:
        return "database or disk is full" if self.mounted else "disk I/O error"

    def fill(self, pid: int) -> None:
        self.pid = pid
        if not self.mounted:
            limit = max(p.stat().st_size for p in self.directory.glob("state.db*"))
            assert _run("prlimit", f"--pid={pid}", f"--fsize={limit}:").returncode == 0
            return
        # Unbuffered: the write that finds the disk full raises, and closing has nothing
        # left to flush.
        filler = (self.directory / "filler").open("wb", buffering=0)
        with filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
        statvfs = os.statvfs(self.directory)
        assert statvfs.f_bavail == 0

    def free(self) -> None:
        if not self.mounted:
            assert _run("prlimit", f"--pid={self.pid}", "--fsize=unlimited:").returncode == 0
            return
        (self.directory / "filler").unlink()


def test_alert_firing_on_a_full_filesystem_is_held_and_delivered_once_space_frees(
    tmp_path: Path,
) -> None:
    disk_dir = tmp_path / "disk"
    with mounted("tmpfs", "sentinel-test", disk_dir, "-o", "size=4m") as ok:
        if not ok:
            if not _run("which", "prlimit").stdout:
                _must("cannot mount a tmpfs, and prlimit is missing (util-linux)")
            print("no mount allowed here: the full disk is a file size limit (prlimit --fsize)")
        disk = FullDisk(disk_dir, ok)
        with stack(tmp_path, disk_dir) as s:
            disk.fill(s.sentinel.process.pid)
            s.mode("5xx")
            assert_held_in_memory(s, "firing", disk.error)
            assert s.slack.messages == []  # nothing sent that could not be recorded
            disk.free()
            wait_for(lambda: roots(s.slack), 30, "the FIRING message after space freed")
            s.mode("none")
            assert_delivered_once_in_order(s)


# -- the database made read-only -------------------------------------------------------


@contextlib.contextmanager
def immutable_capable_dir(tmp_path: Path) -> Iterator[Path]:
    if _run("which", "chattr").returncode != 0:
        _must("chattr is missing (e2fsprogs)")
    if enforces_immutable(tmp_path):
        yield tmp_path
        return
    image = tmp_path / "ext4.img"
    with image.open("wb") as out:
        out.truncate(16 * 1024 * 1024)
    assert _run("mkfs.ext4", "-q", "-F", str(image)).returncode == 0
    target = tmp_path / "ext4"
    with mounted("ext4", str(image), target, "-o", "loop") as ok:
        if not ok or not enforces_immutable(target):
            _must(f"{tmp_path} ignores chattr +i on open files and no ext4 image can be mounted")
        yield target


def test_database_made_read_only_while_an_incident_resolves_holds_the_resolve_until_writable(
    tmp_path: Path,
) -> None:
    with immutable_capable_dir(tmp_path) as state_dir, stack(tmp_path, state_dir) as s:
        s.mode("5xx")
        wait_for(lambda: roots(s.slack), 30, "the FIRING message")
        files = [str(s.state), f"{s.state}-wal"]
        assert _run("chattr", "+i", *files).returncode == 0
        try:
            s.mode("none")
            assert_held_in_memory(s, "resolved", "disk I/O error")
            assert resolve_replies(s.slack) == []
        finally:
            _run("chattr", "-i", *files)
        assert_delivered_once_in_order(s)
