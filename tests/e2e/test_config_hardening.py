"""Loading the config and rule files: a broken or hostile file is refused with its file
and line — by `sentinel check`, at start and on SIGHUP — never with a traceback, a hang
or gigabytes of memory; durations are bounded; a config that sets nothing is refused."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli.main import main
from sentinel.yamlsource import MAX_ALIAS_NODES, MAX_FILE_BYTES
from support.procs import http, start_sentinel, wait_for
from support.promserver import free_port

HEAD = "prometheus: {url: 'http://127.0.0.1:9'}\nrules: [rules/*.yaml]\n"  # lines 1-2
RULE = """\
version: sentinel/v1
service: checkout
slos:
  - name: errors
    sli: {promql: {query: "vector(0)"}}
    threshold: 0.5
"""


def billion_laughs(levels: int, indent: str = "") -> str:
    """Ten aliases per level: 10**levels strings from a few hundred bytes."""
    lines = [f'{indent}a0: &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def check(tmp_path: Path, config: bytes | str, rule: bytes | str = RULE) -> tuple[int, str]:
    """`sentinel check --offline` in-process; returns the exit code and stderr."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    rule_file = tmp_path / "rules" / "checkout.yaml"
    rule_file.write_bytes(rule.encode() if isinstance(rule, str) else rule)
    config_file = tmp_path / "config.yaml"
    config_file.write_bytes(config.encode() if isinstance(config, str) else config)
    return run_check(config_file)


def run_check(config_file: Path) -> tuple[int, str]:
    capture = config_file.parent / "stderr.txt"
    with capture.open("w") as err, pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", err)
        code = main(["check", "--offline", "-c", str(config_file)])
    return code, capture.read_text()


BROKEN_CONFIGS = [
    (
        HEAD.encode() + b"server: {listen: '\xff\xfe:8080'}\n",
        "config.yaml:3: not valid UTF-8 (byte 0xff at column 19); save the file as UTF-8",
    ),
    (
        HEAD + "server: " + "[" * 1200 + "]" * 1200 + "\n",
        "config.yaml:3: invalid YAML: nested more than 64 levels deep",
    ),
    (
        HEAD + "dashboards: " + "{a: " * 1200 + "1" + "}" * 1200 + "\n",
        "config.yaml:3: invalid YAML: nested more than 64 levels deep",
    ),
    (
        HEAD + "prometheus_headers: &h\n  a: *h\n",
        "config.yaml:4: invalid YAML: alias *h refers to a node that contains it",
    ),
    (
        HEAD + "evaluation: {interval: " + "9" * 5000 + "}\n",
        "config.yaml:3: invalid YAML: cannot read the value '99999",
    ),
    (
        HEAD + "evaluation: {interval: " + "9" * 400 + "}\n",
        "config.yaml:3: invalid YAML: cannot read the value '999",
    ),
    (
        HEAD + "evaluation: {interval: 2024-13-45}\n",
        "config.yaml:3: invalid YAML: cannot read the value '2024-13-45': month must be in 1..12",
    ),
    (
        HEAD + 'server: {listen: "\x01"}\n',
        "config.yaml:3: invalid YAML: character U+0001 is not allowed in YAML",
    ),
    (
        HEAD + "server:\n\tlisten: ':8080'\n",
        "config.yaml:4: invalid YAML: found character '\\t' that cannot start any token",
    ),
    (  # the line is right after lines of non-ASCII text (a position counted in bytes)
        HEAD + "# " + "é" * 3000 + '\n#\nserver: {listen: "\x01"}\n',
        "config.yaml:5: invalid YAML: character U+0001 is not allowed in YAML",
    ),
    (
        HEAD + "prometheus: {url: 'http://other:9090'}\n",
        "config.yaml:3: duplicate key 'prometheus' (first at line 1)",
    ),
    (
        HEAD + "server:\n  headers:\n" + billion_laughs(8, "    "),
        f"config.yaml:10: invalid YAML: aliases expand the document by more than {MAX_ALIAS_NODES:,} values",
    ),
    ("", "config.yaml: the config is empty; it is refused rather than run on defaults"),
    ("---\n", "config.yaml: the config is empty"),
    ("# everything commented out\n", "config.yaml: the config is empty"),
    ("{}\n", "config.yaml: the config is empty"),
    (
        "server: {listen: '127.0.0.1:8080'}\n",
        "config.yaml: the config sets none of prometheus, loki, rules; it is refused",
    ),
    (
        HEAD + "#" * MAX_FILE_BYTES + "\n",
        "config.yaml: config is larger than 4 MB, the limit for config and rule files",
    ),
    ("- prometheus\n", "config.yaml:1: expected a mapping at the top level"),
    (
        HEAD + "---\nrules: []\n",
        "config.yaml:3: invalid YAML: expected a single document in the stream, but found another",
    ),
]


@pytest.mark.parametrize(
    ("config", "expected"),
    BROKEN_CONFIGS,
    ids=[
        "not-utf8",
        "nested-1200-deep-sequence",
        "nested-1200-deep-mapping",
        "self-alias",
        "5000-digit-integer",
        "400-digit-integer",
        "impossible-date",
        "control-character",
        "tab-indent",
        "control-character-after-non-ascii-lines",
        "duplicate-key",
        "billion-laughs",
        "empty",
        "only-document-marker",
        "only-comments",
        "empty-mapping",
        "sets-no-source-and-no-rules",
        "over-4-MB",
        "not-a-mapping",
        "two-documents",
    ],
)
def test_a_broken_config_is_refused_with_file_and_line_never_a_traceback(
    tmp_path: Path, config: bytes | str, expected: str
) -> None:
    code, err = check(tmp_path, config)
    assert code == 1
    assert "Traceback" not in err
    assert expected in err, err


@pytest.mark.parametrize(
    ("digits", "reason"), [(5000, "the integer is too long"), (400, "the number is too large")]
)
def test_numbers_python_cannot_hold_are_refused_at_their_line(
    tmp_path: Path, digits: int, reason: str
) -> None:
    """Both used to crash `check`: int() refuses > 4,300 digits, float() > 1.8e308."""
    code, err = check(tmp_path, HEAD + "gate: {cache_ttl: " + "9" * digits + "}\n")
    assert code == 1
    assert "config.yaml:3: invalid YAML: cannot read the value '999" in err, err
    assert err.rstrip().endswith(f"...': {reason}"), err


def test_a_directory_or_a_fifo_given_as_config_is_refused_without_waiting(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it for reading would block for a writer
    for name, expected in [
        ("dir.yaml", "dir.yaml: cannot read config: is a directory, not a file"),
        ("fifo.yaml", "fifo.yaml: cannot read config: not a regular file"),
        ("missing.yaml", "missing.yaml: cannot read config: No such file or directory"),
    ]:
        code, err = run_check(tmp_path / name)
        assert code == 1
        assert expected in err, err


def test_a_directory_matched_by_the_rules_glob_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "rules" / "nested.yaml").mkdir(parents=True)
    code, err = check(tmp_path, HEAD)
    assert code == 1
    assert "nested.yaml: cannot read rule file: is a directory, not a file" in err, err


BROKEN_RULE_FILES = [
    (
        b"version: sentinel/v1\nservice: \xff\n",
        "checkout.yaml:2: not valid UTF-8 (byte 0xff at column 10)",
    ),
    (
        "version: sentinel/v1\nservice: s\nslos: " + "[" * 1200 + "]" * 1200 + "\n",
        "checkout.yaml:3: invalid YAML: nested more than 64 levels deep",
    ),
    (
        "version: sentinel/v1\nservice: s\nlabels: &l {a: *l}\n",
        "checkout.yaml:3: invalid YAML: alias *l refers to a node that contains it",
    ),
    (
        RULE + "    min_events: " + "9" * 5000 + "\n",
        "checkout.yaml:7: invalid YAML: cannot read the value '999",
    ),
    (
        RULE.replace("threshold: 0.5", "threshold: " + "9" * 400),
        "checkout.yaml:6: invalid YAML: cannot read the value '999",
    ),
    (
        "version: sentinel/v1\nservice: s\nlabels:\n" + billion_laughs(6, "  ") + "slos: []\n",
        "checkout.yaml:9: invalid YAML: aliases expand the document by more than",
    ),
    (
        RULE + "    sli: {promql: {query: 'vector(1)'}}\n",
        "checkout.yaml:7: slos[0]: duplicate key 'sli' (first at line 5)",
    ),
    ("", "checkout.yaml: expected a mapping with version, service and slos"),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    BROKEN_RULE_FILES,
    ids=[
        "not-utf8",
        "nested-1200-deep",
        "self-alias",
        "5000-digit-integer",
        "400-digit-threshold",
        "billion-laughs",
        "duplicate-key",
        "empty",
    ],
)
def test_a_broken_rule_file_is_refused_with_file_and_line_never_a_traceback(
    tmp_path: Path, rule: bytes | str, expected: str
) -> None:
    code, err = check(tmp_path, HEAD, rule)
    assert code == 1
    assert "Traceback" not in err
    assert expected in err, err


def test_ordinary_anchors_and_merge_keys_are_still_welcome(tmp_path: Path) -> None:
    """Sharing blocks across a few hundred SLOs is what anchors are for."""
    slos = "".join(
        f"""\
  - <<: *defaults
    name: route-{i}
    sli: {{ratio: {{bad: {{metric: http_requests_total, matchers: *errors}}, total: {{metric: http_requests_total}}}}}}
"""
        for i in range(300)
    )
    rule = f"""\
version: sentinel/v1
service: checkout
slos:
  - &first
    <<: &defaults {{objective: 99.5%, window: 5m, severity: ticket}}
    name: route-first
    sli: {{ratio: {{bad: {{metric: http_requests_total, matchers: &errors {{status: "=~5.."}}}}, total: {{metric: http_requests_total}}}}}}
{slos}"""
    code, err = check(tmp_path, HEAD, rule)
    assert code == 0, err


def test_the_alias_budget_is_a_bound_not_a_ban(tmp_path: Path) -> None:
    """A block repeated up to the budget is parsed through to validation; one more copy
    is refused, at the line of the alias that crosses it."""
    block = "{" + ", ".join(f"k{i}: v" for i in range(99)) + "}"  # 199 values a copy
    copies = MAX_ALIAS_NODES // 199
    config = HEAD + f"spare: &big {block}\ncopies:\n" + "  - *big\n" * copies
    code, err = check(tmp_path, config)
    assert "aliases expand" not in err, err
    assert "config.yaml:3: spare: unknown key" in err, err
    code, err = check(tmp_path, config + "  - *big\n")
    assert code == 1
    assert f"config.yaml:{5 + copies}: invalid YAML: aliases expand the document" in err, err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "evaluation: {interval: 0s}",
            "config.yaml:3: evaluation.interval: must be at least 1s and at most 1d (got '0s')",
        ),
        (
            "evaluation: {interval: 500ms}",
            "evaluation.interval: must be at least 1s and at most 1d (got '500ms')",
        ),
        (
            "evaluation: {interval: 2d}",
            "evaluation.interval: must be at least 1s and at most 1d (got '2d')",
        ),
        (
            "evaluation: {cycle_timeout: 0s}",
            "evaluation.cycle_timeout: must be more than 0s and at most 1d",
        ),
        (
            "evaluation: {shutdown_timeout: 2h}",
            "evaluation.shutdown_timeout: must be at least 0s and at most 1h",
        ),
        (
            "loki: {url: 'http://127.0.0.1:9', timeout: 0s}",
            "loki.timeout: must be more than 0s and at most 10m",
        ),
        ("gate: {cache_ttl: 1000000000d}", "gate.cache_ttl: duration must be at most 100y"),
        (
            "gate: {source_down_after: 8d}",
            "gate.source_down_after: must be at least 0s and at most 7d",
        ),
        ("gate: {min_duration: -1}", "gate.min_duration: duration must be finite and >= 0"),
        (
            "notifiers: {ci: {type: webhook, url: 'http://ci/hook', timeout: 0s}}",
            "notifiers.ci.timeout: must be more than 0s",
        ),
        (
            "notifiers: {ci: {type: webhook, url: 'http://ci/hook', cooldown: 1y}}",
            "notifiers.ci.cooldown: must be at least 0s and at most 30d",
        ),
    ],
    ids=[
        "interval-0s",
        "interval-500ms",
        "interval-2d",
        "cycle-timeout-0s",
        "shutdown-2h",
        "source-timeout-0s",
        "cache-ttl-overflow",
        "source-down-8d",
        "negative",
        "webhook-timeout-0s",
        "cooldown-1y",
    ],
)
def test_durations_outside_sane_bounds_are_refused_with_the_field(
    tmp_path: Path, setting: str, expected: str
) -> None:
    code, err = check(tmp_path, HEAD + setting + "\n")
    assert code == 1
    assert expected in err, err


@pytest.mark.parametrize(
    "setting",
    [
        "evaluation: {interval: 1s, shutdown_timeout: 0s}",
        "evaluation: {interval: 1d}",
        "gate: {source_down_after: 0s, cache_ttl: 0s}",
    ],
)
def test_durations_at_their_bounds_are_accepted(tmp_path: Path, setting: str) -> None:
    code, err = check(tmp_path, HEAD + setting + "\n")
    assert code == 0, err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "prometheus: {url: 'prometheus:9090'}",
            "config.yaml:2: prometheus.url: expected an http:// or https:// URL with a host",
        ),
        (
            "notifiers: {ci: {type: webhook, url: 'ci.example.com/hook?token=abc123'}}",
            "notifiers.ci.url: expected an http:// or https:// URL",
        ),
        (
            "notifiers: {chat: {type: slack, webhook_url: 'hooks.slack.com/services/T/B/Xyz987'}}",
            "notifiers.chat.webhook_url: expected an http:// or https:// URL",
        ),
        (
            "notifiers: {chat: {type: slack, token: t, base_url: 'http://u:pw9876@slack.internal/api/'}}",
            "notifiers.chat.base_url: must not contain user:password@",
        ),
        (
            "server: {api_token: 1234567890123}",
            "config.yaml:2: server.api_token: Input should be a valid string",
        ),
    ],
    ids=[
        "no-scheme",
        "webhook-no-scheme",
        "slack-webhook-no-scheme",
        "slack-credentials",
        "numeric-token",
    ],
)
def test_unusable_urls_are_refused_at_load_without_echoing_secrets(
    tmp_path: Path, setting: str, expected: str
) -> None:
    code, err = check(
        tmp_path, HEAD.replace("prometheus: {url: 'http://127.0.0.1:9'}\n", "") + setting + "\n"
    )
    assert code == 1
    assert expected in err, err
    for secret in ("abc123", "Xyz987", "pw9876", "1234567890123"):
        assert secret not in err


def _one_gigabyte_at_most() -> None:
    # Before the fix the 8-level bomb took 27-31 s and hit MemoryError at 2.5 GB; under
    # this cap a regression fails fast (with a traceback) instead of swapping the machine.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize(
    ("config", "rule", "expected"),
    [
        (
            HEAD + "server:\n  headers:\n" + billion_laughs(8, "    "),
            RULE,
            "config.yaml:10: invalid YAML: aliases expand the document by more than",
        ),
        (
            HEAD,
            "version: sentinel/v1\nservice: s\nlabels:\n" + billion_laughs(6, "  "),
            "checkout.yaml:9: invalid YAML: aliases expand the document by more than",
        ),
    ],
    ids=["8-levels-in-the-config", "6-levels-in-a-rule-file"],
)
def test_a_billion_laughs_is_refused_by_the_real_command_in_bounded_time_and_memory(
    tmp_path: Path, config: str, rule: str, expected: str
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "checkout.yaml").write_text(rule)
    (tmp_path / "config.yaml").write_text(config)
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "check", "--offline", "-c", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,  # a regression fails here instead of hanging the suite
        preexec_fn=_one_gigabyte_at_most,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("---\n", "config.yaml: the config is empty"),
        (HEAD + "x:\n" + billion_laughs(8, "  "), "config.yaml:9: invalid YAML: aliases expand"),
        (HEAD + "x: &l {a: *l}\n", "config.yaml:3: invalid YAML: alias *l refers to a node"),
    ],
    ids=["empty", "billion-laughs", "self-alias"],
)
def test_the_daemon_refuses_to_start_on_a_broken_config_with_exit_2(
    tmp_path: Path, config: str, expected: str
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "checkout.yaml").write_text(RULE)
    (tmp_path / "config.yaml").write_text(config)
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "run", "-c", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_one_gigabyte_at_most,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_sighup_refuses_each_broken_file_reports_where_and_keeps_running(tmp_path: Path) -> None:
    port = free_port()
    good = HEAD + f"server: {{listen: '127.0.0.1:{port}'}}\nstate: {{path: state.db}}\n"
    (tmp_path / "rules").mkdir()
    rule_file = tmp_path / "rules" / "checkout.yaml"
    rule_file.write_text(RULE)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(good)
    daemon = start_sentinel(config_file)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http("GET", f"{url}/health/live")[0] == 200, 20, "the daemon")
        broken: list[tuple[Path, bytes, str]] = [
            (config_file, good.encode() + b"x: '\xff'\n", "config.yaml:5: not valid UTF-8"),
            (
                config_file,
                (good + "x: " + "[" * 1200 + "]" * 1200 + "\n").encode(),
                "config.yaml:5: invalid YAML: nested more than 64 levels deep",
            ),
            (
                config_file,
                (good + "x: &l {a: *l}\n").encode(),
                "config.yaml:5: invalid YAML: alias *l refers to a node that contains it",
            ),
            (
                config_file,
                (good + "x: " + "9" * 5000 + "\n").encode(),
                "config.yaml:5: invalid YAML: cannot read the value",
            ),
            (
                config_file,
                (good + "x:\n" + billion_laughs(8, "  ")).encode(),
                "config.yaml:11: invalid YAML: aliases expand the document",
            ),
            (config_file, b"---\n", "config.yaml: the config is empty"),
            (
                config_file,
                (good + "evaluation: {interval: 0s}\n").encode(),
                "config.yaml:5: evaluation.interval: must be at least 1s",
            ),
            (
                rule_file,
                b"version: sentinel/v1\nservice: \xff\n",
                "rules/checkout.yaml:2: not valid UTF-8",
            ),
            (
                rule_file,
                ("version: sentinel/v1\nservice: s\nlabels:\n" + billion_laughs(6, "  ")).encode(),
                "rules/checkout.yaml:9: invalid YAML: aliases expand the document",
            ),
        ]
        for path, content, expected in broken:
            config_file.write_text(good)
            rule_file.write_text(RULE)
            path.write_bytes(content)
            daemon.process.send_signal(signal.SIGHUP)

            def refused(expected: str = expected) -> bool:
                reload = http("GET", f"{url}/health/detailed")[1]["config"]["last_reload"]
                return reload["status"] == "failed" and any(expected in e for e in reload["errors"])

            wait_for(refused, 20, f"the reload to be refused with {expected!r}")
        assert daemon.process.poll() is None
        log = daemon.log()
        assert "Traceback" not in log
        assert "never retrieved" not in log
        # The config it started with still runs, and a good file is taken again.
        config_file.write_text(good)
        rule_file.write_text(RULE)
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                http("GET", f"{url}/health/detailed")[1]["config"]["last_reload"]["status"] == "ok"
            ),
            20,
            "a good reload",
        )
    finally:
        daemon.stop()
