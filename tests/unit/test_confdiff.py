"""What a reload would change that must be said, and what it must not do silently."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.config import Config
from sentinel.daemon.confdiff import compare


def config(**sections: Any) -> Config:
    return Config.model_validate({"prometheus": {"url": "http://prom:9090"}, **sections})


TOKEN = {"listen": "127.0.0.1:8080", "api_token": "s3cret"}


@pytest.mark.parametrize(
    ("old", "new", "notes"),
    [
        pytest.param(config(), config(), [], id="nothing changed says nothing"),
        pytest.param(
            config(prometheus={"url": "https://u:pw@prom-a/?token=abc"}),
            config(prometheus={"url": "https://prom-b"}),
            ["prometheus url changed: https://prom-a/?… -> https://prom-b"],
            id="a new url is shown without credentials or query string",
        ),
        pytest.param(
            config(prometheus={"url": "http://prom:9090", "bearer_token": "t"}),
            config(),
            ["prometheus credentials removed: bearer_token"],
            id="dropped source credentials are named",
        ),
        pytest.param(
            config(),
            config(loki={"url": "http://loki:3100"}),
            ["loki added: http://loki:3100"],
            id="an added source is named",
        ),
        pytest.param(
            config(loki={"url": "http://loki:3100"}),
            config(),
            ["loki removed (was http://loki:3100)"],
            id="a removed source is named",
        ),
        pytest.param(
            config(server=TOKEN),
            config(server={**TOKEN, "api_token": "other"}),
            ["server.api_token changed"],
            id="a new token is said without its value",
        ),
        pytest.param(
            config(server=TOKEN),
            config(server={"allow_unauthenticated": True}),
            [
                "server.api_token removed: the gate and admin APIs are now open to anyone "
                "(server.allow_unauthenticated: true)"
            ],
            id="dropping the token said explicitly is taken and said",
        ),
    ],
)
def test_reload_changes_an_operator_must_hear_about(
    old: Config, new: Config, notes: list[str]
) -> None:
    changes = compare(old, new, "config.yaml")
    assert changes.notes == notes
    assert changes.refusals == []


@pytest.mark.parametrize(
    "new",
    [
        pytest.param(config(), id="the token is simply gone"),
        pytest.param(config(server={**TOKEN, "api_token": ""}), id="the token is empty"),
    ],
)
def test_a_reload_that_would_drop_the_api_token_is_refused(new: Config) -> None:
    changes = compare(config(server=TOKEN), new, "config.yaml")
    [problem] = changes.refusals
    assert str(problem).startswith("config.yaml: server.api_token: the running config has")
    assert "server.allow_unauthenticated: true" in str(problem)
    assert "s3cret" not in str(problem)
