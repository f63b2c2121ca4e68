"""Daemon configuration: typed, validated, with `${ENV_VAR}` interpolation for secrets.

Unknown keys are errors. Secrets are held as `SecretStr`, so they never show in reprs,
logs or `/health/detailed`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sentinel.errors import ConfigError, Problem, YAMLSyntaxError
from sentinel.redact import remember_secrets
from sentinel.units import format_duration, parse_duration
from sentinel.yamlsource import pydantic_problems, read_yaml_file

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _within(low: float, high: float, *, above: bool = False) -> AfterValidator:
    """Bounds for a duration field, named in the message. Without them `interval: 0s`
    evaluated every second and `timeout: 1000000000d` overflowed the scheduler."""

    def check(seconds: float) -> float:
        if seconds < low or seconds > high or (above and seconds == low):
            floor = (
                f"more than {format_duration(low)}" if above else f"at least {format_duration(low)}"
            )
            raise ValueError(f"must be {floor} and at most {format_duration(high)}")
        return seconds

    return AfterValidator(check)


def _http_url(value: str) -> str:
    """Refused at load, a URL aiohttp cannot use would fail every request later with an
    error quoting it (and any token in it) into the log."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # a non-numeric port raises here
    except ValueError:
        raise ValueError("expected an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host, like https://host/path")
    return value


def _secret_http_url(value: SecretStr) -> SecretStr:
    _http_url(value.get_secret_value())
    return value


def _no_credentials(value: str) -> str:
    if urlsplit(value).username is not None:
        # aiohttp refuses credentials in the URL next to the bot token's Authorization.
        raise ValueError("must not contain user:password@ (the bot token authenticates)")
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# A request timeout: above zero (0s would fail every request), at most 10 minutes.
Timeout = Annotated[Duration, _within(0, 10 * MINUTE, above=True)]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Strict):
    username: str
    password: SecretStr


class HTTPSourceConfig(_Strict):
    url: HttpURL
    timeout: Timeout = 10.0
    max_in_flight: int = Field(4, ge=1, le=64)
    retries: int = Field(2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: SecretStr | None = None
    basic_auth: BasicAuth | None = None
    # Series one answer may hold; beyond it the query fails as a bad response and its SLO
    # is no_data ("too many series"), instead of a cycle parsing 10^5 series (seconds,
    # hundreds of MB). Ratio and latency SLIs return two series per instance.
    max_series: int = Field(10_000, ge=1, le=10_000_000)


class PrometheusConfig(HTTPSourceConfig):
    url: HttpURL = "http://127.0.0.1:9090"


class LokiConfig(HTTPSourceConfig):
    tenant: str | None = None


class EvaluationConfig(_Strict):
    interval: Annotated[Duration, _within(1, DAY)] = 30.0
    # A cycle must finish before the next one is due; overruns are reported, never stacked.
    cycle_timeout: Annotated[Duration, _within(0, DAY, above=True)] | None = None
    shutdown_timeout: Annotated[Duration, _within(0, HOUR)] = 10.0
    # Where budget and burn-rate windows come from: raw queries, or the series recorded
    # by the rules `sentinel rules export` writes (cheap at any scale; no min_events guard).
    budget_source: Literal["raw", "recorded"] = "raw"
    # `auto`: a budget or burn-rate window's answer is reused for up to 1/720 of the
    # window (the 30-day budget is asked hourly, not every cycle: a month of raw samples
    # per SLO); `every_cycle` asks every window every cycle.
    long_window_refresh: Literal["auto", "every_cycle"] = "auto"
    # A `group_by` instance absent from its SLO's answers this long (a deleted pod, a
    # retired service) whose alerts are quiet is forgotten: no more no_data results, its
    # alert-state rows deleted. Firing or pending ones are kept (their no-data policy
    # decides). null: never forget (the instance is no_data until a restart).
    forget_after: Annotated[Duration, _within(5 * MINUTE, 365 * DAY)] | None = HOUR


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:8080"
    api_token: SecretStr | None = None
    # A SIGHUP that would drop a running api_token (opening the gate and admin APIs) is
    # refused unless the new file says so with this.
    allow_unauthenticated: bool = False
    # Rows per page of the status UI's overview, worst first. 10,000 services x 3 SLOs
    # made one page of 30,000 rows: 6.7 MB of HTML a browser takes seconds to lay out.
    ui_page_rows: int = Field(500, ge=1, le=10_000)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)


class StateConfig(_Strict):
    # sqlite: one file (`path`), one replica. postgres: a database (`dsn`) shared by two or
    # more replicas, which elect a leader (README "High availability").
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "sentinel-state.db"
    # postgresql://user:password@host:5432/db (or key=value form); a secret: put it in the
    # environment, `dsn: ${SENTINEL_DB}`. Never logged or shown (the host and database are).
    dsn: SecretStr | None = None
    # Each call to PostgreSQL fails after these (the cycle's changes are then held in
    # memory and committed later), instead of hanging the daemon.
    connect_timeout: Annotated[Duration, _within(0.5, MINUTE)] = 3.0
    statement_timeout: Annotated[Duration, _within(0.5, MINUTE)] = 5.0
    # Delivered and dead notifications, resolved incidents and ended silences older than
    # this are deleted (in small batches, by the daemon), so the database stays bounded.
    # At least an hour; the default keeps the status UI's longest range (30d) complete.
    retention: Annotated[Duration, _within(HOUR, 3650 * DAY)] = 30 * DAY

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StateConfig:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs `dsn` (e.g. dsn: ${SENTINEL_DB})")
        return self


class SlackNotifierConfig(_Strict):
    type: Literal["slack"]
    token: SecretStr | None = None
    webhook_url: Annotated[SecretStr, AfterValidator(_secret_http_url)] | None = None
    channel: str | None = None
    base_url: Annotated[HttpURL, AfterValidator(_no_credentials)] = "https://slack.com/api/"
    min_severity: Literal["info", "ticket", "page"] = "info"
    # A PNG of the SLI in the incident's thread at firing and resolve (bot token only;
    # needs the `charts` extra, else text only).
    charts: bool = True
    # The Slack app's signing secret (`${SLACK_SIGNING_SECRET}`): verifies the button
    # clicks Slack posts to /slack/interactions; without it that endpoint refuses them.
    signing_secret: SecretStr | None = None
    # Which alerts that change the same way in one evaluation share one message: those of
    # one service (`service`), or those of one SLO name across every service (`slo`: a
    # platform-wide breach of 1,000 services is one message, not 1,000 posted at Slack's
    # one message a second per channel, the last ~17 min late).
    group_by: Literal["service", "slo"] = "service"


class WebhookNotifierConfig(_Strict):
    type: Literal["webhook"]
    url: HttpURL
    secret: SecretStr | None = None
    timeout: Timeout = 10.0
    max_attempts: int = Field(5, ge=1, le=20)
    cooldown: Annotated[Duration, _within(0, 30 * DAY)] = 1800.0
    min_events: float = 0.0
    dry_run: bool = False
    body_template: str | None = None
    min_severity: Literal["info", "ticket", "page"] = "page"


class LogNotifierConfig(_Strict):
    type: Literal["log"]
    min_severity: Literal["info", "ticket", "page"] = "info"


class AlertmanagerNotifierConfig(_Strict):
    """Alerts pushed to Prometheus Alertmanager's v2 API, to every URL listed (the members
    of one Alertmanager cluster), re-sent every evaluation while firing."""

    type: Literal["alertmanager"]
    urls: list[HttpURL] = Field(min_length=1)
    timeout: Timeout = 10.0
    # Where Sentinel is reachable by people reading the alert (generatorURL); default:
    # http://<hostname>:<listen port>.
    external_url: HttpURL | None = None
    min_severity: Literal["info", "ticket", "page"] = "info"
    # A firing alert's endsAt is at least this far ahead (and four evaluation intervals
    # at least): how long Alertmanager keeps it without hearing from Sentinel (a restart,
    # a rescheduled pod) before ending it by itself. Prometheus: 4 x its 1m resend delay.
    hold_at_least: Annotated[Duration, _within(0, DAY)] = 4 * MINUTE


NotifierConfig = Annotated[
    SlackNotifierConfig | WebhookNotifierConfig | LogNotifierConfig | AlertmanagerNotifierConfig,
    Field(discriminator="type"),
]


# The gate's own request parameters (sentinel/gate_request.py): never label matchers.
GATE_PARAMETERS = frozenset(
    {
        "service",
        "since",
        "slo",
        "release",
        "revision",
        "token",
        "decision_in",
        # canary mode: `canary=version:v2&baseline=version:v1`, or `mode=canary`
        "canary",
        "baseline",
        "mode",
    }
)


def _request_label(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value):
        raise ValueError(f"expected a label name, got {value!r}")
    if value in GATE_PARAMETERS:
        raise ValueError(f"{value!r} is a gate parameter, not a label")
    return value


class CanaryGateConfig(_Strict):
    """The deploy gate's canary mode (README "Deploy gate", canary mode)."""

    # Label names a request may use in `canary=` / `baseline=` (kept apart from
    # request_labels: the labels that tell releases apart are not the ones a caller
    # narrows the absolute gate with).
    labels: list[Annotated[str, BeforeValidator(_request_label)]] = Field(
        default_factory=lambda: ["track", "version", "rollouts_pod_template_hash"]
    )
    # One-sided significance per SLO; before the comparison reaches `power`, a fail
    # needs early_alpha (a pipeline polls many times).
    alpha: float = Field(0.01, gt=0, lt=0.5)
    early_alpha: float = Field(0.001, gt=0, lt=0.5)
    power: float = Field(0.95, gt=0, lt=1)
    pass_score: float = Field(95.0, ge=0, le=100)
    marginal_score: float = Field(75.0, ge=0, le=100)
    # The comparison spans [since, now], at most this long (query cost).
    max_window: Annotated[Duration, _within(60, 7 * DAY)] = DAY

    @model_validator(mode="after")
    def _ordered(self) -> CanaryGateConfig:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not exceed pass_score")
        if self.early_alpha > self.alpha:
            raise ValueError("early_alpha must not exceed alpha")
        return self


class GateConfig(_Strict):
    source_down_policy: Literal["fail_closed", "fail_open"] = "fail_closed"
    # How long a source may be unreachable before the policy applies (before: pending).
    source_down_after: Annotated[Duration, _within(0, 7 * DAY)] = 300.0
    cache_ttl: Annotated[Duration, _within(0, HOUR)] = 5.0
    min_duration: Annotated[Duration, _within(0, 30 * DAY)] = 0.0
    # Labels a request may add as matchers (`?env=prod`, Flagger metadata). They only
    # narrow the rule's own selectors; any other parameter is a 400 naming it.
    request_labels: list[Annotated[str, BeforeValidator(_request_label)]] = Field(
        default_factory=lambda: ["env"]
    )
    # Fresh evaluations (cache misses) per second over all callers, and how many may wait
    # or run at once; beyond either the gate answers 429 with Retry-After.
    max_evaluations_per_second: float = Field(5.0, gt=0, le=1000)
    max_pending_evaluations: int = Field(8, ge=1, le=1000)
    # Per source, for gate queries only: scheduled cycles keep their own max_in_flight.
    max_in_flight: int = Field(2, ge=1, le=64)
    # Past it the answer is pending + Retry-After; the evaluation finishes in the background.
    deadline: Duration = Field(5.0, gt=0, le=300)
    # Audit trail (/api/v1/gate/history): older rows, and the oldest beyond the row cap,
    # are pruned periodically.
    audit_retention: Duration = Field(30 * 86400.0, gt=0, le=3650 * 86400.0)
    audit_max_rows: int = Field(100_000, ge=100, le=100_000_000)
    canary: CanaryGateConfig = Field(default_factory=CanaryGateConfig)


class DashboardsConfig(_Strict):
    templates: str = "dashboards"  # Jinja2 templates, relative to this config file
    output: str | None = None  # the daemon (re)writes files here on start and reload
    prometheus_datasource_uid: str = "prometheus"
    loki_datasource_uid: str = "loki"
    # Deploy annotations: a PromQL expression that is > 0 when a deploy happened.
    deploy_marker: str | None = None
    grafana_url: HttpURL | None = None  # links in alerts; push target when push is true
    push: bool = False
    grafana_token: SecretStr | None = None
    folder_uid: str | None = None


class FieldExpect(_Strict):
    """What one field of a probe's JSON answer must be; every assertion given must hold."""

    equals: Any = None  # `equals: null` asserts null: whether it was given is tracked
    in_: list[Any] | None = Field(None, alias="in", min_length=1)
    non_empty: bool | None = None
    matches: str | None = None  # a regular expression searched in the (string) value

    @model_validator(mode="after")
    def _asserts_something(self) -> FieldExpect:
        if self.non_empty is False:
            raise ValueError("non_empty: false asserts nothing; write non_empty: true or drop it")
        if not ({"equals", "in_", "non_empty", "matches"} & self.model_fields_set):
            raise ValueError("give at least one of equals, in, non_empty, matches")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: not a regular expression: {exc}") from None
        return self

    @property
    def has_equals(self) -> bool:
        return "equals" in self.model_fields_set


def _json_path(value: str) -> str:
    if not value or any(not part for part in value.split(".")):
        raise ValueError(
            f"expected a field path like answer_mode or metadata.answer_mode, got {value!r}"
        )
    return value


class ProbeExpect(_Strict):
    status: int = Field(200, ge=100, le=599)
    max_latency: Annotated[Duration, _within(0, 10 * MINUTE, above=True)] | None = None
    # Field paths into the JSON answer (`metadata.answer_mode`, `choices.0.text`).
    json_: dict[Annotated[str, AfterValidator(_json_path)], FieldExpect] = Field(
        default_factory=dict, alias="json"
    )


def _probe_name(value: str) -> str:
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}", value):
        raise ValueError(
            f"probe name {value!r}: letters, digits, '_', '.', '-' (it names the SLO probe-NAME)"
        )
    return value


def _header_text(value: object) -> object:
    # One problem for a header typed as a number, not one per member of the union below.
    if not isinstance(value, str | SecretStr):
        raise ValueError("expected a string (quote it)")
    return value


HeaderValue = Annotated[str | SecretStr, BeforeValidator(_header_text)]


class ProbeConfig(_Strict):
    """A synthetic request to a service on its own schedule (sentinel/daemon/probes.py)."""

    service: str = Field(min_length=1)  # its result joins this service's SLOs and gate
    url: HttpURL
    method: Literal["POST", "GET"] = "POST"
    # Each run asks the service's LLM a question: the interval is also a cost.
    interval: Annotated[Duration, _within(1, DAY)] = 60.0
    timeout: Timeout = 10.0  # per request (the chat and the readiness check)
    # Values may be `${ENV}`; credential headers (Authorization, *token*, *key*...) are held
    # as SecretStr and redacted from logs.
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    body: Any = None  # sent as JSON
    expect: ProbeExpect = Field(default_factory=ProbeExpect)
    ready_url: HttpURL | None = None  # GET; must answer 200
    severity: Literal["info", "ticket", "page"] = "page"
    for_: Annotated[Duration, _within(0, 7 * DAY)] = Field(0.0, alias="for")
    notify: list[str] = Field(default_factory=list)
    gate: bool = True
    description: str = ""
    runbook_url: str | None = None
    # Stored runs (state store, `probe_results`) older than this are pruned.
    retention: Annotated[Duration, _within(HOUR, 3650 * DAY)] = 7 * DAY

    @field_validator("headers", mode="after")
    @classmethod
    def _hold_credentials(cls, headers: dict[str, str | SecretStr]) -> dict[str, str | SecretStr]:
        return {
            name: SecretStr(value)
            if isinstance(value, str) and _SECRET_HEADER.search(name)
            else value
            for name, value in headers.items()
        }

    @field_validator("body", mode="after")
    @classmethod
    def _get_sends_no_body(cls, body: Any, info: ValidationInfo) -> Any:
        if info.data.get("method") == "GET" and body is not None:
            raise ValueError("a GET probe sends no body (use method: POST)")
        return body

    def header_values(self) -> dict[str, str]:
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self.headers.items()
        }


class Config(_Strict):
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    loki: LokiConfig | None = None
    rules: list[str] = Field(default_factory=lambda: ["rules/*.yaml"])
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    notifiers: dict[str, NotifierConfig] = Field(default_factory=dict)
    gate: GateConfig = Field(default_factory=GateConfig)
    dashboards: DashboardsConfig = Field(default_factory=DashboardsConfig)
    # Synthetic probes by name (sentinel/daemon/probes.py, `sentinel probe --once`).
    probes: dict[Annotated[str, AfterValidator(_probe_name)], ProbeConfig] = Field(
        default_factory=dict
    )
    # Directory the config file lives in; relative paths (rules, state) resolve against it.
    base_dir: str = Field(".", exclude=True)
    # Where `rules` is written (file, line), set by load_config: a problem with the rule
    # files as a whole (none match the patterns) points there. Not settable from YAML.
    _rules_at: tuple[str, int | None] = PrivateAttr(default=("config", None))

    @property
    def rules_at(self) -> tuple[str, int | None]:
        return self._rules_at

    def resolve(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate


def interpolate_env(
    data: Any, env: dict[str, str], path: tuple[str | int, ...], missing: list[tuple[Any, str]]
) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; record unset variables."""
    if isinstance(data, dict):
        return {k: interpolate_env(v, env, (*path, k), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_env(v, env, (*path, i), missing) for i, v in enumerate(data)]
    if isinstance(data, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((path, name))
            return ""

        return _ENV_REF.sub(substitute, data)
    return data


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file. Raises ConfigError with every problem."""
    file = str(path)
    try:
        located = read_yaml_file(path, file, "config")
    except YAMLSyntaxError as exc:
        raise ConfigError([exc.problem]) from exc
    raw = located.data
    if not isinstance(raw, dict) and raw is not None:
        raise ConfigError([located.problem((), "expected a mapping at the top level")])
    if not raw:
        raise ConfigError([Problem(file, None, "", _sets_nothing(raw))])
    missing: list[tuple[Any, str]] = []
    data = interpolate_env(raw, dict(os.environ) if env is None else env, (), missing)
    problems = [
        located.problem(p, f"environment variable {name} is not set (use ${{{name}:-default}})")
        for p, name in missing
    ]
    if not any(key in raw for key in REQUIRED_ANY):
        problems.append(Problem(file, None, "", _sets_nothing(raw)))
    data["base_dir"] = str(Path(path).resolve().parent)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_problems(located, exc.errors(), SECRET_KEYS)
        raise ConfigError(problems) from exc
    problems += [located.problem(path, msg) for path, msg in _probe_problems(config)]
    if problems:
        raise ConfigError(problems)
    config._rules_at = (file, located.line_of(("rules",)) if "rules" in raw else None)
    # From here on every log line and health record has these replaced (sentinel/redact.py).
    remember_secrets(_secret_values(config))
    return config


def _probe_problems(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across sections: a probe's `notify` names configured notifiers."""
    known = ", ".join(sorted(config.notifiers)) or "none configured"
    return [
        (("probes", name, "notify", i), f"unknown notifier {notifier!r} (known: {known})")
        for name, probe in config.probes.items()
        for i, notifier in enumerate(probe.notify)
        if notifier not in config.notifiers
    ]


# Header names whose values are credentials; others (X-Scope-OrgID: chatbot) are not, and
# redacting them would blank a tenant or service name from every log line.
_SECRET_HEADER = re.compile(r"auth|token|key|secret|password|cookie", re.IGNORECASE)


def _secret_values(value: Any) -> list[str]:
    """Every SecretStr in the config, and credential headers (`Authorization: Bearer …`)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        found = []
        if isinstance(value, HTTPSourceConfig):
            found = [v for k, v in value.headers.items() if _SECRET_HEADER.search(k)]
        if isinstance(value, StateConfig):
            return _dsn_secrets(value.dsn.get_secret_value()) if value.dsn else []
        for name in type(value).model_fields:
            found += _secret_values(getattr(value, name))
        return found
    if isinstance(value, dict):
        return [secret for item in value.values() for secret in _secret_values(item)]
    return []


def _dsn_secrets(dsn: str) -> list[str]:
    """A DSN and its password on its own (a driver message may quote it). Without its
    `scheme://`: redaction would otherwise also blank the URL's path (the database name)
    wherever it appears, as it does for webhook URLs whose path is the secret."""
    match = re.search(r"password\s*=\s*'?([^'\s]+)", dsn) or re.search(r"://[^:/@]*:([^@]+)@", dsn)
    return [dsn.split("://", 1)[-1]] + ([match.group(1)] if match else [])


# A config must name at least one of these. An empty or truncated file (a failed
# template render, `---` alone) would otherwise run on defaults: Prometheus on
# localhost, no API token, whatever `rules/*.yaml` holds.
REQUIRED_ANY = ("prometheus", "loki", "rules")


def _sets_nothing(raw: dict[Any, Any] | None) -> str:
    fix = "write `prometheus: {url: http://127.0.0.1:9090}` to use the defaults on purpose"
    if not raw:
        return f"the config is empty; it is refused rather than run on defaults ({fix})"
    return f"the config sets none of {', '.join(REQUIRED_ANY)}; it is refused ({fix})"


def _secret_keys(model: type[BaseModel]) -> set[str]:
    """Names of the fields that hold secrets, in `model` and every model inside it."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if "SecretStr" in str(annotation):
            keys.add(name)
        for arg in _types_in(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg is not model:
                keys |= _secret_keys(arg)
    return keys


def _types_in(annotation: Any) -> list[Any]:
    """`dict[str, Annotated[A | B, ...]]` -> [that, str, Annotated[...], A | B, A, B, ...]."""
    found = [annotation]
    for arg in get_args(annotation):
        found += _types_in(arg)
    return found


# Values under these keys are never echoed in a problem (which reaches the log and
# `/health/detailed`): a token typed as a number, an Authorization header.
SECRET_KEYS = frozenset(_secret_keys(Config) | {"headers"})
