"""`sentinel run` tunes glibc malloc (sentinel/daemon/allocator.py): large blocks a cycle
frees go back to the system instead of staying resident in the heap."""

from __future__ import annotations

import os
import subprocess
import sys

# A 1 MiB block freed and asked for again (outside pymalloc: Python's own large objects
# take the same path), then whether the second one got pages of its own.
PROGRAM = """
import ctypes, sys
from sentinel.daemon.allocator import tune
done = tune() if sys.argv[1] == "tune" else []
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
print(",".join(done) or "-", libc.mallinfo2().hblks - before)
"""


def run(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    """(settings tune() made, whether the second 1 MiB block was mmapped)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **(env or {})},
    )
    done, mmapped = out.stdout.split()
    return done, int(mmapped)


def test_a_large_block_gets_pages_of_its_own_however_large_blocks_freed_before() -> None:
    assert run("plain") == ("-", 0)  # from the heap: its pages stay resident once freed
    assert run("tune") == ("MALLOC_MMAP_THRESHOLD_", 1)


def test_an_operators_own_malloc_settings_win() -> None:
    # 2 MiB: the 1 MiB block comes from the heap, as the operator asked.
    assert run("tune", {"MALLOC_MMAP_THRESHOLD_": str(2 << 20)}) == ("-", 0)
    tunables = {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={2 << 20}"}
    assert run("tune", tunables) == ("-", 0)
