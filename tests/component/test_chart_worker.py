"""The chart worker: Slack charts drawn in a process of their own, over real pipes.

The renderer is either the real one (matplotlib) or `support.chart_renders.scripted`,
which hangs, crashes, raises or prints on request, so each way a drawing can go wrong is
shown to end as `ChartUnavailable` (the alert then goes out as text) with the next chart
drawn by a fresh worker."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from sentinel.errors import ChartUnavailable
from sentinel.notify.chart import HEIGHT_PX, WIDTH_PX, ChartSpec
from sentinel.notify.chart_worker import ChartWorker

SCRIPTED = "support.chart_renders:scripted"
TESTS = Path(__file__).resolve().parents[1]


def spec(title: str) -> ChartSpec:
    return ChartSpec(title, "latency", 1.5, "below", (), 0.0, 60.0)


def gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        await asyncio.sleep(0.05)
    return gone(pid)


@pytest.fixture
async def worker() -> AsyncIterator[ChartWorker]:
    w = ChartWorker(timeout=10.0, render=SCRIPTED)
    yield w
    await w.close()


async def pid_of(worker: ChartWorker) -> int:
    return int(await worker(spec("pid")))


async def test_the_real_chart_is_drawn_in_another_process() -> None:
    w = ChartWorker()
    try:
        points = tuple((float(t), 1.0 + (t % 600) / 300) for t in range(0, 3600, 30))
        png = await w(ChartSpec("checkout / latency", "latency", 1.5, "below", points, 0, 3600))
        assert Image.open(io.BytesIO(png)).size == (WIDTH_PX, HEIGHT_PX)
        assert w.pid is not None and w.pid != os.getpid()
    finally:
        await w.close()


async def test_the_worker_gets_no_secret_from_the_daemons_environment(
    worker: ChartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-for-the-chart-worker")
    monkeypatch.setenv("SENTINEL_GATE_TOKEN", "gate-secret-not-for-it-either")
    env = json.loads(await worker(spec("env")))
    assert "PATH" in env
    assert not [k for k, v in env.items() if "not-for" in v or k.startswith(("SLACK", "SENTINEL"))]


async def test_a_render_that_raises_is_reported_and_the_same_worker_draws_the_next(
    worker: ChartWorker,
) -> None:
    first = await pid_of(worker)
    assert worker.health.status == "healthy"
    with pytest.raises(ChartUnavailable, match="ValueError: failed to allocate bitmap"):
        await worker(spec("raise"))
    # /health/detailed shows it, informational: the alerts still go out, as text.
    shown = worker.health_json()
    assert shown["status"] == "unhealthy" and shown["informational"] is True
    assert "failed to allocate bitmap" in shown["last_error"] and shown["pid"] == first
    with pytest.raises(ChartUnavailable, match="renderer returned str, not bytes"):
        await worker(spec("text"))
    assert await pid_of(worker) == first and worker.starts == 1


async def test_a_hung_render_is_killed_at_the_timeout_and_the_next_chart_is_drawn() -> None:
    w = ChartWorker(render=SCRIPTED)
    try:
        first = await pid_of(w)  # started (a loaded machine may take a second or two)
        w.timeout = 1.0
        started = time.monotonic()
        with pytest.raises(ChartUnavailable, match="drew nothing within 1 s"):
            await w(spec("hang"))
        assert time.monotonic() - started < 5
        assert await wait_gone(first)
        assert await pid_of(w) != first and w.starts == 2
    finally:
        await w.close()


async def test_a_worker_that_crashes_mid_chart_is_reported_and_replaced(
    worker: ChartWorker,
) -> None:
    first = await pid_of(worker)
    with pytest.raises(ChartUnavailable, match=r"exited \(code -11\)"):
        await worker(spec("segfault"))
    assert gone(first)
    assert await pid_of(worker) != first and worker.starts == 2


async def test_a_caller_that_gives_up_mid_chart_leaves_no_stale_reply_and_the_worker_alive(
    worker: ChartWorker,
) -> None:
    first = await pid_of(worker)
    slow = asyncio.ensure_future(worker(spec("slow:1.5")))
    await asyncio.sleep(0.3)
    slow.cancel()  # its caller's deadline (ChartMaker's), not the worker's
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The reply to the abandoned chart ("slow") must never answer this one, and a worker
    # drawing as it should is not killed for a caller's impatience.
    assert await worker(spec("next")) == b"next"
    assert await pid_of(worker) == first and worker.starts == 1


async def test_a_reply_too_large_for_a_chart_is_refused_unread_and_the_worker_replaced(
    worker: ChartWorker,
) -> None:
    first = await pid_of(worker)
    with pytest.raises(ChartUnavailable, match=r"killed: a reply of 17,825,792 bytes"):
        await worker(spec("huge"))
    assert await wait_gone(first)
    assert await pid_of(worker) != first


async def test_an_abandoned_chart_neither_retires_the_worker_under_the_next_nor_goes_unreported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = ChartWorker(idle_after=1.0, render=SCRIPTED)
    try:
        first = await pid_of(w)
        abandoned = asyncio.ensure_future(w(spec("slow:1.5")))
        await asyncio.sleep(0.3)
        abandoned.cancel()
        # The abandoned chart ends (and arms the idle timer) while this one waits; the
        # timer must not end the worker in the middle of this one.
        assert await w(spec("slow:1.5")) == b"slow"
        assert await pid_of(w) == first and w.starts == 1
        # An abandoned chart that then fails is recorded and logged all the same.
        w.timeout = 1.0
        hung = asyncio.ensure_future(w(spec("hang")))
        await asyncio.sleep(0.2)
        hung.cancel()
        assert await wait_gone(first)
        assert w.health.status == "unhealthy"
        assert "drew nothing within 1 s" in (w.health.last_error or "")
        assert "chart not drawn: chart worker drew nothing within 1 s" in caplog.text
    finally:
        await w.close()


async def test_close_lets_the_chart_being_drawn_finish(worker: ChartWorker) -> None:
    first = await pid_of(worker)
    drawing = asyncio.ensure_future(worker(spec("slow:1.0")))
    await asyncio.sleep(0.2)
    await worker.close()
    assert await drawing == b"slow"
    assert gone(first)


async def test_what_a_library_prints_does_not_corrupt_the_replies(worker: ChartWorker) -> None:
    assert await worker(spec("print")) == b"clean"
    assert await worker(spec("after")) == b"after"


async def test_an_idle_worker_ends_and_the_next_chart_starts_another() -> None:
    w = ChartWorker(idle_after=0.3, render=SCRIPTED)
    try:
        first = await pid_of(w)
        assert await wait_gone(first)  # memory goes back between incidents
        assert w.pid is None
        assert await pid_of(w) != first and w.starts == 2
    finally:
        await w.close()


async def test_a_worker_is_replaced_after_max_renders() -> None:
    w = ChartWorker(max_renders=2, render=SCRIPTED)
    try:
        pids = [await pid_of(w) for _ in range(3)]
        assert pids[0] == pids[1] != pids[2] and w.starts == 2
    finally:
        await w.close()


async def test_close_ends_the_worker_and_refuses_later_charts(worker: ChartWorker) -> None:
    first = await pid_of(worker)
    await worker.close()
    assert gone(first) and worker.pid is None
    with pytest.raises(ChartUnavailable, match="closed"):
        await worker(spec("pid"))
    assert worker.pid is None and worker.starts == 1


async def test_a_stderr_line_longer_than_any_buffer_does_not_stall_the_worker(
    worker: ChartWorker,
) -> None:
    assert await worker(spec("stderr:300000")) == b"ok"
    assert await worker(spec("stderr:300000")) == b"ok"
    assert worker.starts == 1


async def test_code_in_the_daemons_working_directory_is_never_run_by_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m` puts the working directory first on the path: a `sentinel` package
    # planted where the daemon runs (a writable state directory) must not be imported.
    planted = tmp_path / "sentinel" / "notify"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (tmp_path / "sentinel" / "__init__.py").write_text("")
    (planted / "__init__.py").write_text("")
    (planted / "chart_worker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    w = ChartWorker(render=SCRIPTED)
    try:
        assert int(await w(spec("pid"))) == w.pid
    finally:
        await w.close()
    assert not marker.exists()


async def test_a_worker_that_cannot_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    w = ChartWorker(render=SCRIPTED)
    with pytest.raises(ChartUnavailable, match="did not start"):
        await w(spec("pid"))
    assert w.health.status == "unhealthy" and "did not start" in (w.health.last_error or "")
    await w.close()


def test_a_daemon_killed_outright_takes_its_worker_with_it_mid_chart(tmp_path: Path) -> None:
    script = tmp_path / "daemon.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import asyncio, sys
            sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]
            from sentinel.notify.chart import ChartSpec
            from sentinel.notify.chart_worker import ChartWorker

            async def main():
                w = ChartWorker(timeout=600, render={SCRIPTED!r})
                task = asyncio.ensure_future(w(ChartSpec("hang", "latency", 1, "below", (), 0, 1)))
                while w.pid is None:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # the worker is inside the render
                print(w.pid, flush=True)
                await task

            asyncio.run(main())
            """
        )
    )
    daemon = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        pid = int(daemon.stdout.readline())
        assert not gone(pid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert asyncio.run(wait_gone(pid)), "the chart worker outlived the daemon"
    finally:
        daemon.kill()
        daemon.wait()
        if daemon.stdout is not None:
            daemon.stdout.close()
