"""State retention (`state.retention`): finished notifications, resolved incidents and
ended silences older than the retention are deleted in batches, by the running daemon,
so a long-running Sentinel's state database stays bounded; what is still needed (pending
notifications, open incidents, recent history) is kept."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.alerting.silences import SilenceMatcher
from sentinel.alerting.store import NewNotification, Store
from sentinel.config import load_config
from sentinel.daemon.assembly import build_daemon
from sentinel.errors import ConfigError
from sentinel.rules.loader import load_rules

DAY = 86400.0
NOW = 1_800_000_000.0


def _incident(iid: str, started: float) -> dict[str, object]:
    return {
        "id": iid,
        "alert_key": f"svc/{iid}",
        "service": "svc",
        "slo": iid,
        "severity": "page",
        "labels": "{}",
        "started_at": started,
        "last_value": 1.0,
        "threshold": 0.5,
    }


def _note(key: str, incident: str, at: float) -> NewNotification:
    return NewNotification(
        key, "oncall", "firing", "svc", {"alerts": [{"incident_id": incident}]}, at
    )


def _history(store: Store, old: float) -> None:
    """At `old`: incidents old-a (resolved, delivered), old-b (resolved, its RESOLVED
    message still pending), open (never resolved); a recent one; notifications."""
    store.commit_cycle(
        [],
        [_incident("old-a", old), _incident("old-b", old), _incident("open", old)],
        [("old-a", old + 60), ("old-b", old + 120)],
        [_note(f"n{i}", "old-a", old) for i in range(7)] + [_note("pending", "old-b", old + 120)],
        old,
    )
    store.commit_cycle([], [_incident("recent", NOW - DAY)], [("recent", NOW - DAY)], [], NOW)
    due = {e.idempotency_key: e.id for e in store.due(NOW, limit=100)}
    for i in range(5):
        store.mark_delivered(due[f"n{i}"], old + 1)
    store.mark_dead(due["n5"], old + 1, "gave up")
    # n6 delivered recently (a retry that succeeded today): kept.
    store.mark_delivered(due["n6"], NOW - 60)
    store.save_slack_message("oncall", [{"incident_id": "old-a"}], "C1", "1.1")
    store.acknowledge("old-a", "alice", old + 10)
    store.add_silence([SilenceMatcher("service", "svc")], old, old + 3600, "bob", "old")
    store.add_silence([SilenceMatcher("service", "svc")], NOW, NOW + 3600, "bob", "current")


def _keys(store: Store) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT idempotency_key FROM outbox ORDER BY id")]


def test_history_past_retention_is_deleted_in_batches_and_what_is_still_needed_stays(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db", clock=lambda: NOW)
    _history(store, NOW - 40 * DAY)
    cutoff = NOW - 30 * DAY
    assert store.prune_history(cutoff, limit=4) == {"outbox": 4, "incidents": 1, "silences": 1}
    assert store.prune_history(cutoff, limit=4) == {"outbox": 2, "incidents": 0, "silences": 0}
    assert store.prune_history(cutoff, limit=4) == {"outbox": 0, "incidents": 0, "silences": 0}
    # The pending notification and the one delivered today stay.
    assert _keys(store) == ["n6", "pending"]
    # old-b waits for its pending RESOLVED message (re-rendered from the incident row);
    # the open incident and the recent one stay.
    assert sorted(i["id"] for i in store.incidents()) == ["old-b", "open", "recent"]
    assert store.slack_message("oncall", "old-a") is None
    assert store.acknowledgements(["old-a"]) == {}
    assert [s.comment for s in store.silences()] == ["current"]
    # Once the pending message is delivered, old-b goes too.
    pending = store.due(NOW, limit=10)[0]
    store.mark_delivered(pending.id, NOW - 35 * DAY)
    assert store.prune_history(cutoff)["incidents"] == 1
    assert sorted(i["id"] for i in store.incidents()) == ["open", "recent"]
    store.close()


RULES = """\
version: sentinel/v1
service: svc
slos:
  - name: up
    sli:
      latency: {histogram: http_request_duration_seconds, quantile: 0.95}
    threshold: 2s
    window: 5m
"""


def _config(tmp_path: Path, state: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "svc.yaml").write_text(RULES)
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://127.0.0.1:9"}}
            rules: [rules/*.yaml]
            state: {state}
            """
        )
    )
    return path


async def _wait_until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_running_daemon_applies_the_retention_at_start_and_periodically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.daemon import retention

    monkeypatch.setattr(retention, "BATCH", 3)  # several passes: the catch-up loop runs
    monkeypatch.setattr(retention.StateRetention, "every", 0.05)
    store = Store(tmp_path / "state.db", clock=lambda: NOW)
    _history(store, NOW - 3 * DAY)
    store.close()
    path = _config(tmp_path, "{path: state.db, retention: 2d}")
    config = load_config(path)
    assert config.state.retention == 2 * DAY
    clock = [NOW]
    built = await build_daemon(str(path), config, load_rules(config), lambda: clock[0])
    try:
        await _wait_until(lambda: _keys(built.store) == ["n6", "pending"], "the start prune")
        assert {"open", "recent"} <= {i["id"] for i in built.store.incidents()}
        # Two days later the recent incident and today's deliveries are past retention
        # (the pending entry's notifier is not configured: the dispatcher marked it dead).
        clock[0] = NOW + 2 * DAY + 1
        await _wait_until(lambda: _keys(built.store) == [], "the periodic prune")
        assert [i["id"] for i in built.store.incidents()] == ["open"]
    finally:
        await built.cleanup()
        await built.daemon.stop()


def test_retention_is_bounded_and_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"state\.retention: must be at least 1h"):
        load_config(_config(tmp_path, "{path: state.db, retention: 10m}"))
    assert load_config(_config(tmp_path, "{path: state.db}")).state.retention == 30 * DAY
