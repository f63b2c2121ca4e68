"""A reload that changes the state store says the change waits for a restart: the store
is opened once, with its alert states, incidents and undelivered notifications."""

from __future__ import annotations

from pydantic import SecretStr

from sentinel.config import Config, StateConfig
from sentinel.daemon.confdiff import compare


def test_a_reload_moving_the_state_store_is_noted_as_needing_a_restart() -> None:
    old = Config(state=StateConfig(path="a.db"))
    same = Config(state=StateConfig(path="a.db"))
    assert compare(old, same, "c.yaml").notes == []
    moved = Config(state=StateConfig(backend="postgres", dsn=SecretStr("postgresql://u:pw@h/d")))
    notes = compare(old, moved, "c.yaml").notes
    assert notes == ["state store change needs a restart (still using sqlite: a.db)"]
    assert "pw@" not in " ".join(compare(moved, old, "c.yaml").notes)
