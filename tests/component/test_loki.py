"""Log-based SLIs against the protocol-faithful Loki server: exact ratios from pushed lines."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.cli.main import main
from support.fakeloki import FakeLoki, Fault

T0 = 1795190400.0  # 2026-11-20T16:00:00Z

RULES = """\
version: sentinel/v1
service: chatbot-backend
slos:
  - name: fallback-answer-rate-logs
    sli:
      log_ratio:
        selector: '{app="chatbot-backend", namespace="chatbot"}'
        pipeline: '| json'
        bad: 'answer_mode="snippet-fallback"'
    objective: 95%
    window: 5m
  - name: error-log-rate
    sli:
      log_ratio:
        selector: '{app="chatbot-backend", namespace="chatbot"}'
        bad: 'level="error"'
    objective: 99%
    window: 5m
  - name: fallback-by-provider
    sli:
      log_ratio:
        selector: '{app="chatbot-backend", namespace="chatbot"}'
        bad: 'answer_mode="snippet-fallback"'
    objective: 95%
    window: 5m
    group_by: [env]
"""


def line(mode: str, level: str = "info", provider: str = "spoon-policy") -> str:
    return json.dumps(
        {
            "level": level,
            "request_id": "req-1",
            "answer_mode": mode,
            "provider_used": provider,
            "latency_ms": 420,
            "message": "Chat message processed",
        }
    )


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    server = FakeLoki(require_tenant=True).start()
    stream = {"app": "chatbot-backend", "namespace": "chatbot"}
    # Window 1 (T0-5m, T0]: 100 answers, 7 fallbacks, 2 error lines, 3 garbled lines.
    lines = [
        (
            T0 - 290 + i,
            line(
                "snippet-fallback" if i < 7 else "llm-summary", "error" if i in (50, 51) else "info"
            ),
        )
        for i in range(100)
    ]
    lines += [(T0 - 100 + i, "Traceback (most recent call last): not json") for i in range(3)]
    server.push({**stream, "env": "prod"}, lines[:60], tenant="chatbot")
    server.push({**stream, "env": "canary"}, lines[60:], tenant="chatbot")
    # Window 2 (T0+1h-5m, T0+1h]: 50 answers, none fallback.
    server.push(
        {**stream, "env": "prod"},
        [(T0 + 3400 + i, line("llm-summary")) for i in range(50)],
        tenant="chatbot",
    )
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, loki: FakeLoki) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "logs.yaml").write_text(RULES)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "http://127.0.0.1:9"}}
            loki: {{url: "{loki.url}", tenant: chatbot, timeout: 2s, retries: 2}}
            rules: [rules/*.yaml]
            """
        )
    )
    return cfg


def run(
    capsys: pytest.CaptureFixture[str], cfg: Path, at: float
) -> tuple[int, list[dict[str, object]]]:
    code = main(["eval", "-c", str(cfg), "--at", str(at), "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else []


def test_fallback_ratio_from_logs_is_exact_and_ignores_garbled_lines(
    capsys: pytest.CaptureFixture[str], config: Path, loki: FakeLoki
) -> None:
    code, results = run(capsys, config, T0)
    by = {(r["slo"], tuple(sorted(r["labels"].items()))): r for r in results}
    fallback = by[("fallback-answer-rate-logs", ())]
    assert fallback["value"] == pytest.approx(7 / 100, abs=1e-12)
    assert fallback["events"] == 100  # the 3 unparseable lines are in neither side
    assert fallback["status"] == "breach"
    errors = by[("error-log-rate", ())]
    assert errors["value"] == pytest.approx(2 / 100, abs=1e-12) and errors["status"] == "breach"
    assert by[("fallback-by-provider", (("env", "prod"),))]["value"] == pytest.approx(7 / 60)
    assert by[("fallback-by-provider", (("env", "canary"),))]["value"] == 0.0
    assert code == 1
    # One query per SLO per window, group_by included.
    assert len(loki.queries) == 3


def test_no_bad_lines_is_zero_and_no_lines_is_no_data(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    _, results = run(capsys, config, T0 + 3600)
    fallback = next(r for r in results if r["slo"] == "fallback-answer-rate-logs")
    assert fallback["status"] == "ok" and fallback["value"] == 0.0
    _, results = run(capsys, config, T0 + 7200)
    assert {r["status"] for r in results} == {"no_data"}


def test_explain_prints_the_logql(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    main(["eval", "-c", str(config), "--at", str(T0), "--explain"])
    out = capsys.readouterr().out
    assert (
        'sum (count_over_time({app="chatbot-backend", namespace="chatbot"} | json | __error__="" '
        '| answer_mode="snippet-fallback" [5m]))' in out
    )


def test_transient_loki_errors_are_retried(
    capsys: pytest.CaptureFixture[str], config: Path, loki: FakeLoki
) -> None:
    loki.faults = [Fault(503), Fault(502)]
    code, results = run(capsys, config, T0)
    assert code == 1 and all(r["status"] != "no_data" for r in results)


def test_loki_down_is_an_error_not_ok(
    capsys: pytest.CaptureFixture[str], config: Path, loki: FakeLoki
) -> None:
    config.write_text(config.read_text().replace(loki.url, "http://127.0.0.1:9"))
    code = main(["eval", "-c", str(config), "--at", str(T0)])
    assert code == 2
    assert "loki unavailable" in capsys.readouterr().err


def test_check_asks_loki_to_parse_logql(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    rules = config.parent / "rules" / "logs.yaml"
    rules.write_text(
        RULES
        + "  - name: raw\n    sli:\n      logql:\n        query: 'sum(count_over_time({app=\"x\"} [$window])'\n    threshold: 1\n"
    )
    code = main(["check", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "logs.yaml:28: slos[3].sli: loki rejects the query: parse error at line 1" in err


async def test_a_grouped_log_slo_over_max_series_is_no_data(config: Path) -> None:
    from sentinel.config import load_config
    from sentinel.evaluate.wiring import build_engine
    from sentinel.rules.loader import load_rules

    config.write_text(config.read_text().replace("retries: 2}", "retries: 2, max_series: 2}"))
    loaded = load_config(config)
    engine = build_engine(loaded)
    try:
        report = await engine.evaluate_once(list(load_rules(loaded).slos), T0)
    finally:
        for source in engine.sources.values():
            await source.close()
    by_slo = {r.slo: r for r in report.results}
    # prod: bad and total, canary: total only (no fallbacks there): 3 series > 2.
    grouped = by_slo["fallback-by-provider"]
    assert grouped.status.value == "no_data"
    assert "loki bad_response: too many series (3 > max_series 2)" in grouped.reason
    assert by_slo["fallback-answer-rate-logs"].status.value == "breach"  # 7 % > 5 %
    assert engine.sources["loki"].health.status == "unhealthy"


def test_check_notes_a_grouped_log_slo_over_max_series_without_calling_loki_unreachable(
    capsys: pytest.CaptureFixture[str], config: Path, loki: FakeLoki
) -> None:
    import time

    # `check` counts series now: lines of the last minute, as in the evaluation above.
    stream = {"app": "chatbot-backend", "namespace": "chatbot"}
    now = time.time()
    loki.push({**stream, "env": "prod"}, [(now - 60, line("snippet-fallback"))], "chatbot")
    loki.push({**stream, "env": "canary"}, [(now - 60, line("llm-summary"))], "chatbot")
    config.write_text(config.read_text().replace("retries: 2}", "retries: 2, max_series: 2}"))
    code = main(["check", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "unreachable" not in err
    assert "logs.yaml:26: slos[2].group_by: the query returns 3 series now" in err
