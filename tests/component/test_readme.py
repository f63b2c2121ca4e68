"""The README's examples work: every rule snippet passes `sentinel check` against a real
Prometheus, the rule unit-test example passes `sentinel test`, and the availability
example measures availability (it reads 1.0 when every target is up, not 0)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from sentinel.cli.main import main
from support.promserver import PrometheusServer, backfill

README = (REPO / "README.md").read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def _rule_snippets() -> list[tuple[str, str]]:
    """(name, complete rule file) for every README block that is a rule file or a list of
    SLOs; SLO-list snippets are wrapped into a minimal rule file."""
    out = []
    for index, block in enumerate(YAML_BLOCKS):
        if block.startswith("version: sentinel/v1"):
            out.append((f"block{index}-rule-file", block))
        elif block.lstrip().startswith("- name:") and "sli:" in block:
            wrapped = "version: sentinel/v1\nservice: readme\nslos:\n" + textwrap.indent(
                textwrap.dedent(block), "  "
            )
            out.append((f"block{index}-slos", wrapped))
    return out


RULE_SNIPPETS = _rule_snippets()


def test_the_readme_has_rule_snippets_to_check() -> None:
    # Guards the extraction itself: an edit that renames the fences must not turn the
    # checks below into nothing.
    assert len(RULE_SNIPPETS) >= 2
    assert any(block.startswith("rule_files:") for block in YAML_BLOCKS)


@pytest.mark.parametrize(("name", "text"), RULE_SNIPPETS, ids=[n for n, _ in RULE_SNIPPETS])
def test_every_readme_rule_snippet_passes_check(
    name: str,
    text: str,
    prometheus: PrometheusServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / f"{name}.yaml").write_text(text)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"prometheus: {{url: '{prometheus.url}'}}\nrules: [rules/*.yaml]\n"
        "notifiers: {oncall: {type: log}}\n"  # the notifier the README's example names
    )
    code = main(["check", "-c", str(config)])
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    assert "NOT checked" not in captured.out + captured.err  # syntax really was checked


def test_the_readme_rule_unit_test_example_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = next(b for b in YAML_BLOCKS if b.startswith("rule_files:"))
    text = block.replace("../../rules/chatbot.yaml", str(REPO / "rules" / "chatbot.yaml"))
    test_file = tmp_path / "readme_test.yaml"
    test_file.write_text(text)
    code = main(["test", str(test_file)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err


@pytest.fixture(scope="module")
def up_prometheus(
    tmp_path_factory: pytest.TempPathFactory, prometheus_binaries: None
) -> Iterator[PrometheusServer]:
    """Two chatbot targets scraped every 15 s for an hour ending at T=3600: `a` always
    up, `b` down for the last 10 minutes."""
    workdir = tmp_path_factory.mktemp("prometheus-up")
    data = workdir / "up.om"
    lines = ["# TYPE up gauge"]
    for step in range(241):
        ts = step * 15
        lines.append(f'up{{job="chatbot",instance="a"}} 1 {ts}')
        lines.append(f'up{{job="chatbot",instance="b"}} {0 if ts > 3000 else 1} {ts}')
    data.write_text("\n".join(lines) + "\n# EOF\n")
    server = PrometheusServer(workdir)
    backfill(data, server.storage)
    server.start()
    yield server
    server.stop()


def _availability_query() -> str:
    match = re.search(r"- name: availability\n.*?query: (.+?)\n", README, flags=re.S)
    assert match, "the README's availability example is gone"
    return match.group(1).strip()


@pytest.mark.parametrize(
    ("at", "expected_status", "expected_value"),
    [
        (2900, "ok", 1.0),  # every scrape of both targets succeeded in the 5m window
        (3600, "breach", 0.5),  # b has been down for the whole window
    ],
)
def test_the_readme_availability_example_measures_availability(
    at: int,
    expected_status: str,
    expected_value: float,
    up_prometheus: PrometheusServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    query = _availability_query()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: sentinel/v1
            service: chatbot
            slos:
              - name: availability
                sli: {{promql: {{query: '{query}'}}}}
                threshold: 0.99
                good_when: above
                window: 5m
            """
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"prometheus: {{url: '{up_prometheus.url}'}}\nrules: [rules/*.yaml]\n")
    main(["eval", "-c", str(config), "--at", str(at), "--format", "json"])
    import json

    (result,) = json.loads(capsys.readouterr().out)
    assert result["status"] == expected_status
    assert result["value"] == pytest.approx(expected_value)
