"""`sentinel run` tunes glibc malloc (sentinel/daemon/allocator.py): large blocks a cycle
frees go back to the system instead of staying resident in the heap, and the buffer of
each socket read costs no system call."""

from __future__ import annotations

import asyncio.selector_events
import os
import platform
import subprocess
import sys

import pytest

from sentinel.daemon import allocator

# The programs read glibc's mallinfo2 (glibc 2.33 and later); tune() does nothing elsewhere.
_libc, _version = platform.libc_ver()
pytestmark = pytest.mark.skipif(
    _libc != "glibc" or tuple(int(p) for p in _version.split(".")[:2]) < (2, 33),
    reason=f"needs glibc >= 2.33 (this is {_libc or 'not glibc'} {_version})",
)

BOTH = "MALLOC_MMAP_THRESHOLD_,MALLOC_TRIM_THRESHOLD_"

# Both programs: tune() or not (argv[1]), then glibc's malloc, realloc, free and mallinfo2.
PREAMBLE = """
import ctypes, sys
from sentinel.daemon.allocator import tune
done = tune() if sys.argv[1] == "tune" else []
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.realloc.restype = ctypes.c_void_p
libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
"""

# A 1 MiB block freed and asked for again (outside pymalloc: Python's own large objects
# take the same path), then whether the second one got pages of its own.
PROGRAM = (
    PREAMBLE
    + """
libc.free(libc.malloc(1 << 20))  # glibc raises its mmap threshold past this size...
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)  # ...so this one comes from the heap, unless fixed
print(",".join(done) or "-", libc.mallinfo2().hblks - before)
"""
)


READS = (
    PREAMBLE
    + """
size = int(sys.argv[2]) + 64
def read():
    before = libc.mallinfo2()
    block = libc.malloc(size)
    during = libc.mallinfo2()
    block = libc.realloc(block, 300)  # the request that arrived
    libc.free(block)
    return during.hblks - before.hblks, during.arena != before.arena
read()
mapped = resized = 0
for _ in range(100):
    own_pages, heap_grew = read()
    mapped += own_pages
    resized += heap_grew
print(",".join(done) or "-", mapped, resized)
"""
)


def run(mode: str, env: dict[str, str] | None = None, program: str = PROGRAM) -> list[str]:
    """What `program` printed: the settings tune() made, then its counts."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    read_size = str(asyncio.selector_events._SelectorTransport.max_size)
    out = subprocess.run(
        [sys.executable, "-c", program, mode, read_size],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **(env or {})},
    )
    return out.stdout.split()


def test_a_large_block_gets_pages_of_its_own_however_large_blocks_freed_before() -> None:
    assert run("plain") == ["-", "0"]  # from the heap: its pages stay resident once freed
    assert run("tune") == [BOTH, "1"]


def test_a_socket_reads_buffer_costs_no_system_call() -> None:
    # The threshold stays above asyncio's read size, or every read is mapped on its own.
    assert asyncio.selector_events._SelectorTransport.max_size < allocator.MMAP_THRESHOLD
    assert run("tune", program=READS) == [BOTH, "0", "0"]
    # The setting before: glibc's initial 128 KiB, fixed, and its trim threshold with it.
    old = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    assert run("plain", old, READS) == ["-", "100", "0"]
    # The trim threshold alone left at 128 KiB: each read's buffer trimmed away.
    assert run("plain", {"MALLOC_MMAP_THRESHOLD_": str(512 << 10)}, READS) == ["-", "0", "100"]


def test_an_operators_own_malloc_settings_win() -> None:
    # 2 MiB: the 1 MiB block comes from the heap, as the operator asked.
    trim_only = "MALLOC_TRIM_THRESHOLD_"  # the other setting is still made
    assert run("tune", {"MALLOC_MMAP_THRESHOLD_": str(2 << 20)}) == [trim_only, "0"]
    tunables = {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={2 << 20}"}
    assert run("tune", tunables) == [trim_only, "0"]
    # The operator's 128 KiB trim threshold: each read's buffer trimmed away, as asked.
    trim = {"MALLOC_TRIM_THRESHOLD_": str(128 << 10)}
    assert run("tune", trim, READS) == ["MALLOC_MMAP_THRESHOLD_", "0", "100"]
    trim = {"GLIBC_TUNABLES": f"glibc.malloc.trim_threshold={128 << 10}"}
    assert run("tune", trim, READS) == ["MALLOC_MMAP_THRESHOLD_", "0", "100"]
    both = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1:glibc.malloc.trim_threshold=1"}
    assert run("tune", both) == ["-", "1"]
