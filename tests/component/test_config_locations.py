"""A problem inside a notifier names the field where it is written, not pydantic's
union tag: `notifiers.hook.timeout` at the timeout's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.errors import ConfigError

CONFIG = """\
prometheus: {url: "http://127.0.0.1:9"}
rules: []
notifiers:
  am:
    type: alertmanager
    urls: []
  hook:
    type: webhook
    url: "http://x/y"
    timeout: banana
"""


def test_notifier_problems_name_the_field_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = {(p.path, p.line) for p in caught.value.problems}
    assert ("notifiers.am.urls", 6) in found
    assert ("notifiers.hook.timeout", 10) in found


def test_rule_patterns_matching_nothing_point_at_the_rules_line(tmp_path: Path) -> None:
    """`sentinel check`, start and SIGHUP all report a `rules:` that matches no file at
    the config file and line where `rules` is written, with where patterns resolve."""
    from sentinel.rules.loader import load_rules_lenient

    path = tmp_path / "config.yaml"
    path.write_text('prometheus: {url: "http://127.0.0.1:9"}\n\nrules: ["nothing/*.yaml"]\n')
    _, problems = load_rules_lenient(load_config(path))
    assert [str(p) for p in problems] == [
        f"{path}:3: rules: no rule files match nothing/*.yaml (expected at least one rule "
        f"file; relative patterns resolve against {tmp_path})"
    ]
    # Without a `rules` key the default pattern is meant: the file, no line.
    path.write_text('prometheus: {url: "http://127.0.0.1:9"}\n')
    _, problems = load_rules_lenient(load_config(path))
    assert str(problems[0]).startswith(f"{path}: rules: no rule files match rules/*.yaml")
