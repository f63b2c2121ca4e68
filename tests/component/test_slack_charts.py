"""Charts of the SLI in the Slack thread of an incident: real Prometheus (the backfilled
scenario's latency breach, minutes 60-90), the real assembly, outbox and Slack notifier,
and the protocol-faithful Slack server's three-step file upload."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from sentinel.config import PrometheusConfig, load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.notify.chart import HEIGHT_PX, THRESHOLD_COLOUR, WIDTH_PX, ChartSpec, in_thread
from sentinel.notify.chart_worker import ChartWorker
from sentinel.notify.slack import SlackNotifier
from sentinel.rules.loader import load_rules
from sentinel.sources.prometheus import PrometheusSource
from support.fakeslack import CHANNEL, TOKEN, Failure, FakeSlack, Message
from support.promserver import PrometheusServer
from support.scenario import at

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend, env: prod}
slos:
  - name: chat-latency-p95
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    alert: {for: 2m, keep_firing_for: 2m}
"""


class Clock:
    def __init__(self) -> None:
        self.now = at(0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
async def assembly(
    tmp_path: Path, prometheus: PrometheusServer, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Assembly, Clock]]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prometheus.url}"}}
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            notifiers:
              oncall:
                type: slack
                token: ${{TEST_SLACK_TOKEN}}
                channel: {CHANNEL}
                base_url: {slack.url}/api/
            """
        )
    )
    config = load_config(tmp_path / "config.yaml")
    clock = Clock()
    built = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), clock)
    yield built, clock
    await built.cleanup()
    await built.daemon.stop()


def notifier(built: Assembly) -> SlackNotifier:
    found = built.dispatcher.notifiers["oncall"]
    assert isinstance(found, SlackNotifier)
    return found


async def replay(built: Assembly, clock: Clock, minutes: range, charts: bool = True) -> None:
    for minute in minutes:
        clock.now = at(minute)
        await built.daemon.run_group("chatbot", clock.now)
        await built.dispatcher.deliver_due()
        if charts:
            await notifier(built).charts_done()


def threshold_pixels(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    red = tuple(int(THRESHOLD_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    pixels = image.load()
    assert pixels is not None
    return sum(
        1
        for x in range(0, image.size[0])
        for y in range(image.size[1])
        if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], red, strict=True))  # type: ignore[arg-type]
    )


def only_root(slack: FakeSlack) -> Message:
    (root,) = slack.roots()
    return root


async def test_a_breach_gets_one_chart_in_its_thread_at_firing_and_another_at_resolve(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    built, clock = assembly
    await replay(built, clock, range(55, 70))
    root = only_root(slack)
    assert root.text.startswith("🔴 FIRING")
    # Drawn by the daemon's chart worker, a process of its own (matplotlib stays out).
    charts = notifier(built).charts
    assert charts is not None and isinstance(charts.render, ChartWorker)
    assert charts.render.pid not in (None, os.getpid()) and charts.render.starts == 1
    worker = built.daemon.extra_health()["chart_worker"]
    assert worker["status"] == "healthy" and worker["informational"] is True
    (fired,) = slack.thread_files(root)
    assert fired.filename == "chat-latency-p95-firing.png"
    assert fired.data is not None and fired.length == len(fired.data) <= 150 * 1024
    image = Image.open(io.BytesIO(fired.data))
    assert image.format == "PNG" and image.size == (WIDTH_PX, HEIGHT_PX)
    assert threshold_pixels(fired.data) > 300  # the 1.5 s line is drawn: data, not blank
    # Kept for people to look at, like the UI tests' screenshots.
    out = Path(__file__).resolve().parents[2] / "build" / "charts"
    out.mkdir(parents=True, exist_ok=True)
    (out / fired.filename).write_bytes(fired.data)
    methods = [m for m, _ in slack.calls]
    assert methods.index("files.getUploadURLExternal") < methods.index("upload")
    assert methods.index("upload") < methods.index("files.completeUploadExternal")

    await replay(built, clock, range(70, 100))
    root = only_root(slack)
    assert root.updates == 1 and "RESOLVED" in root.text
    first, second = slack.thread_files(root)
    assert first is fired and second.filename == "chat-latency-p95-resolved.png"
    assert second.data is not None and second.data != fired.data
    assert len(slack.replies(root)) == 1  # the resolve reply; charts are files, not replies


async def test_a_reload_right_after_the_post_still_uploads_its_chart(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    """The chart is uploaded after the message is posted; a reload then (it rebuilds
    the notifiers) closes the old Slack notifier only once the upload is done. Closed at
    once, as before, the upload was cancelled and the thread got no chart."""
    built, clock = assembly
    await replay(built, clock, range(55, 70), charts=False)
    old = notifier(built)
    assert await built.daemon.reload()
    assert notifier(built) is not old
    root = only_root(slack)
    for _ in range(1000):
        if slack.thread_files(root):
            break
        await asyncio.sleep(0.02)
    (fired,) = slack.thread_files(root)
    assert fired.filename == "chat-latency-p95-firing.png" and fired.data


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_prometheus_down_for_the_chart_the_text_alert_is_delivered_without_it(
    assembly: tuple[Assembly, Clock], slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    built, clock = assembly
    charts = notifier(built).charts
    assert charts is not None
    down = PrometheusSource(PrometheusConfig(url=f"http://127.0.0.1:{closed_port()}"))
    charts.fetch = lambda source, expr, start, end, step: down.range(expr, start, end, step)
    await replay(built, clock, range(55, 70), charts=False)
    # The message went out in the cycle that fired, before any chart work finished.
    root = only_root(slack)
    assert root.text.startswith("🔴 FIRING")
    await notifier(built).charts_done()
    assert slack.thread_files(root) == []
    assert "no chart for chatbot-backend/chat-latency-p95" in caplog.text
    await down.close()


async def test_a_failing_render_or_upload_never_keeps_the_alert_from_being_delivered(
    assembly: tuple[Assembly, Clock], slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    built, clock = assembly
    charts = notifier(built).charts
    assert charts is not None

    def broken(spec: ChartSpec) -> bytes:
        raise RuntimeError("matplotlib: failed to allocate bitmap")

    worker = charts.render
    charts.render = in_thread(broken)
    await replay(built, clock, range(55, 70))
    root = only_root(slack)
    assert slack.thread_files(root) == []
    assert "failed to allocate bitmap" in caplog.text

    # Slack's file service answers 500 at resolve, also to slack-sdk's two retries: the
    # resolve still lands, and the outbox holds nothing dead or pending.
    charts.render = worker
    slack.fail_next("upload", *[Failure(status=500)] * 3)
    await replay(built, clock, range(70, 100))
    root = only_root(slack)
    assert "RESOLVED" in root.text and len(slack.replies(root)) == 1
    assert slack.thread_files(root) == []
    assert "not uploaded to Slack" in caplog.text
    assert built.daemon.extra_health()["state_store"]["outbox"].get("dead", 0) == 0


async def test_charts_false_posts_text_only(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    built, clock = assembly
    notifier(built).charts = None  # what `charts: false` in the notifier's config does
    await replay(built, clock, range(55, 70))
    assert slack.thread_files(only_root(slack)) == []
    assert not any(m.startswith("files.") for m, _ in slack.calls)
