"""`sentinel probe --once -c config.yaml`, a pipeline's post-deploy step: each probe's
outcome and failing assertion printed, exit codes like `sentinel gate` (0 pass, 1 fail,
2 usage or config error)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.cli.main import main
from support.chatserver import ChatServer


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, chat: ChatServer) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://127.0.0.1:9090"}}
            probes:
              chat:
                service: chatbot
                url: {chat.chat_url}
                ready_url: {chat.ready_url}
                timeout: 2s
                headers: {{Authorization: "Bearer ${{CHAT_TOKEN:-dev-token}}"}}
                body: {{message: "có được nghỉ thứ 7 không?"}}
                expect:
                  status: 200
                  json:
                    answer_mode: {{equals: llm-summary}}
                    provider_used: {{in: [spoon-policy, spoon-ops]}}
                    answer: {{non_empty: true}}
              ready-only:
                service: chatbot
                method: GET
                url: {chat.ready_url}
            """
        )
    )
    return path


def test_every_probe_passing_exits_0(
    config: Path, chat: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "--once", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "PASS chat (chatbot)" in out and "PASS ready-only (chatbot)" in out
    assert chat.requests[-1][0]["Authorization"] == "Bearer dev-token"


def test_a_failing_probe_exits_1_and_prints_the_failing_assertion(
    config: Path, chat: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    chat.mode = "fallback"
    assert main(["probe", "--once", "-c", str(config), "--probe", "chat"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL chat (chatbot)")
    assert '  - answer_mode: expected "llm-summary", got "snippet-fallback"\n' in out
    assert "ready-only" not in out  # --probe runs only the one named


def test_json_output_carries_each_outcome_for_a_pipeline(
    config: Path, chat: ChatServer, capsys: pytest.CaptureFixture[str]
) -> None:
    chat.mode = "unready"
    assert main(["probe", "--once", "-c", str(config), "--format", "json"]) == 1
    runs = {r["probe"]: r for r in json.loads(capsys.readouterr().out)}
    assert runs["chat"]["outcome"] == "fail" and runs["ready-only"]["outcome"] == "fail"
    assert runs["chat"]["failure"].startswith(f"ready: GET {chat.ready_url}: expected 200, got 503")
    assert runs["ready-only"]["failure"].startswith("status: expected 200, got 503")


def test_usage_and_config_errors_exit_2(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "-c", str(config)]) == 2  # --once is required
    assert main(["probe", "--once", "-c", str(config), "--probe", "nope"]) == 2
    assert "no probe named nope (probes: chat, ready-only)" in capsys.readouterr().err
    bare = tmp_path / "bare.yaml"
    bare.write_text('prometheus: {url: "http://127.0.0.1:9090"}\n')
    assert main(["probe", "--once", "-c", str(bare)]) == 2
    assert "no probes configured" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: []\nprobes: {chat: {service: chatbot, url: 'ftp://x'}}\n")
    assert main(["probe", "--once", "-c", str(broken)]) == 2
    assert f"{broken}:2: probes.chat.url: expected an http" in capsys.readouterr().err


def test_the_installed_command_exits_1_on_a_500_as_a_pipeline_sees_it(
    config: Path, chat: ChatServer
) -> None:
    chat.mode = "error"
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "probe", "--once", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert '  - status: expected 200, got 500 (body: {"error": "provider chain exhausted"})' in (
        done.stdout
    )
