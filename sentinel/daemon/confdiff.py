"""What a reload would change that an operator must hear about, and what it must not do
silently (pure: two configs in, notes and refusals out).

A SIGHUP that points Sentinel at another Prometheus, drops a source's credentials or
removes the API token is logged as such. Dropping the API token opens the gate and the
admin APIs to anyone, so a reload that would do it is refused unless the new file says
`server.allow_unauthenticated: true`: an emptied or half-written file must not do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from sentinel.config import Config, HTTPSourceConfig
from sentinel.errors import Problem


@dataclass
class ConfigChanges:
    notes: list[str] = field(default_factory=list)
    refusals: list[Problem] = field(default_factory=list)


def _has_token(config: Config) -> bool:
    token = config.server.api_token
    return token is not None and bool(token.get_secret_value())


def _auth_kinds(source: HTTPSourceConfig) -> set[str]:
    kinds = set()
    if source.bearer_token is not None and source.bearer_token.get_secret_value():
        kinds.add("bearer_token")
    if source.basic_auth is not None:
        kinds.add("basic_auth")
    if any(name.lower() == "authorization" for name in source.headers):
        kinds.add("Authorization header")
    return kinds


def shown_url(url: str) -> str:
    """A URL as it may be logged: no `user:password@`, no query string, no fragment
    (tokens travel there too)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    redacted = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + redacted


def _source_changes(
    name: str, old: HTTPSourceConfig | None, new: HTTPSourceConfig | None
) -> list[str]:
    if old is None:
        return [f"{name} added: {shown_url(new.url)}"] if new is not None else []
    if new is None:
        return [f"{name} removed (was {shown_url(old.url)})"]
    notes = []
    if old.url != new.url:
        notes.append(f"{name} url changed: {shown_url(old.url)} -> {shown_url(new.url)}")
    dropped = _auth_kinds(old) - _auth_kinds(new)
    if dropped:
        notes.append(f"{name} credentials removed: {', '.join(sorted(dropped))}")
    return notes


def compare(old: Config, new: Config, file: str) -> ConfigChanges:
    """Changes from the running `old` to the reloaded `new` config read from `file`."""
    changes = ConfigChanges()
    changes.notes += _source_changes("prometheus", old.prometheus, new.prometheus)
    changes.notes += _source_changes("loki", old.loki, new.loki)
    had, has = _has_token(old), _has_token(new)
    if had and not has:
        if new.server.allow_unauthenticated:
            changes.notes.append(
                "server.api_token removed: the gate and admin APIs are now open to anyone "
                "(server.allow_unauthenticated: true)"
            )
        else:
            changes.refusals.append(
                Problem(
                    file,
                    None,
                    "server.api_token",
                    "the running config has an API token and this one has none; refusing "
                    "to open the gate and admin APIs to anyone (set "
                    "server.allow_unauthenticated: true if that is meant)",
                )
            )
    elif not had and has:
        changes.notes.append("server.api_token set: the gate and admin APIs now need it")
    elif had and old.server.api_token != new.server.api_token:
        changes.notes.append("server.api_token changed")
    changes.notes += _state_changes(old, new)
    return changes


def _state_changes(old: Config, new: Config) -> list[str]:
    """The state store is opened once: a reload cannot move alert states, incidents and
    undelivered notifications to another one, so it says the change waits for a restart."""
    before, after = old.state, new.state
    if (before.backend, before.path, before.dsn) == (after.backend, after.path, after.dsn):
        return []
    where = before.path if before.backend == "sqlite" else "the postgres dsn"
    return [f"state store change needs a restart (still using {before.backend}: {where})"]
