"""The SQLite store's WAL stays bounded while writes never pause. Checkpoints run in a
worker thread in PASSIVE mode (never blocking the event loop's commits), and PASSIVE
never shortens the WAL: SQLite starts it over only when a write begins after every frame
was copied. The soak's back-to-back cycles never allowed that, and its WAL grew 94 MB in
68 s (a disk filling for nothing); past `wal_limit` the checkpoint now truncates it."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sentinel.alerting.store import Store

LIMIT = 256 * 1024


def wal_bytes(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except OSError:
        return 0


def test_the_wal_stays_bounded_while_writes_never_pause(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.checkpoints_in_background()  # as `sentinel run` does
    store.wal_limit = LIMIT
    stop = threading.Event()
    sizes: list[int] = []
    copied: list[int] = []

    def checkpoints() -> None:  # the daemon's checkpoint task, faster
        while not stop.is_set():
            copied.append(store.checkpoint())
            sizes.append(wal_bytes(path))
            time.sleep(0.005)

    thread = threading.Thread(target=checkpoints)
    thread.start()
    writes = 0
    deadline = time.monotonic() + 20
    try:
        # One small transaction every millisecond (the event loop's commits between its
        # other work), at least 1,000 of them through at least 40 checkpoints.
        while (len(sizes) < 40 or writes < 1000) and time.monotonic() < deadline:
            i = writes
            store.record_gates([(float(i), "svc", "pass", f'{{"i": {i}}}', f'{{"b": {i}}}')])
            writes += 1
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    assert sum(copied) > 0 and len(sizes) >= 40
    assert writes * 4096 > 8 * LIMIT  # the WAL would have outgrown the limit many times over
    assert max(sizes) < 4 * LIMIT, f"WAL reached {max(sizes):,} bytes (limit {LIMIT:,})"
    assert len(store.gate_history("svc", writes + 1)) == writes  # nothing lost to a truncation
    store.close()
    reopened = Store(path)
    assert len(reopened.gate_history("svc", writes + 1)) == writes
    reopened.close()


def test_a_reader_that_holds_a_snapshot_does_not_stall_the_writes(tmp_path: Path) -> None:
    # A backup or `sqlite3` left in a transaction keeps any checkpoint from emptying the
    # WAL. Truncating must then give up quickly, not hold the event loop's commits behind
    # its wait for the reader (5 s each second with a 5 s busy timeout).
    path = tmp_path / "state.db"
    store = Store(path)
    store.checkpoints_in_background()
    store.wal_limit = LIMIT
    store.truncate_backoff = 0.2
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM gate_decisions").fetchone()  # holds its snapshot
    stop = threading.Event()
    slowest: list[float] = []
    checkpoints = 0

    def run_checkpoints() -> None:
        nonlocal checkpoints
        while not stop.is_set():
            store.checkpoint()
            checkpoints += 1
            time.sleep(0.005)

    thread = threading.Thread(target=run_checkpoints)
    thread.start()
    try:
        for i in range(1500):
            started = time.monotonic()
            store.record_gates([(float(i), "svc", "pass", f'{{"i": {i}}}', f'{{"b": {i}}}')])
            slowest.append(time.monotonic() - started)
            time.sleep(0.0005)
        assert wal_bytes(path) > LIMIT  # the reader kept it: nothing else could be done
        reader.execute("COMMIT")
        reader.close()
        for _ in range(200):  # the reader gone, the next truncation empties the WAL
            store.record_gates([(0.0, "svc", "pass", "{}", "{}")])
            time.sleep(0.01)
            if wal_bytes(path) < LIMIT:
                break
    finally:
        stop.set()
        thread.join()
    assert checkpoints > 10
    assert max(slowest) < 0.5, f"a commit waited {max(slowest):.2f} s behind a checkpoint"
    assert wal_bytes(path) < LIMIT
    store.close()
