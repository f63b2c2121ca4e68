"""`sentinel run` caps glibc's malloc arenas: worker threads that come and go must not
each leave an arena of resident memory behind (sentinel/daemon/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys

# Eight threads alive at once, each allocating outside pymalloc (blocks over 512 bytes go
# to malloc), then glibc's own report of its arenas.
PROGRAM = """
import ctypes, sys, threading
from sentinel.daemon.allocator import limit_arenas
capped = limit_arenas() if sys.argv[1] == "cap" else False
barrier = threading.Barrier(9)
def work():
    kept = [bytes(100_000) for _ in range(20)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()
for t in threads:
    t.join()
print(capped, flush=True)
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}, **(env or {})},
    )
    return out.stdout.strip(), out.stderr.count("Arena ")


def test_threads_of_the_daemon_share_two_malloc_arenas() -> None:
    uncapped = arenas("plain")
    capped = arenas("cap")
    assert uncapped[1] >= 4, uncapped  # one per thread, the default (8 per core)
    assert capped == ("True", 2), capped


def test_an_operators_malloc_arena_max_wins() -> None:
    assert arenas("cap", {"MALLOC_ARENA_MAX": "4"})[0] == "False"
