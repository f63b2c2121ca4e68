"""YAML loading that remembers where every value came from.

Validation errors must point at `FILE:LINE`, so alongside the plain data we return a map
from each value's path (`("slos", 2, "objective")`) to its 1-based line number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sentinel.errors import Problem

PathKey = tuple[str | int, ...]


@dataclass
class LocatedYAML:
    """Parsed YAML data plus the line of each node, keyed by path."""

    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """The line of the deepest existing node along `path`."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def problem(self, path: Iterable[str | int], message: str) -> Problem:
        parts = tuple(path)
        return Problem(self.file, self.line_of(parts), format_path(parts), message)


def format_path(path: Iterable[str | int]) -> str:
    """('slos', 2, 'objective') -> 'slos[2].objective'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(text: str, file: str) -> LocatedYAML:
    """Parse one YAML document; a syntax error becomes a ValueError naming file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise YAMLSyntaxError(Problem(file, line, "", f"invalid YAML: {exc.problem}")) from exc
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(Problem(file, None, "", f"invalid YAML: {exc}")) from exc
    located = LocatedYAML(file=file, data=data)
    if node is not None:
        _index(node, (), located.lines)
    return located


class YAMLSyntaxError(ValueError):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def _index(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*path, key)
            _index(value_node, child, lines)
            # Point errors about a key (e.g. "unknown key") at the key's own line.
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*path, index), lines)


def pydantic_problems(located: LocatedYAML, errors: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Translate pydantic's error list into located problems."""
    problems = []
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        message = _message(err)
        problems.append(located.problem(loc, message))
    return problems


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the validator name ("function-after[...]") into loc for some validators.
    return isinstance(part, str) and (("[" in part and "]" in part) or part.startswith("function-"))


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the rule-file reference in README.md)"
    if kind == "missing":
        return "required field is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if "(got " in msg or "got " in msg.split(",")[-1]:
        return msg
    if "input" in err and kind not in ("missing",) and not isinstance(err["input"], dict | list):
        return f"{msg} (got {err['input']!r})"
    return msg
