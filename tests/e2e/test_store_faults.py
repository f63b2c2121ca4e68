"""The state store under faults: a database that stops taking writes (SQLITE_FULL) while
alerts change, and state files that cannot be used at start.

Writes fail for real: `PRAGMA max_page_count` caps the file at its current size, so
SQLite answers "database or disk is full" exactly as on a full disk (and, as there,
rolls the transaction back itself). Start-up faults run the real `sentinel run`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sentinel.alerting.store import Store
from sentinel.config import load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.errors import StateStoreUnusable
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.loader import load_rules
from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.procs import REPO

# A description longer than a database page: the outbox row needs new pages, so a write
# cannot squeeze into free space of pages the file already has.
RULES = f"""\
version: sentinel/v1
service: chatbot-backend
slos:
  - name: chat-latency-p95
    description: {"Chat answers within 1.5 s. " * 200}
    sli:
      latency: {{histogram: chatbot_response_latency_seconds, quantile: 0.95}}
    threshold: 1.5s
    window: 5m
"""


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


def write_config(tmp_path: Path, slack_url: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES)
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://127.0.0.1:9"}}
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            notifiers:
              oncall:
                type: slack
                token: ${{TEST_SLACK_TOKEN}}
                channel: {CHANNEL}
                base_url: {slack_url}/api/
            """
        )
    )
    return config


@pytest.fixture
async def assembly(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Assembly, Clock]]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    config_path = write_config(tmp_path, slack.url)
    config = load_config(config_path)
    clock = Clock()
    built = await build_daemon(str(config_path), config, load_rules(config), clock)
    yield built, clock
    await built.cleanup()
    await built.daemon.stop()


def result(status: Status, value: float, at: float) -> SLOResult:
    return SLOResult(
        "chatbot-backend", "chat-latency-p95", status, value, 1.5, None, 300, at, kind="latency"
    )


async def cycle(built: Assembly, clock: Clock, status: Status, value: float) -> None:
    clock.now += 60
    group = built.daemon.rules.groups[0]
    await built.manager.observe(group, [result(status, value, clock.now)], clock.now)
    await built.dispatcher.deliver_due()


def store_reasons(built: Assembly) -> list[str]:
    return [r for r in built.daemon.readiness() if r.startswith("state store")]


async def test_alert_firing_while_the_store_is_full_is_announced_when_it_frees_firing_first(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    built, clock = assembly
    db = built.store.db
    await cycle(built, clock, Status.OK, 1.0)
    assert built.daemon.extra_health()["state_store"]["status"] == "healthy"
    assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full from here on

    await cycle(built, clock, Status.BREACH, 2.4)
    fired_at = clock.now
    # Nothing could be saved, so nothing was sent; but nothing is forgotten either.
    assert slack.messages == [] and built.store.outbox_stats()["pending"] == 0
    (alert,) = built.manager.to_json()
    assert alert["state"] == "firing" and alert["saved"] is False
    health = built.daemon.extra_health()["state_store"]
    assert health["status"] == "unhealthy"
    assert "database or disk is full" in health["last_error"]  # SQLite's own error...
    assert "cannot rollback" not in health["last_error"]  # ...not the rollback's
    assert health["unsaved_notifications"] == 1
    (reason,) = store_reasons(built)
    assert "alert state" in reason and "database or disk is full" in reason

    await cycle(built, clock, Status.OK, 1.0)  # recovers while the disk is still full
    assert slack.messages == [] and store_reasons(built)
    failing_since = health["failing_since"]
    assert built.daemon.extra_health()["state_store"]["failing_since"] == failing_since

    db.execute("PRAGMA max_page_count=1073741823")  # space freed
    await cycle(built, clock, Status.OK, 1.0)
    assert store_reasons(built) == []
    health = built.daemon.extra_health()["state_store"]
    assert health["status"] == "healthy" and health["unsaved_notifications"] == 0
    # The incident was announced, in order: FIRING posted, then updated to RESOLVED with
    # the resolve in its thread.
    posts = [(m, p["text"]) for m, p in slack.calls if m in ("chat.postMessage", "chat.update")]
    assert [m for m, _ in posts] == ["chat.postMessage", "chat.update", "chat.postMessage"]
    assert posts[0][1].startswith("🔴 FIRING: chatbot-backend — chat-latency-p95")
    assert posts[1][1].startswith("✅ RESOLVED: chatbot-backend — chat-latency-p95")
    assert posts[2][1].startswith("✅ Resolved: chat-latency-p95")
    # With the times it happened, not the time the disk freed.
    (incident,) = built.store.incidents()
    assert incident["started_at"] == fired_at and incident["resolved_at"] == fired_at + 60
    assert built.manager.to_json()[0]["saved"] is True


# -- start-up with a state file that cannot be used -------------------------------------


def valid_state(path: Path) -> None:
    store = Store(path)
    store.db.executemany(
        "INSERT INTO outbox(idempotency_key, notifier, kind, service, payload, created_at, "
        "next_attempt_at) VALUES (?, 'n', 'firing', 'svc', ?, 0, 0)",
        [(f"k{i}", "x" * 600) for i in range(200)],
    )
    store.close()  # the last connection checkpoints the WAL into the file


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def truncated(path: Path) -> None:
    valid_state(path)
    os.truncate(path, path.stat().st_size // 2)


def wrong_header(path: Path) -> None:
    valid_state(path)
    data = bytearray(path.read_bytes())
    data[:16] = b"SQLite format 9\0"
    path.write_bytes(bytes(data))


def corrupted_pages(path: Path) -> None:
    """Header and schema intact (it opens and answers queries); table pages overwritten."""
    valid_state(path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 6 : page * 6 + 512] = b"\xab" * 512
    path.write_bytes(bytes(data))


def directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    "damage",
    [garbage, truncated, wrong_header, corrupted_pages, directory],
    ids=lambda f: f.__name__,
)
def test_unusable_state_file_stops_start_with_exit_2_and_a_message_naming_it(
    tmp_path: Path, damage: object
) -> None:
    assert callable(damage)
    config = write_config(tmp_path, "http://127.0.0.1:9")
    state = tmp_path / "state.db"
    damage(state)
    before = state.read_bytes() if state.is_file() else None
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel", "run", "-c", str(config)],
        cwd=tmp_path,
        env={**os.environ, "TEST_SLACK_TOKEN": TOKEN, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert f"error: state store: {state}:" in proc.stderr
    if damage is directory:
        assert "is a directory" in proc.stderr and state.is_dir()
    else:
        assert "Move it aside" in proc.stderr and "would be lost" in proc.stderr
        assert state.read_bytes() == before  # never repaired, replaced or recreated


def test_state_file_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    valid_state(state)
    db = sqlite3.connect(state)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateStoreUnusable, match="schema version 99, newer than"):
        Store(state)
