"""The `probes:` section of the config: the README's example loads as written, mistakes
are located problems naming the key, and credential headers are held as secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from conftest import REPO
from sentinel.config import load_config
from sentinel.errors import ConfigError

README = (REPO / "README.md").read_text()
(PROBES_EXAMPLE,) = [
    b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if b.startswith("probes:")
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_readme_probe_example_is_a_valid_config(tmp_path: Path) -> None:
    text = "rules: []\nnotifiers: {oncall: {type: log}}\n" + PROBES_EXAMPLE
    config = load_config(write(tmp_path, text), env={"CHAT_PROBE_TOKEN": "t0ken-from-env"})
    chat = config.probes["chat"]
    assert (chat.service, chat.interval, chat.timeout, chat.for_) == (
        "chatbot-backend",
        60.0,
        10.0,
        0.0,
    )
    assert isinstance(chat.headers["Authorization"], SecretStr)
    assert chat.header_values() == {"Authorization": "Bearer t0ken-from-env"}
    assert set(chat.expect.json_) == {"answer_mode", "provider_used", "answer"}


def test_probe_mistakes_are_located_problems_naming_the_key(tmp_path: Path) -> None:
    text = """\
rules: []
probes:
  chat:
    service: chatbot
    url: http://chat.local/api/chat
    notify: [pager]
    headers: {X-Api-Key: 12345}
    expect:
      json:
        answer_mode: {equal: llm-summary}
        answer: {}
  "bad name":
    service: x
    url: http://chat.local/
    method: GET
    body: {a: 1}
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    problems = [str(p).removeprefix(f"{tmp_path / 'config.yaml'}:") for p in caught.value.problems]
    assert problems == [
        "7: probes.chat.headers.X-Api-Key: expected a string (quote it)",
        "10: probes.chat.expect.json.answer_mode.equal: unknown key (check the spelling; see "
        "the rule-file reference in README.md)",
        "11: probes.chat.expect.json.answer: give at least one of equals, in, non_empty, matches",
        "12: probes.bad name: probe name 'bad name': letters, digits, '_', '.', '-' (it names "
        "the SLO probe-NAME) (got 'bad name')",
        "16: probes.bad name.body: a GET probe sends no body (use method: POST)",
    ]
    # The header's value is never echoed: it may be a key typed without quotes.
    assert "12345" not in str(caught.value)


def test_a_probe_may_only_notify_configured_notifiers(tmp_path: Path) -> None:
    text = """\
rules: []
notifiers: {oncall: {type: log}}
probes:
  chat:
    service: chatbot
    url: http://chat.local/api/chat
    notify: [oncall, pager]
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    (problem,) = caught.value.problems
    assert str(problem).endswith(
        ":7: probes.chat.notify[1]: unknown notifier 'pager' (known: oncall)"
    )
