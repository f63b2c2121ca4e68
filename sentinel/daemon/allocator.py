"""glibc malloc, tuned for a daemon whose cycles build and drop megabytes of large blocks,
and whose event loop takes a 256 KiB buffer from malloc for every socket read.

Two settings:

- **A fixed mmap threshold (512 KiB).** Blocks above it get pages of their own, returned
  to the system when freed. glibc raises the threshold to the size of each such block
  freed (up to 32 MiB), so after the first cycle the large lists, dicts and answer
  buffers a cycle builds (an answer's body is megabytes at 10,000 series) came from the
  heap instead, and its free space, held in place by long-lived blocks, stayed resident:
  87-108 MB free in the main arena after nine cycles at 10,000 services x 3 SLIs. Setting
  the threshold explicitly turns the raising off (whole daemon, nine cycles, measured with
  the threshold at 128 KiB: RSS 355-379 -> 323-333 MB at 10,000 services, 98 -> 91-93 MB
  at 1,000).
- **A trim threshold of 4 MiB.** Setting the mmap threshold also stops glibc moving its
  trim threshold with it, which then stays at 128 KiB: free space at the heap's top
  beyond that is given back to the system at once, and asked for again by the next
  block.

Why 512 KiB and not glibc's initial 128 KiB (the setting here until 2026-11-27): asyncio
reads a socket into a new bytes object of its transport's `max_size` (256 KiB), then
shrinks it to what arrived. Above the threshold every read - every gate request - was an
mmap, a page fault and an mremap or munmap, all under the GIL; below it but with the
128 KiB trim threshold, a read's buffer freed at the heap's top was trimmed away and the
next read grew the heap again. With both settings the buffer is carved from the heap and
its free space reused. Measured with wrk (50 connections, cycles every 5 s, 50 services):
the gate at 0.71-0.78 x the bare aiohttp server's throughput before, 0.85-0.89 x after;
its p99 +1.5-2.1 ms over the bare server's before, +0.6-0.8 ms after. At 1,000 services
neither moved (a heap grown by larger cycles has free blocks of that size). RSS, whole
daemon after nine cycles: 87.2-87.3 -> 88.0-88.8 MB at 1,000 services (+1-1.5 MB),
302-304 -> 304-312 MB at 10,000 (up to +8 MB, ~3 %); a 30,000-cycle soak ended at 58.9 MB
with either setting.

Capping glibc's arenas (`MALLOC_ARENA_MAX=2`, the usual advice for threaded Python
services) was measured too and left out: it saved a few MB at 1,000 services, but the
gate under load while cycles ran answered 0.56 x bare aiohttp with it against 0.64-0.65 x
without (eight and four 10 s runs; the loop's thread waits for an arena a worker thread
holds).

`sentinel run` calls `tune()` at start; so do the benchmarks and the soak that build the
daemon as it does. An operator's own setting of either wins, as `MALLOC_MMAP_THRESHOLD_`
or `MALLOC_TRIM_THRESHOLD_`, or in `GLIBC_TUNABLES` (`glibc.malloc.mmap_threshold`,
`glibc.malloc.trim_threshold`), and the other is still made (an operator who set only
the mmap threshold had glibc's 128 KiB trim threshold before 2026-11-27, 4 MiB since);
on a C library other than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 512 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024
M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3

# (mallopt option, its value, its environment variable, its GLIBC_TUNABLES name)
SETTINGS = (
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    (M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
)
VALUES = {name: value for _, value, name, _ in SETTINGS}


def tune() -> list[str]:
    """Apply the settings the operator did not make; the names of those set here."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    wanted = [
        (option, value, name)
        for option, value, name, tunable in SETTINGS
        if name not in os.environ and f"{tunable}=" not in tunables
    ]
    libc = _glibc() if wanted else None
    if libc is None:
        return []
    done = []
    for option, value, name in wanted:
        if libc.mallopt(option, value) == 1:
            done.append(name)
        else:
            log.warning("could not tune malloc", extra={"setting": name})
    return done


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on, whatever its name
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc: mallopt's options mean something else,
    # or nothing, to other C libraries.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc
