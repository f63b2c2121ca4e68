"""The garbage collector's schedule for a long-running daemon with a large frozen heap.

After every cycle the daemon freezes what survived it (`gc.freeze()` in daemon/runner.py:
results, metric children, alert states live for many cycles, and the collector has no
reason to walk them again). CPython starts a full collection once ten younger ones have
run and the objects promoted since the last full one exceed a quarter of the long-lived
ones; frozen objects do not count as long-lived, so with the heap frozen every cycle that
quarter was reached over and over: a 10,000-service cycle ran 12 full collections, each
walking everything the cycle had built so far, about 45 % of its CPU (3.9-4.6 s per
cycle at 10,000 services x 3 SLIs, 2.0-2.6 s without them; the cost grew faster than the
number of services). Young collections keep their schedule: reference cycles that die
young are still freed at once.
"""

from __future__ import annotations

import gc

# Full collections only after this many middle-generation ones (CPython's default: 10).
FULL_AFTER = 1000


def tune() -> None:
    """Make full collections rare; young and middle generations keep their thresholds."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)
