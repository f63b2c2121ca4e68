"""Slack alert charts drawn in a separate process, so matplotlib never enters the daemon.

Drawn in a thread of the daemon, the first chart imported matplotlib and numpy into it
for good (+47 MB RSS, 1.2 s of CPU holding the interpreter) and each chart after took
~250 ms of CPU the event loop competed for: an incident that pages twenty SLOs stalled the
gate and the health checks for seconds, exactly when deploy pipelines ask the gate.
`ChartWorker` runs `python -m sentinel.notify.chart_worker` instead and talks to it over
its stdin/stdout:

    request  8-byte big-endian length, then a pickled ChartSpec
    reply    1 status byte (0 PNG, 1 error text), 8-byte big-endian length, the bytes

Only the daemon writes what the worker unpickles; the daemon never unpickles anything the
worker sends. The worker is started at the first chart and ends after `idle_after`
seconds without one (charts come in bursts; memory goes back between incidents), after
`max_renders` charts (matplotlib's caches grow), when a chart takes longer than
`timeout` (killed: a hung render never holds the next page's chart), when its caller is
cancelled mid-exchange (the pipe would hold a stale reply), and with the daemon (stdin
closed; the kernel kills it if the daemon dies without that). Every failure is
`ChartUnavailable` — the alert then goes out as text — and the next chart starts a
fresh worker. The worker gets none of the daemon's environment beyond what drawing
needs: no Slack token, no webhook secret.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import importlib
import logging
import os
import pickle
import signal
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from sentinel.errors import ChartUnavailable
from sentinel.health import DependencyHealth
from sentinel.notify.chart import ChartSpec

log = logging.getLogger(__name__)

DEFAULT_RENDER = "sentinel.notify.chart:render_png"
# What drawing needs from the daemon's environment (locale, fonts' and matplotlib's cache
# directories, temp files); the secrets the daemon reads from its environment stay there.
PASSED_ENV = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "FONTCONFIG_PATH", "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONHOME", "LD_LIBRARY_PATH",
)  # fmt: skip
MAX_REQUEST = 64 * 2**20  # a ChartSpec holds at most ~1,000 points: a few KB pickled
MAX_PNG = 16 * 2**20  # a chart is ~80 KB
STDERR_LINES = 20  # the worker's last words, for the error a failure reports
STOP_GRACE = 5.0  # seconds a retired worker gets to exit on EOF before it is killed


class ChartWorker:
    """`await worker(spec)` -> PNG bytes, drawn in the worker process (one at a time)."""

    def __init__(
        self,
        timeout: float = 10.0,
        idle_after: float = 300.0,
        max_renders: int = 500,
        render: str = DEFAULT_RENDER,
    ) -> None:
        self.timeout = timeout
        self.idle_after = idle_after
        self.max_renders = max_renders
        self.render = render  # "module:function" the worker imports
        self.starts = 0
        # The last chart's outcome, for /health/detailed (informational: a chart that
        # cannot be drawn costs the picture, never the alert).
        self.health = DependencyHealth("chart_worker", f"python -m {__name__}")
        self._proc: asyncio.subprocess.Process | None = None
        self._renders = 0
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._lock = asyncio.Lock()
        self._idle: asyncio.TimerHandle | None = None
        self._busy: asyncio.Future[tuple[int, bytes]] | None = None
        self._busy_proc: asyncio.subprocess.Process | None = None
        self._closed = False
        self._retired: weakref.WeakSet[asyncio.subprocess.Process] = weakref.WeakSet()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None between workers)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def __call__(self, spec: ChartSpec) -> bytes:
        try:
            return await self._draw(spec)
        except ChartUnavailable as exc:
            if not getattr(exc, "recorded", False):
                self.health.record_failure(0.0, str(exc))
            raise

    def health_json(self) -> dict[str, Any]:
        return {
            **self.health.as_json(),
            "informational": True,
            "pid": self.pid,
            "starts": self.starts,
        }

    async def _draw(self, spec: ChartSpec) -> bytes:
        if self._closed:
            raise ChartUnavailable("chart worker closed (the daemon is stopping)")
        frame = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._busy is not None:
                # A chart whose caller gave up (its own deadline) is still being drawn:
                # its reply is read and dropped before this one is asked for.
                await asyncio.wait([self._busy])
                self._stop_idle()  # the one that exchange set
            if self._closed:
                raise ChartUnavailable("chart worker closed (the daemon is stopping)")
            proc = await self._running()
            if self._closed:  # closed while the worker started: it goes too
                self._retire(proc, kill=False)
                raise ChartUnavailable("chart worker closed (the daemon is stopping)")
            exchange = asyncio.ensure_future(self._exchange_within(proc, frame))
            exchange.add_done_callback(_retrieved)
            self._busy, self._busy_proc = exchange, proc
            # Shielded: a caller that stops waiting leaves the exchange to finish (bounded
            # by `timeout`) instead of killing a worker that is drawing as it should.
            status, body = await asyncio.shield(exchange)
        if status != 0:
            raise _recorded(ChartUnavailable(body.decode("utf-8", "replace")))
        return body

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    async def _exchange_within(
        self, proc: asyncio.subprocess.Process, frame: bytes
    ) -> tuple[int, bytes]:
        began = time.monotonic()
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    status, body = await self._exchange(proc, frame)
            except BaseException as exc:
                raise await self._failed(proc, exc) from None
        except ChartUnavailable as exc:
            # Recorded and logged here: the caller may have given up on this chart.
            self.health.record_failure(time.monotonic() - began, str(exc))
            log.warning(f"chart not drawn: {exc}")
            raise _recorded(exc) from None
        finally:
            self._busy = self._busy_proc = None
        if status == 0:
            self.health.record_success(time.monotonic() - began)
        else:
            self.health.record_failure(time.monotonic() - began, body.decode("utf-8", "replace"))
        self._renders += 1
        if self._renders >= self.max_renders:
            self._retire(proc, kill=False)
        elif self.idle_after > 0 and not self._closed:
            self._stop_idle()
            self._idle = asyncio.get_running_loop().call_later(
                self.idle_after, self._retire, proc, False
            )
        return status, body

    async def _failed(self, proc: asyncio.subprocess.Process, exc: BaseException) -> BaseException:
        """What `exc`, interrupting an exchange with `proc`, means for the caller."""
        # A timeout, a dead worker or an oversized reply leaves the pipe mid-reply: this
        # worker is done. One that died is not signalled: Popen's kill() would reap it
        # under the child watcher, and its exit code (the crash's signal) would be lost.
        dead = isinstance(exc, asyncio.IncompleteReadError | BrokenPipeError)
        self._retire(proc, kill=not dead)
        if isinstance(exc, TimeoutError):
            return ChartUnavailable(f"chart worker drew nothing within {self.timeout:g} s (killed)")
        if dead:
            await self._reap(proc)
            return ChartUnavailable(
                f"chart worker exited (code {proc.returncode}){self._last_words()}"
            )
        if isinstance(exc, ConnectionError):
            return ChartUnavailable(f"chart worker killed: {exc}")
        return exc

    async def close(self) -> None:
        """Ends the worker (and any being retired) before the daemon exits; later charts
        are refused."""
        self._closed = True
        self._stop_idle()
        if self._busy is not None:  # a chart being drawn ends first (bounded by timeout)
            await asyncio.wait([self._busy], timeout=self.timeout + STOP_GRACE)
        if self._proc is not None:
            self._retire(self._proc, kill=False)
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _running(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        if not sys.executable:
            raise ChartUnavailable("chart worker did not start: no Python executable known")
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        # The daemon's own import path, so the worker loads the same `sentinel` (a source
        # checkout that is not installed included), as multiprocessing's spawn does. `-P`
        # and cwd "/": `python -m` would put the working directory first on the path,
        # and whoever can write there would choose the code the worker runs.
        env["PYTHONPATH"] = _import_path()
        self._stderr.clear()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                __name__,
                self.render,
                str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd="/",
                # Its own session: a terminal's ^C or hang-up is the daemon's to act on;
                # the worker ends with the daemon all the same (stdin EOF, PDEATHSIG).
                start_new_session=True,
            )
        except OSError as exc:
            raise ChartUnavailable(f"chart worker did not start: {exc}") from None
        self._proc, self._renders = proc, 0
        self.starts += 1
        self._spawn(self._drain_stderr(proc))
        log.debug("chart worker started", extra={"pid": proc.pid})
        return proc

    @staticmethod
    async def _exchange(proc: asyncio.subprocess.Process, frame: bytes) -> tuple[int, bytes]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(len(frame).to_bytes(8, "big") + frame)
        await proc.stdin.drain()
        head = await proc.stdout.readexactly(9)
        size = int.from_bytes(head[1:], "big")
        if size > MAX_PNG:
            raise ConnectionError(f"a reply of {size:,} bytes (at most {MAX_PNG:,})")
        return head[0], await proc.stdout.readexactly(size)

    def _retire(self, proc: asyncio.subprocess.Process, kill: bool) -> None:
        """Lets go of `proc`: EOF on its stdin ends it, or a kill."""
        if self._proc is proc:
            self._proc = None
        if proc.returncode is not None or proc in self._retired:
            return
        self._retired.add(proc)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        elif proc.stdin is not None:
            proc.stdin.close()
        self._spawn(self._reap(proc))

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        # What a dead worker left unread (a reply cut short: at most the pipe's buffer) is
        # read to EOF, or its paused pipe transport would stay open for ever; not while an
        # exchange still reads it (that exchange then sees the EOF itself).
        if proc.stdout is not None and self._busy_proc is not proc:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_GRACE):
                    while await proc.stdout.read(2**16):
                        pass

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        # Read on, or a chatty worker would block on a full pipe mid-chart. In chunks, not
        # readline(): a line over its 64 KiB limit raised and ended the reading.
        assert proc.stderr is not None
        rest = b""
        while chunk := await proc.stderr.read(2**16):
            *lines, rest = (rest + chunk).split(b"\n")
            rest = rest[-4096:]  # a line that never ends is kept bounded
            for line in lines:
                self._stderr_line(line)
        if rest:
            self._stderr_line(rest)

    def _stderr_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()[:500]
        if text:
            self._stderr.append(text)
            log.debug("chart worker: %s", text)

    def _last_words(self) -> str:
        return f": {self._stderr[-1]}" if self._stderr else ""

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _import_path() -> str:
    return os.pathsep.join(os.path.abspath(p) for p in sys.path if p)


def _recorded(exc: ChartUnavailable) -> ChartUnavailable:
    exc.recorded = True  # type: ignore[attr-defined]  # in health already: not twice
    return exc


def _retrieved(exchange: asyncio.Future[Any]) -> None:
    # An exchange whose caller gave up fails unobserved; it was recorded and logged.
    if not exchange.cancelled():
        exchange.exception()


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a daemon killed outright takes its worker with it mid-render
    # (at rest, the worker already ends on its stdin's EOF).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    render: Callable[[Any], Any] = getattr(importlib.import_module(module), name)
    return render


def main(argv: list[str]) -> int:
    """The worker: reads requests from stdin until EOF, draws, replies on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the daemon's to act on
    _die_with_parent()
    if len(argv) > 1 and os.getppid() != int(argv[1]):
        return 0  # the daemon died before the line above took effect
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Anything a library prints goes to stderr, never into the reply frames.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    render = _resolve(argv[0] if argv else DEFAULT_RENDER)
    while len(head := requests.read(8)) == 8:
        size = int.from_bytes(head, "big")
        if size > MAX_REQUEST:
            return 2
        body = requests.read(size)
        if len(body) < size:
            return 0
        try:
            out = render(pickle.loads(body))
            if not isinstance(out, bytes):
                raise TypeError(f"renderer returned {type(out).__name__}, not bytes")
            status = 0
        except Exception as exc:  # reported to the daemon, which sends the alert as text
            out, status = f"{type(exc).__name__}: {exc}".encode()[:2000], 1
        replies.write(bytes([status]) + len(out).to_bytes(8, "big") + out)
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
