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
