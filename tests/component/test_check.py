"""`sentinel check`: every problem of every file, each with file, line and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO
from sentinel.cli.main import main
from support.promserver import PrometheusServer

BROKEN = """\
    version: sentinel/v1
    service: chatbot-backend
    slos:
      - name: ok-latency
        sli:
          latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
        threshold: 1.5s
      - name: bad-objective
        sli:
          ratio:
            bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
            total: {metric: http_requests_total}
        objective: 120%
      - name: unknown-key
        sli:
          latency: {histogram: x_seconds}
        threshold: 1s
        windwo: 5m
      - name: broken-promql
        sli:
          promql:
            query: sum(rate(http_requests_total[$window]) /
        threshold: 1
"""


def test_shipped_example_config_is_valid(
    capsys: pytest.CaptureFixture[str], prometheus: PrometheusServer, tmp_path: Path
) -> None:
    config = (REPO / "config.example.yaml").read_text()
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "rules").symlink_to(REPO / "rules")
    code = main(["check", "-c", str(tmp_path / "config.yaml")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # rules/chatbot.yaml 6, gateway.yaml 13, backend-platform.yaml 13, backend-llm.yaml 8
    assert "ok: 40 SLOs in 4 rule file(s)" in captured.out


def test_three_precise_errors_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    prometheus: PrometheusServer,
    write_config: Callable[..., Path],
) -> None:
    config = write_config(prometheus.url, {"broken.yaml": BROKEN})
    code = main(["check", "-c", str(config)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    problems = [line for line in err if line.startswith("rules/") or "broken.yaml:" in line]
    assert len(problems) == 3, err
    objective, unknown, promql = sorted(problems, key=lambda p: int(p.split(":")[1]))
    assert objective.endswith(
        "broken.yaml:13: slos[1].objective: must be between 0 and 100 (got 120%)"
    )
    assert "broken.yaml:18: slos[2].windwo: unknown key" in unknown
    assert "broken.yaml:20: slos[3].sli: prometheus rejects the query:" in promql
    assert "unclosed left parenthesis" in promql or "parse error" in promql


def test_unreachable_prometheus_is_said_not_hidden(
    capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path]
) -> None:
    config = write_config(
        "http://127.0.0.1:9",
        {"chatbot.yaml": (REPO / "rules/chatbot.yaml").read_text()},
        "loki: {url: 'http://127.0.0.1:9', retries: 0}\n",
    )
    code = main(["check", "-c", str(config)])
    captured = capsys.readouterr()
    assert code == 0
    assert "prometheus at http://127.0.0.1:9 is unreachable" in captured.err
    assert "loki at http://127.0.0.1:9 is unreachable" in captured.err
    assert "NOT checked" in captured.err


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("prometheus:\n  urll: x\n", "config.yaml:2: prometheus.urll: unknown key"),
        (
            "evaluation:\n  interval: soon\n",
            "config.yaml:2: evaluation.interval: expected a duration",
        ),
        (
            "server:\n  api_token: ${NOPE_NOT_SET}\n",
            "config.yaml:2: server.api_token: environment variable NOPE_NOT_SET is not set",
        ),
        ("rules: [\n", "config.yaml:2: invalid YAML"),
    ],
    ids=["unknown-key", "bad-duration", "missing-env", "yaml-syntax"],
)
def test_config_errors_name_file_line_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config_text: str, expected: str
) -> None:
    (tmp_path / "config.yaml").write_text(config_text)
    code = main(["check", "-c", str(tmp_path / "config.yaml")])
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err, err


def test_env_interpolation_fills_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentinel.config import load_config

    monkeypatch.setenv("PROM_TOKEN", "s3cret")
    (tmp_path / "c.yaml").write_text(
        "prometheus:\n  url: ${PROM_URL:-http://prom:9090}\n  bearer_token: ${PROM_TOKEN}\n"
    )
    config = load_config(tmp_path / "c.yaml")
    assert config.prometheus.url == "http://prom:9090"
    assert config.prometheus.bearer_token is not None
    assert config.prometheus.bearer_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("slos: []\n", "slos: List should have at least 1 item"),
        (
            "slos:\n  - name: a\n    sli: {}\n    threshold: 1\n",
            "slos[0].sli: exactly one SLI kind is required",
        ),
        (
            "slos:\n  - name: a\n    sli: {latency: {histogram: h}}\n",
            "slos[0]: this SLI needs a threshold",
        ),
        (
            "slos:\n  - name: a\n    sli: {latency: {histogram: 'bad name'}}\n    threshold: 1s\n",
            "slos[0].sli.latency.histogram: not a valid metric name",
        ),
        (
            "slos:\n  - name: a\n    sli: {latency: {histogram: h, quantile: 1.5}}\n    threshold: 1s\n",
            "slos[0].sli.latency.quantile: Input should be less than 1",
        ),
        (
            "slos:\n  - name: a\n    sli: {latency: {histogram: h}}\n    threshold: 1s\n    notify: [pager]\n",
            "slos[0].notify[0]: unknown notifier 'pager'",
        ),
        (
            "slos:\n  - name: a\n    sli: {latency: {histogram: h}}\n    threshold: 1s\n  - name: a\n    sli: {latency: {histogram: h}}\n    threshold: 1s\n",
            "slos[1].name: duplicate SLO name 'a'",
        ),
    ],
    ids=["empty", "no-kind", "no-threshold", "metric-name", "quantile", "notifier", "duplicate"],
)
def test_rule_problems_are_precise(
    capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path], rule: str, expected: str
) -> None:
    text = "version: sentinel/v1\nservice: s\n" + rule
    config = write_config("http://127.0.0.1:9", {"r.yaml": text})
    code = main(["check", "-c", str(config), "--offline"])
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err, err


LATENCY_SLO = "slos:\n  - name: a\n    sli: {latency: {histogram: h}}\n"
RATIO_SLO = (
    "slos:\n  - name: a\n    sli: {ratio: {bad: {metric: e_total}, total: {metric: r_total}}}\n"
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("interval: 0s\n" + LATENCY_SLO + "    threshold: 1s\n", "r.yaml:3: interval: must be"),
        ("interval: 1000000000d\n" + LATENCY_SLO + "    threshold: 1s\n", "r.yaml:3: interval: "),
        (
            "interval: 2d\n" + LATENCY_SLO + "    threshold: 1s\n",
            "r.yaml:3: interval: must be between 1s and 1d (got '2d')",
        ),
        (
            LATENCY_SLO + "    threshold: 1s\n    window: 500d\n",
            "r.yaml:7: slos[0].window: must be between 1s and 400d (got '500d')",
        ),
        (LATENCY_SLO + "    threshold: .nan\n", "r.yaml:6: slos[0].threshold: must be a finite"),
        (LATENCY_SLO + "    threshold: .inf\n", "r.yaml:6: slos[0].threshold: must be a finite"),
        (
            LATENCY_SLO + "    threshold: -1\n",
            "slos[0].threshold: a latency threshold must be >= 0",
        ),
        (RATIO_SLO + "    threshold: 5\n", "slos[0].threshold: a ratio threshold is a fraction"),
        (RATIO_SLO + "    objective: .nan\n", "r.yaml:6: slos[0].objective: must be between 0"),
        (RATIO_SLO + "    objective: .inf\n", "r.yaml:6: slos[0].objective: must be between 0"),
        (RATIO_SLO + "    objective: -99%\n", "r.yaml:6: slos[0].objective: must be between 0"),
        (
            RATIO_SLO + "    objective: 99%\n    min_events: .nan\n",
            "r.yaml:7: slos[0].min_events: Input should be a finite number",
        ),
    ],
    ids=[
        "interval 0s no longer falls back to the default",
        "interval 1000000000d no longer reaches the scheduler",
        "interval over a day",
        "window beyond 400d",
        "NaN threshold never breaches",
        "infinite threshold",
        "negative latency threshold",
        "ratio threshold written as a percentage number",
        "NaN objective",
        "infinite objective",
        "negative objective",
        "NaN min_events",
    ],
)
def test_values_that_can_never_be_judged_are_refused_with_file_and_line(
    capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path], rule: str, expected: str
) -> None:
    text = "version: sentinel/v1\nservice: s\n" + rule
    config = write_config("http://127.0.0.1:9", {"r.yaml": text})
    code = main(["check", "-c", str(config), "--offline"])
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err, err


GROUPED = """\
version: sentinel/v1
service: platform
slos:
  - name: per-service-5xx
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {code: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99%
    group_by:
      - service
"""


@pytest.mark.parametrize(
    ("series", "warned"),
    [(8, "over the limit: this SLO is no_data"), (4, "over half the limit"), (2, None)],
    ids=["over the limit", "over half the limit", "well under the limit: no warning"],
)
def test_check_warns_where_a_group_by_returns_too_many_series(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, series: int, warned: str | None
) -> None:
    from support.fakeprom import FakePrometheus, element

    prom = FakePrometheus().start()
    try:
        prom.answer([element({"service": f"s{i}"}, "1") for i in range(series)])
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "platform.yaml").write_text(GROUPED)
        (tmp_path / "config.yaml").write_text(
            f"prometheus:\n  url: {prom.url}\n  max_series: 6\nrules: [rules/*.yaml]\n"
        )
        code = main(["check", "-c", str(tmp_path / "config.yaml")])
    finally:
        prom.stop()
    captured = capsys.readouterr()
    assert code == 0  # a warning: the series count is today's, not the rule's fault
    notes = [line for line in captured.err.splitlines() if "group_by" in line]
    if warned is None:
        assert notes == []
        return
    (note,) = notes
    assert note.startswith("note: ")
    assert "rules/platform.yaml:10: slos[0].group_by: " in note
    assert f"returns {series} series now and prometheus.max_series is 6" in note
    assert warned in note
