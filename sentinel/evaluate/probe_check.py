"""Pure judging of a synthetic probe: (expectations, what the service answered) -> a run
that passed, or failed naming the assertion, e.g.
`answer_mode: expected "llm-summary", got "snippet-fallback"`.

A probe's run becomes an `SLOResult` (slo `probe-NAME`, kind `probe`, value 1 passed / 0
failed, reason the failing assertions) so it travels the path every SLO result does:
`/api/v1/slos`, the alert state machine and its notifications, the deploy gate. No I/O
and no clock here: the answer and the times arrive as arguments.

An unreachable or stalled service fails the probe (that is what the probe measures), unlike
an unreachable Prometheus, which leaves an SLO unknown (no_data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from sentinel import jsonenc
from sentinel.config import FieldExpect, ProbeConfig, ProbeExpect
from sentinel.evaluate.slo import SLOResult, Status, rfc3339
from sentinel.redact import redact_text
from sentinel.rules.model import SLO, AlertPolicy, GoodWhen, PromQLSLI, Severity
from sentinel.sources.exchange import Exchange
from sentinel.units import format_duration

KIND = "probe"
# Values quoted in a failure are cut here: the reason travels to Slack and gate answers.
MAX_QUOTE = 80


@dataclass(frozen=True)
class ProbeRun:
    """One run of one probe: started at `at` (Unix seconds), `duration` for the whole run
    (chat and readiness requests), `latency` of the chat request alone."""

    probe: str
    at: float
    duration: float
    success: bool
    failures: tuple[str, ...] = ()
    status: int | None = None  # the chat request's HTTP status
    latency: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "outcome": "pass" if self.success else "fail",
            "at": rfc3339(self.at),
            "duration_seconds": round(self.duration, 4),
            "latency_seconds": None if self.latency is None else round(self.latency, 4),
            "status_code": self.status,
            "failure": self.reason or None,
        }


def judge(
    probe: str,
    config: ProbeConfig,
    chat: Exchange,
    ready: Exchange | None,
    at: float,
    duration: float,
) -> ProbeRun:
    failures = check_answer(config.expect, chat)
    if ready is not None:
        failures += [f"ready: {text}" for text in check_ready(ready)]
    return ProbeRun(
        probe,
        at,
        duration,
        not failures,
        tuple(failures),
        chat.status,
        chat.elapsed if chat.error is None else None,
    )


def check_ready(ready: Exchange) -> list[str]:
    if ready.error is not None or ready.status is None:
        return [f"{ready.request}: {ready.error or 'no answer'}"]
    if ready.status != 200:
        return [f"{ready.request}: expected 200, got {ready.status}{_snippet(ready.body)}"]
    return []


def check_answer(expect: ProbeExpect, answer: Exchange) -> list[str]:
    """Every failing assertion of the chat answer. A transport failure or a wrong status is
    the only failure named: the body's fields of an error page would add only noise."""
    if answer.error is not None or answer.status is None:
        return [f"{answer.request}: {answer.error or 'no answer'}"]
    if answer.status != expect.status:
        return [f"status: expected {expect.status}, got {answer.status}{_snippet(answer.body)}"]
    failures = []
    if expect.max_latency is not None and answer.elapsed > expect.max_latency:
        failures.append(
            f"latency: expected at most {format_duration(expect.max_latency)}, "
            f"got {answer.elapsed:.3g}s"
        )
    if not expect.json_:
        return failures
    if answer.truncated:
        return [*failures, "body: too large to read as JSON"]
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return [*failures, f"body: expected JSON, got {_quote_text(answer.body)}"]
    for path, field_expect in expect.json_.items():
        failure = check_field(path, field_expect, document)
        if failure is not None:
            failures.append(failure)
    return failures


_MISSING = object()


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (`metadata.answer_mode`, `choices.0.text`), or _MISSING."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def check_field(path: str, expect: FieldExpect, document: Any) -> str | None:
    """The first failing assertion on one field, as `path: expected X, got Y`."""
    value = lookup(document, path)
    got = "no such field" if value is _MISSING else quote(value)
    if expect.has_equals and (value is _MISSING or not same(value, expect.equals)):
        return f"{path}: expected {quote(expect.equals)}, got {got}"
    if expect.in_ is not None and (
        value is _MISSING or not any(same(value, option) for option in expect.in_)
    ):
        return f"{path}: expected one of {quote(expect.in_)}, got {got}"
    if expect.non_empty and (value is _MISSING or _empty(value)):
        return f"{path}: expected non-empty, got {got}"
    if expect.matches is not None and (
        not isinstance(value, str) or re.search(expect.matches, value) is None
    ):
        return f"{path}: expected to match {quote(expect.matches)}, got {got}"
    return None


def same(value: Any, expected: Any) -> bool:
    """JSON equality: `true` is not `1`, while `1` is `1.0`."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(value, int | float) and isinstance(expected, int | float):
        return value == expected
    if type(value) is not type(expected):
        return False
    if isinstance(value, list):
        return len(value) == len(expected) and all(map(same, value, expected))
    if isinstance(value, dict):
        return value.keys() == expected.keys() and all(same(value[k], expected[k]) for k in value)
    return bool(value == expected)


def _empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, list | dict) and not value)


def quote(value: Any) -> str:
    """A JSON value as it would be written, cut to MAX_QUOTE characters, redacted."""
    return _cut(redact_text(jsonenc.dumps(value)))


def _quote_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return quote(text) if text else "an empty body"


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return f" (body: {_cut(redact_text(text))})" if text else ""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


# -- probes as SLOs ---------------------------------------------------------------------


def slo_name(probe: str) -> str:
    return f"probe-{probe}"


def probe_slo(probe: str, config: ProbeConfig) -> SLO:
    """The SLO a probe stands for, for the alert manager (routing, severity, `for`,
    runbook) and the gate. Its SLI, as Prometheus sees it scraping Sentinel's /metrics, is
    the success ratio of its runs; Sentinel itself judges each run (`probe_result`)."""
    return SLO(
        service=config.service,
        name=slo_name(probe),
        sli=PromQLSLI(f'avg_over_time(sentinel_probe_success{{probe="{probe}"}}[$window])'),
        threshold=1.0,
        window=config.interval,
        good_when=GoodWhen.ABOVE,
        description=config.description or f"synthetic probe {probe}: {request_line(config)}",
        severity=Severity(config.severity),
        gate=config.gate,
        runbook_url=config.runbook_url,
        notify=tuple(config.notify),
        alert=AlertPolicy(for_=config.for_),
        source_path=f"probes.{probe}",
    )


def request_line(config: ProbeConfig) -> str:
    return f"{config.method} {redact_text(_without_query(config.url))}"


def _without_query(url: str) -> str:
    base, mark, _ = url.partition("?")
    return base + ("?<redacted>" if mark else "")


def probe_result(probe: str, config: ProbeConfig, run: ProbeRun | None, at: float) -> SLOResult:
    """The latest run of a probe as an SLO result; no_data before its first run."""
    if run is None:
        status, value, reason = Status.NO_DATA, None, "the probe has not run yet"
        at_ = at
    elif run.success:
        status, value, at_ = Status.OK, 1.0, run.at
        reason = f"passed in {run.duration:.3g}s"
    else:
        status, value, reason, at_ = Status.BREACH, 0.0, run.reason, run.at
    return _result(probe, config, status, value, reason, at_)


def gate_result(
    probe: str, config: ProbeConfig, run: ProbeRun | None, since: float | None, now: float
) -> SLOResult:
    """What the gate judges for a deploy started at `since`: the latest run, if it started
    after the deploy did (a run before it probed the previous release); else no_data,
    which keeps the gate pending until the probe has run against the new release."""
    if run is not None and (since is None or run.at >= since):
        return probe_result(probe, config, run, now)
    every = format_duration(config.interval)
    reason = (
        f"no run since deploy yet (runs every {every})"
        if run is not None
        else f"the probe has not run yet (runs every {every})"
    )
    return _result(probe, config, Status.NO_DATA, None, reason, now)


def _result(
    probe: str,
    config: ProbeConfig,
    status: Status,
    value: float | None,
    reason: str,
    at: float,
) -> SLOResult:
    return SLOResult(
        service=config.service,
        slo=slo_name(probe),
        status=status,
        value=value,
        threshold=1.0,
        objective=None,
        window=config.interval,
        evaluated_at=at,
        reason=reason,
        query=request_line(config),
        kind=KIND,
        severity=config.severity,
        good_when="above",
    )
