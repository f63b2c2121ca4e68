"""A renderer for the chart worker's tests: what it does is chosen by the chart's title,
so a test can make the worker process hang, crash, raise or talk out of turn."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from sentinel.notify.chart import ChartSpec


def scripted(spec: ChartSpec) -> bytes:
    act, _, arg = spec.title.partition(":")
    if act == "pid":
        return str(os.getpid()).encode()
    if act == "env":
        return json.dumps(dict(os.environ)).encode()
    if act == "hang":
        time.sleep(3600)
    if act == "slow":
        time.sleep(float(arg))
        return b"slow"
    if act == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if act == "raise":
        raise ValueError("failed to allocate bitmap")
    if act == "stderr":  # one line far longer than a pipe buffer or a reader's line limit
        sys.stderr.write("x" * int(arg))
        sys.stderr.flush()
        return b"ok"
    if act == "print":  # a library writing to stdout must not corrupt the replies
        print("noise " * 1000)
        sys.stdout.flush()
        return b"clean"
    if act == "huge":  # far beyond any chart: the daemon must not read it into memory
        return b"\0" * (17 * 2**20)
    if act == "text":
        return "not bytes"  # type: ignore[return-value]
    return spec.title.encode()
