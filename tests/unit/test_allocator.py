"""`sentinel run` tunes glibc malloc (sentinel/daemon/allocator.py): worker threads that
come and go share two arenas instead of each keeping one resident, and large blocks a
cycle frees go back to the system instead of staying in the heap."""

from __future__ import annotations

import os
import subprocess
import sys

# Eight threads alive at once, each allocating outside pymalloc (blocks over 512 bytes go
# to malloc); then a 1 MiB block freed and asked for again; then glibc's own report.
PROGRAM = """
import ctypes, sys, threading
from sentinel.daemon.allocator import tune
done = tune() if sys.argv[1] == "tune" else []
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
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(1 << 20))  # glibc raises its mmap threshold past this size...
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)  # ...so this one comes from the heap, unless fixed
print(",".join(done) or "-", libc.mallinfo2().hblks - before, flush=True)
libc.malloc_stats()
"""


def run(mode: str, env: dict[str, str] | None = None) -> tuple[str, int, int]:
    """(settings tune() made, whether the 1 MiB block was mmapped, arenas)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **(env or {})},
    )
    done, mmapped = out.stdout.split()
    return done, int(mmapped), out.stderr.count("Arena ")


def test_the_daemons_threads_share_two_malloc_arenas() -> None:
    assert run("plain")[2] >= 4  # the default: one per thread, up to 8 per core
    assert run("tune")[2] == 2


def test_a_large_block_gets_pages_of_its_own_however_large_blocks_freed_before() -> None:
    assert run("plain")[1] == 0  # from the heap: its pages stay resident once freed
    assert run("tune")[1] == 1


def test_an_operators_own_malloc_settings_win() -> None:
    assert run("tune")[0] == "MALLOC_ARENA_MAX,MALLOC_MMAP_THRESHOLD_"
    done, mmapped, arenas = run("tune", {"MALLOC_ARENA_MAX": "4"})
    assert (done, mmapped) == ("MALLOC_MMAP_THRESHOLD_", 1) and 2 < arenas <= 4


def test_an_operators_glibc_tunables_win_too() -> None:
    done, mmapped, arenas = run("tune", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert (done, mmapped) == ("MALLOC_MMAP_THRESHOLD_", 1) and 2 < arenas <= 4
