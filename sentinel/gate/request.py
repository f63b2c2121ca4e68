"""The gate's inputs: query parameters (GET) or Flagger's webhook body (POST), checked and
turned into one `GateRequest` before anything is queried.

What a caller may change is explicit: the gate's own parameters (service, since, slo,
release, revision, decision_in) and the labels listed in `gate.request_labels`. A label
only narrows: its matcher is added beside the rule's own, and a value the rule already
excludes (`?env=staging` on a rule fixed to `env="prod"`) is refused with a 400 naming
the parameter, so no request can make the gate judge other traffic than the rule's.

Canary mode (`canary=version:v2&baseline=version:v1`, or `mode=canary` for the rule
file's defaults): each side is a comma-separated list of `label:value` equality matchers
on the labels of `gate.canary.labels`; they narrow like request labels do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.config import GATE_PARAMETERS
from sentinel.errors import GateInputError
from sentinel.evaluate.slo import rfc3339
from sentinel.query.promql import quote, selector_matchers
from sentinel.rules.model import LABEL_NAME, SLO, LogRatioSLI, Matcher, MatchOp
from sentinel.timeparse import FORMS, parse_time
from sentinel.units import format_duration

# `since` must lie in [2000-01-01, now + 5 min]: earlier is a bug in the caller's
# variable, and a few minutes ahead is clock skew between CI runners and Sentinel.
EARLIEST_SINCE = 946684800.0
FUTURE_SKEW = 300.0
MAX_VALUE_LENGTH = 1024
SINCE_RANGE = f"{FORMS}, from 2000-01-01 up to {format_duration(FUTURE_SKEW)} from now"


@dataclass(frozen=True)
class GateRequest:
    service: str
    matchers: tuple[Matcher, ...]
    since: float | None
    slos: tuple[str, ...]
    release: str | None = None
    revision: str | None = None
    # Argo Rollouts' web provider counts any non-2xx answer as an error, not a verdict:
    # with `decision_in=body` every decision is a 200 and the body carries it.
    decision_in_body: bool = False
    # Canary mode: the sides the request names (None: the rule file's default).
    canary_mode: bool = False
    canary: tuple[Matcher, ...] | None = None
    baseline: tuple[Matcher, ...] | None = None

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (
            self.service,
            self.matchers,
            self.since,
            self.slos,
            self.canary_mode,
            self.canary,
            self.baseline,
        )


def parse_query(
    query: Any, now: float, allowed: Sequence[str], canary_labels: Sequence[str] = ()
) -> GateRequest:
    """GET parameters (an aiohttp MultiDict: a parameter given twice is refused)."""
    if "token" in query:
        raise GateInputError("token", "send it as 'Authorization: Bearer <token>', not in the URL")
    return _build(list(query.items()), now, allowed, "", canary_labels)


def flagger_token(body: Any) -> str | None:
    """The token Flagger sends in `metadata.token` (its webhooks cannot set headers)."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    token = metadata.get("token") if isinstance(metadata, dict) else None
    return token if isinstance(token, str) else None


def parse_flagger(
    body: Any, now: float, allowed: Sequence[str], canary_labels: Sequence[str] = ()
) -> GateRequest:
    """Flagger's webhook payload `{name, namespace, phase, checksum?, metadata: {..}}`.

    The service is `metadata.service`, else the canary's `name`; every other metadata
    entry is read like the query parameter of the same name."""
    if not isinstance(body, dict):
        raise GateInputError("body", "expected Flagger's webhook payload {name, metadata}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise GateInputError("metadata", "expected an object of strings")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise GateInputError(f"metadata.{key}", "expected a string")
    if "decision_in" in metadata:
        # Flagger promotes on any 200: the verdict must stay in the status code.
        raise GateInputError("metadata.decision_in", "not accepted from Flagger")
    name = body.get("name")
    service = metadata.get("service") or (name if isinstance(name, str) else "")
    items = [("service", service)]
    items += [(k, v) for k, v in metadata.items() if k not in ("service", "token")]
    checksum = body.get("checksum")
    if "revision" not in metadata and isinstance(checksum, str) and checksum:
        items.append(("revision", checksum))  # identifies the canary's configuration
    return _build(items, now, allowed, "metadata.", canary_labels)


def _build(
    items: Iterable[tuple[str, str]],
    now: float,
    allowed: Sequence[str],
    prefix: str,
    canary_labels: Sequence[str] = (),
) -> GateRequest:
    params: dict[str, str] = {}
    for name, value in items:
        _refuse_unencodable(prefix + name, value)
        if name in params:
            raise GateInputError(prefix + name, "given more than once")
        params[name] = value
    service = params.pop("service", "").strip()
    if not service:
        raise GateInputError("service", "is required")
    since_text = params.pop("since", "")
    since = parse_since(since_text, now, prefix) if since_text else None
    slos = tuple(s.strip() for s in params.pop("slo", "").split(",") if s.strip())
    release, revision = params.pop("release", None), params.pop("revision", None)
    decision_in = params.pop("decision_in", "status")
    if decision_in not in ("status", "body"):
        raise GateInputError(prefix + "decision_in", "expected 'status' (default) or 'body'")
    mode, canary_text, baseline_text = (params.pop(k, None) for k in ("mode", "canary", "baseline"))
    if mode not in (None, "canary", "absolute"):
        raise GateInputError(prefix + "mode", "expected 'canary' or 'absolute' (default)")
    sides_given = canary_text is not None or baseline_text is not None
    if mode == "absolute" and sides_given:
        raise GateInputError(prefix + "mode", "canary/baseline need mode=canary (or no mode)")
    canary = _side(prefix + "canary", canary_text, canary_labels)
    baseline = _side(prefix + "baseline", baseline_text, canary_labels)
    if canary is not None and canary == baseline:
        raise GateInputError(prefix + "baseline", "selects the same series as canary")
    matchers = [_label(prefix + name, name, value, allowed) for name, value in params.items()]
    for param, text in (("release", release), ("revision", revision)):
        if text is not None and len(text) > MAX_VALUE_LENGTH:
            raise GateInputError(prefix + param, f"longer than {MAX_VALUE_LENGTH} characters")
    return GateRequest(
        service,
        tuple(sorted(matchers, key=lambda m: m.label)),
        since,
        slos,
        release,
        revision,
        decision_in == "body",
        mode == "canary" or sides_given,
        canary,
        baseline,
    )


def _refuse_unencodable(param: str, value: str) -> None:
    """A lone surrogate (JSON's "\\ud800" in a Flagger body) is no character: it cannot
    be sent to Prometheus, stored in the audit or even echoed in a JSON error."""
    for text in (param, value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            shown = param.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            raise GateInputError(shown, "not valid Unicode (a lone surrogate)") from None


def _side(param: str, text: str | None, allowed: Sequence[str]) -> tuple[Matcher, ...] | None:
    """`version:v2` or `track:canary,version:v2` -> equality matchers, sorted."""
    if text is None:
        return None
    out: dict[str, Matcher] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition(":")
        if not sep:
            raise GateInputError(param, f"expected label:value[,label:value], got {item!r:.80}")
        if not LABEL_NAME.match(name):
            raise GateInputError(param, f"{name!r:.80} is not a valid label name")
        if name not in allowed:
            labels = ", ".join(allowed) or "none"
            raise GateInputError(param, f"label {name!r} is not in gate.canary.labels ({labels})")
        if name in out:
            raise GateInputError(param, f"label {name!r} given more than once")
        if not value:
            raise GateInputError(param, f"{name}: the value must not be empty")
        if len(value) > MAX_VALUE_LENGTH:
            raise GateInputError(param, f"{name}: longer than {MAX_VALUE_LENGTH} characters")
        out[name] = Matcher(name, MatchOp.EQ, value)
    return tuple(sorted(out.values(), key=lambda m: m.label))


def _label(param: str, name: str, value: str, allowed: Sequence[str]) -> Matcher:
    if not LABEL_NAME.match(name):
        raise GateInputError(param, "not a valid label name")
    if name not in allowed:
        own = ", ".join(sorted(GATE_PARAMETERS - {"token"}))
        labels = ", ".join(allowed) or "none"
        raise GateInputError(
            param,
            f"not a parameter the gate accepts; allowed: {own}, and the labels of "
            f"gate.request_labels ({labels})",
        )
    if not value:
        raise GateInputError(param, "must not be empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise GateInputError(param, f"longer than {MAX_VALUE_LENGTH} characters")
    return Matcher(name, MatchOp.EQ, value)


def parse_since(text: str, now: float, prefix: str = "") -> float:
    """The deploy start, refused unless it is a plausible one (see SINCE_RANGE)."""
    param = prefix + "since"
    try:
        since = parse_time(text)
    except ValueError:
        raise GateInputError(param, f"expected {SINCE_RANGE}; got {text[:64]!r}") from None
    if since < EARLIEST_SINCE:
        raise GateInputError(param, f"{rfc3339(since)} is before 2000-01-01 ({SINCE_RANGE})")
    if since > now + FUTURE_SKEW:
        raise GateInputError(
            param, f"{rfc3339(since)} is more than {format_duration(FUTURE_SKEW)} in the future"
        )
    return since


def check_narrowing(slos: Sequence[SLO], matchers: Sequence[Matcher]) -> None:
    """Refuse a request label whose value a rule's own matcher on that label excludes."""
    if not matchers:
        return
    for slo in slos:
        for rule in _rule_selectors(slo):
            for own in rule:
                for m in matchers:
                    if own.label == m.label and not _admits(own, m.value):
                        raise GateInputError(
                            m.label,
                            f"SLO {slo.name} already selects "
                            f"{own.label}{own.op.value}{quote(own.value)}; a request can "
                            "only narrow what a rule measures",
                        )


def _rule_selectors(slo: SLO) -> list[list[Matcher]]:
    if isinstance(slo.sli, LogRatioSLI):
        return [stream_matchers(slo.sli.selector)]
    return selector_matchers(slo) or []


_STREAM_MATCHER = re.compile(
    r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|`[^`]*`)\s*,?'
)


def stream_matchers(selector: str) -> list[Matcher]:
    """The label matchers of a LogQL stream selector `{app="x", env=~"prod|eu"}`."""
    inner = selector.strip().removeprefix("{").removesuffix("}")
    out = []
    for match in _STREAM_MATCHER.finditer(inner):
        label, op, literal = match.groups()
        if literal.startswith("`"):
            value = literal[1:-1]
        else:
            try:
                value = json.loads(literal)
            except ValueError:
                value = literal[1:-1]
        out.append(Matcher(label, MatchOp(op), value))
    return out


def _admits(own: Matcher, value: str) -> bool:
    if own.op is MatchOp.EQ:
        return value == own.value
    if own.op is MatchOp.NE:
        return value != own.value
    try:
        # Prometheus and Loki anchor regex matchers; RE2 and Python agree on the common
        # subset. A pattern Python cannot read is left to the query (it still narrows).
        matched = re.fullmatch(own.value, value) is not None
    except re.error:
        return True
    return matched if own.op is MatchOp.RE else not matched


def audit_inputs(req: GateRequest) -> Mapping[str, Any]:
    return {
        "service": req.service,
        "since": req.since,
        "slos": list(req.slos),
        "matchers": {m.label: m.value for m in req.matchers},
        "release": req.release,
        "revision": req.revision,
        **(
            {
                "mode": "canary",
                "canary": None if req.canary is None else {m.label: m.value for m in req.canary},
                "baseline": (
                    None if req.baseline is None else {m.label: m.value for m in req.baseline}
                ),
            }
            if req.canary_mode
            else {}
        ),
    }
