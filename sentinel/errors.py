"""Every exception Sentinel raises, in one tree.

Branches are chosen by what the daemon does next::

    SentinelError
    ├── ConfigError              refuse the config (startup: exit; reload: keep the old one)
    │   └── RuleFileError        one or more precise problems in rule files
    ├── SourceError              SLO unknown this cycle (no_data); the gate applies its policy
    │   ├── SourceUnavailable    connection refused / DNS / 502, 503, 504 after retries
    │   ├── SourceTimeout        the request did not finish within its timeout
    │   ├── BadQuery             the backend rejected the query (HTTP 400/422), with its message
    │   └── BadResponse          the backend answered something we cannot interpret
    │       └── TooManySeries    more series in one answer than the source's `max_series`
    ├── NotifyError              the notification stays in the outbox and is retried
    │   ├── NotifyRetryable      429 / 5xx / timeout: retry later
    │   └── NotifyRejected       a permanent 4xx (invalid_auth, channel_not_found): surface it
    ├── StateStoreError          the state database (`state.path`) cannot be used
        ├── StateStoreUnusable   at start: corrupt, not a database, unreadable, too new: refuse
        │                        to start (exit 2), never replace the file
    │   ├── StateStoreWriteError a write failed (disk full, I/O error, PostgreSQL down): alert
    │   │                        changes stay in memory and are retried; health shows it
    │   └── StateStoreReadError  a shared store (PostgreSQL) cannot be read: not ready
    ├── InputError (ValueError)  refuse this one request or command; the daemon goes on
    │   ├── YAMLSyntaxError      a file that cannot be read or parsed (the loaders turn it into
    │   │                        a located ConfigError)
    │   ├── GateInputError       a gate request: 400 naming the parameter
    │   └── UsageError           a CLI argument or input file: exit 2 naming it
    ├── GateOverloaded           too many fresh gate evaluations: 429 + Retry-After, no verdict
    ├── GrafanaError             a dashboard push failed: shown in health, retried on the next
    │                            render
    └── ChartUnavailable         an alert's SLI chart cannot be drawn: logged, the text alert
                                 is sent regardless

Errors that never leave their module (evaluation's `Unusable`, the rule-test engines'
`PromQLError`/`LogQLError`) are turned into a `no_data` reason or a test failure there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SentinelError(Exception):
    """Base class of all Sentinel errors."""


@dataclass(frozen=True)
class Problem:
    """One precise validation problem: where it is and what is expected."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        file, path, message = (one_line(part) for part in (self.file, self.path, self.message))
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def one_line(text: str) -> str:
    """`text` with every unprintable character escaped (`\\n`, `\\x1b`, `\\u2028`).

    Paths and messages echo keys and values from the file: a key holding a newline must
    not forge a second problem line (in the terminal, the log or /health/detailed), nor an
    escape sequence reach the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(SentinelError):
    """The configuration or a rule file is invalid; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RuleFileError(ConfigError):
    """Problems found in rule files."""


class SourceError(SentinelError):
    """A metric or log backend could not answer a query."""

    kind = "error"

    def __init__(self, source: str, query: str, detail: str) -> None:
        self.source = source
        self.query = query
        self.detail = detail
        super().__init__(f"{source}: {detail} (query: {query})")


class SourceUnavailable(SourceError):
    kind = "unavailable"


class SourceTimeout(SourceError):
    kind = "timeout"


class BadQuery(SourceError):
    kind = "bad_query"


class BadResponse(SourceError):
    kind = "bad_response"


class TooManySeries(BadResponse):
    """Refused before (or while) parsing: `count` series, more than `limit`."""

    def __init__(self, source: str, query: str, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        detail = f"too many series ({count} > max_series {limit}); narrow the query or group_by"
        super().__init__(source, query, detail)


class NotifyError(SentinelError):
    """A notification could not be delivered."""

    def __init__(self, notifier: str, detail: str) -> None:
        self.notifier = notifier
        self.detail = detail
        super().__init__(f"{notifier}: {detail}")


class NotifyRetryable(NotifyError):
    def __init__(self, notifier: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(notifier, detail)
        self.retry_after = retry_after


class NotifyRejected(NotifyError):
    pass


class StateStoreError(SentinelError):
    """The state database cannot be used; the message names the file."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class StateStoreUnusable(StateStoreError):
    """The state database cannot be opened as it is. Sentinel refuses to start rather than
    replace it: it holds incidents, silences and undelivered notifications."""


class StateStoreWriteError(StateStoreError):
    """A write to the state database failed; carries the operation and SQLite's own error."""

    def __init__(self, path: str, operation: str, error: str) -> None:
        self.operation = operation
        self.error = error
        super().__init__(path, f"{operation} not saved: {error}")


class StateStoreReadError(StateStoreError):
    """A read from a shared state database (PostgreSQL) failed: it cannot be reached."""


class InputError(SentinelError, ValueError):
    """Input from a caller (a request, a command line, a file) is refused."""


class YAMLSyntaxError(InputError):
    """A file that cannot be read or parsed as bounded YAML; `problem` says where and why."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class GateInputError(InputError):
    """A request the gate refuses (400); `param` names what to fix."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


class UsageError(InputError):
    """A bad argument or input file; the message names it. Exit code 2."""


class GateOverloaded(SentinelError):
    """Too many fresh gate evaluations: answer 429 with `retry_after` seconds."""

    def __init__(self, retry_after: int, why: str) -> None:
        self.retry_after = retry_after
        super().__init__(why)


class GrafanaError(SentinelError):
    """Grafana refused or could not take a dashboard."""


class ChartUnavailable(SentinelError):
    """The chart could not be drawn (no data, source down, matplotlib missing or failing).
    Never leaves the notifier: the text alert is sent regardless."""
