"""Hypothesis strategies for config and rule files: random YAML structures, the shipped
files with nodes swapped for wrong types, huge numbers, NaN/.inf, unicode or stray keys,
byte-level damage (non-UTF-8, truncation), alias bombs, deep nesting, duplicate keys and
empty files. Shared by tests/component/test_fuzz_config.py (`sentinel check`) and
tests/e2e/test_fuzz_reload.py (SIGHUP to a running daemon)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from hypothesis import strategies as st

from conftest import REPO

CONFIG_HEAD = "prometheus: {url: 'http://127.0.0.1:9'}\nrules: [rules/*.yaml]\n"
EXAMPLE_CONFIG = (REPO / "config.example.yaml").read_text()
RULE_FILES = {p.name: p.read_text() for p in sorted((REPO / "rules").glob("*.yaml"))}
# A file name (or "config" before a config field path: the rules loader does not know the
# config file's name), then a line number where there is one.
LOCATED = re.compile(r"^(?P<file>\S[^:]*\.yaml|config(?=: \w))(?::(?P<line>\d+))?: (?P<rest>.+)$")
VALID_RULE = b"""\
version: sentinel/v1
service: checkout
slos:
  - name: errors
    sli: {promql: {query: "vector(0)"}}
    threshold: 0.5
"""

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # YAML cannot hold surrogates
    max_size=40,
)
DURATIONS = st.sampled_from(
    ["0s", "-1s", "1ms", "5m", "1e309s", "nan", "inf", "99999999999999999999d", "1y", "PT5M", ""]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    DURATIONS,
    st.sampled_from(["${UNSET_FUZZ_VAR}", "${X:-", "http://", "ftp://a?token=s3cret", "é" * 300]),
)
KEYS = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "prometheus",
            "loki",
            "rules",
            "slos",
            "sli",
            "url",
            "version",
            "service",
            "threshold",
            "objective",
            "window",
            "interval",
            "gate",
            "notifiers",
            "type",
            "labels",
            "alert",
            "<<",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a parsed document (the places a mutation may hit)."""
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += paths(value, (*prefix, index))
    return out


def replaced(data: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of `data` with the node at `path` replaced, deleted or given an extra key."""
    if not path:
        return value if how == "replace" else data
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        copy = dict(data)
        if not rest and how == "delete":
            copy.pop(head, None)
        elif not rest and how == "extra":
            copy[head] = replaced(data[head], (), how, value)
            copy[f"fuzz_{len(copy)}"] = value
        else:
            copy[head] = replaced(data[head], rest, how, value)
        return copy
    copy_list = list(data)
    if not rest and how == "delete":
        del copy_list[head]
    else:
        copy_list[head] = replaced(data[head], rest, how, value)
    return copy_list


@st.composite
def mutated_yaml(draw: st.DrawFn, text: str) -> bytes:
    """A shipped file with one to three nodes swapped for random values, deleted, or
    given a stray key, dumped again as YAML."""
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(data)))
        how = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        data = replaced(data, path, how, draw(VALUES))
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=False).encode()


@st.composite
def damaged_bytes(draw: st.DrawFn, text: str) -> bytes:
    """A shipped file damaged at the byte level: truncated, bytes flipped or inserted."""
    raw = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "truncate":
            del raw[at:]
        elif kind == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif raw:
            del raw[at : at + draw(st.integers(1, 40))]
    return bytes(raw)


def bomb(levels: int) -> str:
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


HOSTILE = st.one_of(
    st.just(b""),
    st.just(b"---\n"),
    st.just(b"\xef\xbb\xbf"),
    st.integers(1, 10).map(lambda n: bomb(n).encode()),
    st.integers(1, 400).map(lambda n: ("a: " + "[" * n + "]" * n + "\n").encode()),
    st.integers(1, 400).map(lambda n: ("a: " + "{b: " * n + "1" + "}" * n + "\n").encode()),
    st.integers(1, 300).map(
        lambda n: ("a:\n" + "".join(" " * i + "- \n" for i in range(n))).encode()
    ),
    st.just(b"a: &x {b: *x}\n"),
    st.just(b"a: *undefined\n"),
    st.just(b"a: 1\na: 2\n"),
    st.just(b"--- 1\n--- 2\n"),
    st.just(b"!!python/object/apply:os.system ['true']\n"),
    st.just(b"a: !!binary ????\n"),
    st.just(b"a: 2024-13-45\n"),
    st.integers(300, 6000).map(lambda n: ("a: " + "9" * n + "\n").encode()),
    st.binary(max_size=200),
    TEXT.map(str.encode),
    VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode()),
)


def config_files() -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_yaml(EXAMPLE_CONFIG),
        damaged_bytes(EXAMPLE_CONFIG),
        HOSTILE,
        HOSTILE.map(
            lambda extra: (
                CONFIG_HEAD.encode()
                + b"x:\n"
                + b"".join(b"  " + line + b"\n" for line in extra.splitlines())
            )
        ),
    )


def rule_files() -> st.SearchStrategy[bytes]:
    shipped = st.sampled_from(sorted(RULE_FILES.values()))
    return st.one_of(
        shipped.flatmap(mutated_yaml),
        shipped.flatmap(damaged_bytes),
        HOSTILE,
    )
