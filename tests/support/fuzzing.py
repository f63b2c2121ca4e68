"""Shared settings and bookkeeping for the property-based (Hypothesis) fuzz tests.

CI runs a bounded, reproducible number of examples: `derandomize=True` makes every run
draw the same inputs, and no example database is written (nothing depends on what an
earlier run on this machine found). `SENTINEL_FUZZ_EXAMPLES` sets the base number of
examples per target (default 100, sized so every fuzz test together takes about two
minutes on the 2-core CI machine); each target scales it by its cost. A long run:

    SENTINEL_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests -k fuzz -p no:cacheprovider

`SENTINEL_FUZZ_RANDOM=1` draws fresh random inputs instead (exploring beyond the CI set);
a failure then prints a `@reproduce_failure` blob that replays it. Every target counts the
inputs it actually tried; the session prints the counts.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

F = TypeVar("F", bound=Callable[..., Any])

BASE_EXAMPLES = int(os.environ.get("SENTINEL_FUZZ_EXAMPLES", "100"))
RANDOM = bool(os.environ.get("SENTINEL_FUZZ_RANDOM"))

TRIED: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()
CHECKED: Counter[str] = Counter()  # other counts a target reports (queries parsed...)
_lock = threading.Lock()


def fuzz_settings(weight: float = 1.0) -> settings:
    """Settings for one target: `weight` x the base number of examples (at least 5)."""
    return settings(
        max_examples=max(5, int(BASE_EXAMPLES * weight)),
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
    )


def counted(target: str) -> Callable[[F], F]:
    """Count each input a test body is called with (and its time) under `target`.

    Put it between `@given` and the function: Hypothesis calls the body once per input,
    including its shrinking attempts after a failure."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with _lock:
                    TRIED[target] += 1
                    SECONDS[target] += time.perf_counter() - started

        return inner  # type: ignore[return-value]

    return wrap


def note(target: str, count: int) -> None:
    """Count `count` checks of another kind under `target` (e.g. queries parsed)."""
    with _lock:
        CHECKED[target] += count


def summary() -> list[str]:
    """One line per fuzz target: inputs tried and seconds spent (empty if none ran)."""
    if not TRIED:
        return []
    lines = [
        f"fuzz: base {BASE_EXAMPLES} examples (SENTINEL_FUZZ_EXAMPLES), "
        f"{'random' if RANDOM else 'the fixed CI'} inputs"
    ]
    for target in sorted(TRIED):
        lines.append(f"  {target:<36} {TRIED[target]:>7} inputs  {SECONDS[target]:7.1f} s")
    lines.append(f"  {'total':<36} {sum(TRIED.values()):>7} inputs  {sum(SECONDS.values()):7.1f} s")
    lines += [f"  {target:<36} {CHECKED[target]:>7}" for target in sorted(CHECKED)]
    return lines
