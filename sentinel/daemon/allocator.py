"""glibc malloc's arenas for a daemon whose threads are short jobs.

The daemon's worker threads each do a burst of allocation and leave: answers decoded
off the loop (sources/http.py), SQLite writes, `/metrics` and the large API answers
rendered apart, dashboards written at a reload. glibc gives each thread that meets a
locked arena an arena of its own, up to 8 per core, and never gives one back; what a
burst leaves scattered in an arena stays resident. Measured at 1,000 services x 3 SLIs
(`bench/run.py`'s dataset, nine cycles): RSS 95.5 -> 98.0 MB and still climbing with the
default, flat at 93.4 MB with one arena. Two arenas is what Gunicorn's and Heroku's
guidance settles on for threaded Python services: the worker threads rarely contend for
long (the GIL serialises most of their allocations anyway).

Only `sentinel run` calls `limit_arenas()`, first thing, before any thread exists; an
operator's own `MALLOC_ARENA_MAX` wins. On a C library other than glibc (musl, macOS)
nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; True when the cap was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # gnu_get_libc_version exists only in glibc: M_ARENA_MAX means something else, or
    # nothing, to other C libraries' mallopt.
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("could not limit malloc arenas", extra={"arenas": arenas})
        return False
    return True
