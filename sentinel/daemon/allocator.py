"""glibc malloc, tuned for a daemon whose cycles build and drop megabytes of large blocks.

One setting: **a fixed mmap threshold (128 KiB, glibc's initial value).** Blocks above it
get pages of their own, returned to the system when freed. glibc raises the threshold to
the size of each such block freed (up to 32 MiB), so after the first cycle the large
lists, dicts and answer buffers a cycle builds (an answer's body is megabytes at 10,000
series) came from the heap instead, and its free space, held in place by long-lived
blocks, stayed resident: 87–108 MB free in the main arena after nine cycles at 10,000
services x 3 SLIs. Setting the threshold explicitly turns the raising off. Measured with
the whole daemon (`bench/run.py`'s dataset, nine cycles): RSS 355–379 -> 323–333 MB at
10,000 services, 98 -> 91–93 MB at 1,000.

Capping glibc's arenas (`MALLOC_ARENA_MAX=2`, the usual advice for threaded Python
services) was measured too and left out: it saved a few MB at 1,000 services, but the
gate under load while cycles ran answered 0.56 x bare aiohttp with it against 0.64-0.65 x
without (eight and four 10 s runs; the loop's thread waits for an arena a worker thread
holds).

`sentinel run` calls `tune()` at start; so do the benchmarks and the soak that build the
daemon as it does. An operator's own setting wins, as
`MALLOC_MMAP_THRESHOLD_` or in `GLIBC_TUNABLES` (`glibc.malloc.mmap_threshold`); on a C
library other than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def tune() -> list[str]:
    """Apply the setting; the names of those set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return []
    if "glibc.malloc.mmap_threshold=" in os.environ.get("GLIBC_TUNABLES", ""):
        return []
    libc = _glibc()
    if libc is None:
        return []
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("could not tune malloc", extra={"setting": "M_MMAP_THRESHOLD"})
        return []
    return ["MALLOC_MMAP_THRESHOLD_"]


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
