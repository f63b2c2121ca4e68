"""A reload reads and checks its files off the event loop: health checks and the gate are
answered meanwhile (reading 1,300 SLOs takes ~2 s of CPU; on the loop it froze both)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import REPO
from sentinel.daemon import runner
from sentinel.daemon.runstate import RunState
from support.gatestack import GateClient, running_gate
from support.held import Held


async def reload_answering_health(client: GateClient, held: Held) -> None:
    """A reload during which `held` is held: a health check is answered meanwhile."""
    reload = asyncio.ensure_future(client.built.daemon.reload())
    await held.wait_started()
    status, _, _ = await client.get("/health/live")
    held.release()
    assert status == 200
    assert await reload is True
    assert held.released == [True], "the reload held the event loop"


async def test_health_is_answered_while_a_reload_reads_its_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        # Stands in for a rule set that takes seconds to read.
        held = Held(runner.load_rules)
        monkeypatch.setattr(runner, "load_rules", held)
        await reload_answering_health(client, held)
        assert client.built.daemon.reload_status.status == "ok"


async def test_a_reload_that_fails_in_its_thread_keeps_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        daemon = client.built.daemon
        before = daemon.rules.fingerprint
        (tmp_path / "rules" / "chatbot.yaml").write_text("version: sentinel/v1\nslos: [\n")
        assert await daemon.reload() is False
        assert daemon.reload_status.status == "failed"
        assert "chatbot.yaml" in daemon.reload_status.errors[0]
        assert daemon.rules.fingerprint == before
        status, _, _ = await client.get("/health/live")
        assert status == 200


async def test_a_stop_that_arrives_while_a_reload_reads_its_files_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGHUP (a config rollout) then SIGTERM (the pod restarts) within the seconds a large
    # rule set takes to read: the reload must not build sources, swap notifiers or
    # schedule jobs after the stop has closed them.
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        daemon = client.built.daemon
        config, sources = daemon.config, dict(daemon.engine.sources)
        path = tmp_path / "config.yaml"
        path.write_text(path.read_text().replace("127.0.0.1:9", "127.0.0.1:10"))
        held = Held(runner.load_rules)
        monkeypatch.setattr(runner, "load_rules", held)
        reload = asyncio.ensure_future(daemon.reload())
        await held.wait_started()
        stop = asyncio.ensure_future(daemon.stop())
        await asyncio.sleep(0.05)  # the stop has begun: it waits for the reload
        held.release()
        assert await reload is False
        await stop
        assert daemon.state is RunState.STOPPED
        assert daemon.config is config and daemon.engine.sources == sources


async def test_health_is_answered_while_dashboards_are_rendered_at_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.outputs import dashboards

    extra = f"dashboards: {{output: out, templates: {REPO / 'dashboards'}}}\n"
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch, extra) as client:
        held = Held(dashboards.render_all)
        monkeypatch.setattr(dashboards, "render_all", held)
        await reload_answering_health(client, held)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
            "sentinel-chatbot-backend.json",
            "sentinel-overview.json",
        ]
