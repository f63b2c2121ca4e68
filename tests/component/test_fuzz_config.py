"""Fuzzing `sentinel check` with config and rule files: random YAML structures, the
shipped files with values swapped for wrong types, huge numbers, NaN/.inf, unicode and
deep nesting, byte-level damage (non-UTF-8, truncation), alias bombs, duplicate keys,
empty files and a directory in place of a file. Whatever the file, the command answers
with an exit code (0 valid, 1 refused, 2 error) and, when it refuses, only located lines
(`FILE:LINE: path: message` or `FILE: message`), never a traceback.

Most inputs go through the CLI entry in-process (fast); a few through a real
`python -m sentinel check` process. The same files sent to a running daemon by SIGHUP
are in tests/e2e/test_fuzz_reload.py.
"""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from sentinel.cli.main import main
from support.fuzz_yaml import (
    CONFIG_HEAD,
    EXAMPLE_CONFIG,
    HOSTILE,
    LOCATED,
    VALID_RULE,
    bomb,
    config_files,
    mutated_yaml,
    paths,
    replaced,
    rule_files,
)
from support.fuzzing import counted, fuzz_settings

# --- the checks -------------------------------------------------------------------------


def check_in_process(workdir: Path) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(["check", "--offline", "-c", str(workdir / "config.yaml")])
    return code, err.getvalue()


def assert_refused_with_locations(code: int, err: str) -> None:
    """Exit 0, 1 or 2; when not 0, every line located (a file name first), no traceback."""
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 0:
        return
    lines = [
        line
        for line in err.splitlines()
        if line
        and not line.startswith("note: ")
        and not re.fullmatch(r"\d+ problem\(s\) found", line)
    ]
    assert lines, f"exit {code} without saying why"
    for line in lines:
        match = LOCATED.match(line)
        assert match, f"not a located problem: {line!r}"
        assert match["rest"].strip(), line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-config")
    (path / "rules").mkdir()
    return path


def write(workdir: Path, config: bytes, rule: bytes | None) -> None:
    for old in (workdir / "rules").iterdir():
        if old.is_dir():
            old.rmdir()
        else:
            old.unlink()
    config_file = workdir / "config.yaml"
    if config_file.is_dir():
        config_file.rmdir()
    config_file.write_bytes(config)
    if rule is not None:
        (workdir / "rules" / "fuzzed.yaml").write_bytes(rule)


@given(config=config_files())
@example(config=b"")
@example(config=bomb(9).encode())
@example(config=CONFIG_HEAD.encode() + b"evaluation: {interval: .nan}\n")
@example(config=CONFIG_HEAD.encode() + b"prometheus: {url: 'http://x'}\n")
@example(config=CONFIG_HEAD.encode() + b"gate: {cache_ttl: .inf, max_in_flight: 1e400}\n")
@fuzz_settings(5.0)
@counted("config file (check)")
def test_fuzz_any_config_file_is_refused_with_located_lines_never_a_traceback(
    workdir: Path, config: bytes
) -> None:
    write(workdir, config, None)
    assert_refused_with_locations(*check_in_process(workdir))


@given(rule=rule_files())
@example(rule=b"")
@example(rule=b"version: sentinel/v1\nservice: s\nslos: [{name: a, threshold: .nan}]\n")
@example(rule=b"version: sentinel/v1\nservice: s\nslos: [{name: a, threshold: -.inf}]\n")
@fuzz_settings(5.0)
@counted("rule file (check)")
def test_fuzz_any_rule_file_is_refused_with_located_lines_never_a_traceback(
    workdir: Path, rule: bytes
) -> None:
    write(workdir, CONFIG_HEAD.encode(), rule)
    assert_refused_with_locations(*check_in_process(workdir))


@given(
    where=st.sampled_from([("config",), ("rule",), ("config", "rule")]),
    name=st.sampled_from(["a.yaml", "é.yaml", "z z.yaml"]),
)
@fuzz_settings(0.05)
@counted("directory for a file")
def test_fuzz_a_directory_in_place_of_a_file_is_refused_by_name(
    workdir: Path, where: tuple[str, ...], name: str
) -> None:
    write(workdir, CONFIG_HEAD.encode(), VALID_RULE)
    if "config" in where:
        (workdir / "config.yaml").unlink()
        (workdir / "config.yaml").mkdir()
    if "rule" in where:
        (workdir / "rules" / name).mkdir()
    code, err = check_in_process(workdir)
    assert code == 1, err
    assert_refused_with_locations(code, err)
    assert "is a directory, not a file" in err, err


def test_a_valid_pair_of_files_passes_the_same_check(workdir: Path) -> None:
    """The fuzz tests' harness does accept a good file (so their refusals mean something)."""
    write(workdir, CONFIG_HEAD.encode(), VALID_RULE)
    code, err = check_in_process(workdir)
    assert (code, err) == (0, "")


@given(
    config=st.one_of(mutated_yaml(EXAMPLE_CONFIG), HOSTILE),
    rule=st.one_of(rule_files(), st.none()),
)
@fuzz_settings(0.05)
@counted("config+rule (check process)")
def test_fuzz_the_real_command_refuses_broken_files_with_located_lines(
    workdir: Path, config: bytes, rule: bytes | None
) -> None:
    write(workdir, config, rule)
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "check", "--offline", "-c", "config.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_refused_with_locations(done.returncode, done.stderr)


def test_the_fuzz_strategies_reach_the_values_they_promise() -> None:
    """The generators can produce what the module docstring claims (no silent narrowing)."""
    assert math.isnan(yaml.safe_load(".nan"))
    data = yaml.safe_load(EXAMPLE_CONFIG)
    assert len(paths(data)) > 50
    assert replaced({"a": [1, 2]}, ("a", 1), "delete", None) == {"a": [1]}
    assert replaced({"a": 1}, ("a",), "replace", "x") == {"a": "x"}


# --- regressions found by the fuzzing ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ('"a\\nconfig.yaml:9: forged"', "config.yaml:1: a\\nconfig.yaml:9: forged: unknown key"),
        ('"\\r"', "config.yaml:1: \\r: unknown key"),
        ('"t\\L\\e[31m"', "config.yaml:1: t\\u2028\\x1b[31m: unknown key"),
    ],
    ids=["newline", "carriage-return", "line-separator-and-escape"],
)
def test_a_key_with_a_line_break_or_escape_cannot_forge_a_problem_line(
    workdir: Path, key: str, shown: str
) -> None:
    """Found by the fuzzing: an unknown key holding a newline (or U+2028, or a terminal
    escape) was echoed raw, so one problem printed as two lines — the second one any text
    the file's author chose, in the terminal, the log and /health/detailed."""
    write(workdir, f"{key}: 1\n{CONFIG_HEAD}".encode(), VALID_RULE)
    code, err = check_in_process(workdir)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        shown + " (check the spelling; see the rule-file reference in README.md)"
    ), lines
    assert "\x1b" not in err
