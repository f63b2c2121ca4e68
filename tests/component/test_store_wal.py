"""The SQLite store's WAL stays bounded while writes never pause. Checkpoints run in a
worker thread in PASSIVE mode (never blocking the event loop's commits), and PASSIVE
never shortens the WAL: SQLite starts it over only when a write begins after every frame
was copied. The soak's back-to-back cycles never allowed that, and its WAL grew 94 MB in
68 s (a disk filling for nothing); past `wal_limit` the checkpoint now truncates it."""

from __future__ import annotations

import os
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
        # One small transaction after another, as the gate's audit under load, through 40
        # checkpoints.
        while len(sizes) < 40 and time.monotonic() < deadline:
            i = writes
            store.record_gates([(float(i), "svc", "pass", f'{{"i": {i}}}', f'{{"b": {i}}}')])
            writes += 1
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
