"""YAML loading that remembers where every value came from, within fixed bounds.

Validation errors must point at `FILE:LINE`, so alongside the plain data we return a map
from each value's path (`("slos", 2, "objective")`) to its 1-based line number.

The config and rule files are read at start and on every SIGHUP, so a broken or hostile
file must be refused quickly and with its location, never take the daemon down: a file is
bounded in size, must be UTF-8, may nest only so deep, may not repeat a key, and its
aliases (`*name`) may neither refer to themselves nor multiply the document ("billion
laughs"). The bounds are checked while the document is composed, before any alias is
expanded, so refusing a bomb costs no more than reading it.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.error import Mark

from sentinel.errors import Problem, YAMLSyntaxError
from sentinel.redact import redact_text

PathKey = tuple[str | int, ...]

# Generous for hand-written files (a thousand SLOs fit in well under 1 MB), small enough
# that reading and validating one takes moments.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Sentinel's own structures nest about 8 levels; the composer, the line index and
# pydantic all recurse, so depth is bounded far below Python's recursion limit.
MAX_DEPTH = 64
# Nodes that aliases may add by expansion, over the whole document. Sharing a block
# (`matchers: *common`) across a thousand SLOs stays far below it; nested aliases
# multiplying each other exceed it within a few levels.
MAX_ALIAS_NODES = 100_000
# Values echoed in messages are cut: a message stays one readable line.
_MAX_ECHO = 80


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


def read_yaml_file(path: str | Path, file: str | None = None, what: str = "file") -> LocatedYAML:
    """Read, decode and parse one YAML file; `file` is the name shown in problems.

    Every way the file can be unusable (missing, a directory, too big, not UTF-8, not
    YAML, too deep, an alias bomb) raises YAMLSyntaxError with a located problem.
    """
    shown = str(path) if file is None else file
    return load_yaml(_read_text(Path(path), shown, what), shown)


def load_yaml(text: str, file: str) -> LocatedYAML:
    """Parse one YAML document; any problem raises YAMLSyntaxError naming file and line."""
    if _FastLoader is not None:
        try:
            return _load(_FastLoader, text, file)
        except YAMLSyntaxError as exc:
            if not isinstance(exc.__cause__, _LIBYAML_REFUSALS):
                raise  # the bounds, a duplicate key, a value: the same in both parsers
            # libyaml refused what PyYAML may accept (a tab after an indentation in a
            # block scalar, a %YAML 1.3 directive): judged by PyYAML's own parser, as
            # before libyaml was used, with its messages.
    return _load(_BoundedLoader, text, file)


def _load(kind: type[_BoundedLoader], text: str, file: str) -> LocatedYAML:
    loader: _BoundedLoader | None = None
    try:
        loader = kind(text)  # the pure reader checks the characters at once
        node = loader.get_single_node()
        located = LocatedYAML(file=file, data=None)
        if node is not None:
            _index(node, (), located.lines, file)
            located.data = loader.construct_document(node)
        return located
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        problem = str(exc.problem)
        if exc.context and problem.startswith("but "):  # "expected a single document ..."
            problem = f"{exc.context}, {problem}"
        raise YAMLSyntaxError(Problem(file, line, "", f"invalid YAML: {problem}")) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"invalid YAML: character U+{char:04X} is not allowed in YAML"
        raise YAMLSyntaxError(Problem(file, line, "", message)) from exc
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(Problem(file, None, "", f"invalid YAML: {exc}")) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path, file: str, what: str) -> str:
    def refuse(message: str, line: int | None = None) -> YAMLSyntaxError:
        return YAMLSyntaxError(Problem(file, line, "", message))

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise refuse(f"cannot read {what}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise refuse(f"cannot read {what}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise refuse(f"cannot read {what}: not a regular file")
        raw = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read {what}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // (1024 * 1024)
        raise refuse(f"{what} is larger than {limit} MB, the limit for config and rule files")
    try:
        # utf-8-sig: a byte-order mark some editors write is not content.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        message = (
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        )
        raise refuse(message, raw.count(b"\n", 0, exc.start) + 1) from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


if TYPE_CHECKING:
    _Loader = yaml.SafeLoader
else:
    _Loader = object


class _Bounds(_Loader):
    """Measures the document as it is composed and refuses it early (a mixin of both
    loaders below: the composing is Python in both).

    PyYAML composes an alias as a second reference to the anchored node, so composing is
    linear in the text; every consumer after it (line index, env interpolation, pydantic)
    walks the expanded tree. So the expanded size and height of each anchored node are
    recorded when it is complete, and each alias is charged with them.
    """

    def _start_bounds(self) -> None:
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (size, height)
        self._heights: list[int] = [0]  # per open node: its tallest child so far
        self._nodes = 0  # nodes of the expanded document so far
        self._alias_nodes = 0  # of which aliases added

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(event, parent, index)
        if len(self._heights) > MAX_DEPTH:
            raise _refused(f"nested more than {MAX_DEPTH} levels deep", event)
        anchor: str | None = getattr(event, "anchor", None)
        before = self._nodes
        self._heights.append(0)
        node = super().compose_node(parent, index)
        height = self._heights.pop() + 1
        self._heights[-1] = max(self._heights[-1], height)
        self._nodes += 1
        if anchor is not None:
            self._anchored[anchor] = (self._nodes - before, height)
        return node

    def _compose_alias(
        self, event: yaml.AliasEvent, parent: yaml.Node | None, index: int
    ) -> yaml.Node | None:
        name = str(event.anchor)
        if name in self.anchors and name not in self._anchored:
            raise _refused(f"alias *{name} refers to a node that contains it", event)
        node = super().compose_node(parent, index)  # an undefined alias raises
        size, height = self._anchored[name]
        if len(self._heights) - 1 + height > MAX_DEPTH:
            message = f"alias *{name} nests the document more than {MAX_DEPTH} levels deep"
            raise _refused(message, event)
        self._heights[-1] = max(self._heights[-1], height)
        self._nodes += size
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            message = (
                f"aliases expand the document by more than {MAX_ALIAS_NODES:,} values "
                f"(*{name} alone repeats {size:,}); write the values out instead"
            )
            raise _refused(message, event)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Python refuses some scalars the YAML grammar accepts (a 5,000-digit integer,
        # the date 2024-13-45) with a bare ValueError; give it the node's line.
        try:
            value = super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            message = f"cannot read the value {_echo(node.value)}: {_reason(exc)}"
            raise ConstructorError(None, None, message, node.start_mark) from exc
        if type(value) is int and not -sys.float_info.max <= value <= sys.float_info.max:
            # Every number Sentinel reads ends up a float; float() of this raises.
            message = f"cannot read the value {_echo(node.value)}: the number is too large"
            raise ConstructorError(None, None, message, node.start_mark)
        return value


class _BoundedLoader(_Bounds, yaml.SafeLoader):
    """PyYAML's pure-Python reader, scanner and parser."""

    def __init__(self, text: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._start_bounds()


_FastLoader: type[_BoundedLoader] | None = None
_LIBYAML_REFUSALS: tuple[type[Exception], ...] = ()
if yaml.__with_libyaml__ and not TYPE_CHECKING:
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.cyaml import CParser
    from yaml.resolver import Resolver

    class _LibyamlLoader(_Bounds, Composer, CParser, SafeConstructor, Resolver):
        """libyaml scans and parses (~8x faster: 1,300 SLOs' files 2.6 s -> 0.33 s);
        composing, with the bounds, stays in Python."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_bounds()

    _FastLoader = _LibyamlLoader
    _LIBYAML_REFUSALS = (
        yaml.scanner.ScannerError,
        yaml.parser.ParserError,
        yaml.reader.ReaderError,
    )


def _refused(message: str, event: yaml.Event) -> ComposerError:
    return ComposerError(None, None, message, cast(Mark, event.start_mark))


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return "the integer is too long"
    return str(exc)


def _echo(value: object) -> str:
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 4] + "...'"


def _index(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in first and key_node.tag != "tag:yaml.org,2002:merge":
                # YAML forbids it and PyYAML would silently keep the last one: a second
                # `sli:` in a rule would quietly replace the first.
                message = f"duplicate key {_echo(key)} (first at line {first[key]})"
                raise YAMLSyntaxError(Problem(file, line, format_path(path), message))
            first.setdefault(key, line)
            child = (*path, key)
            _index(value_node, child, lines, file)
            # Point errors about a key (e.g. "unknown key") at the key's own line.
            lines[child] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*path, index), lines, file)


def pydantic_problems(
    located: LocatedYAML, errors: Iterable[Mapping[str, Any]], secrets: frozenset[str] = frozenset()
) -> list[Problem]:
    """Translate pydantic's error list into located problems.

    The value given is echoed in the message, except under a key named in `secrets`: a
    token typed as a number must not reach the log or `/health/detailed`.
    """
    problems = []
    for err in errors:
        loc = _data_path(located.data, [p for p in err["loc"] if not _is_union_tag(p)])
        hide = any(part in secrets for part in loc)
        problems.append(located.problem(loc, _message(err, echo=not hide)))
    return problems


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the validator name ("function-after[...]") into loc for some validators.
    return isinstance(part, str) and (("[" in part and "]" in part) or part.startswith("function-"))


def _message(err: Mapping[str, Any], echo: bool = True) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the rule-file reference in README.md)"
    if kind == "missing":
        return "required field is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if not echo:
        return msg
    if "(got " in msg or "got " in msg.split(",")[-1]:
        return msg
    if "input" in err and not isinstance(err["input"], dict | list):
        return f"{msg} (got {_echo_input(err['input'])})"
    return msg


def _echo_input(value: object) -> str:
    try:
        text = redact_text(repr(value))  # `url: ftp://…?token=…` is echoed without the token
    except ValueError:  # an int too long to print
        return "a very long number"
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


def _data_path(data: Any, loc: list[str | int]) -> tuple[str | int, ...]:
    """pydantic's error location mapped onto the document: a discriminated union (the
    notifiers, keyed by `type`) inserts its tag (`notifiers.am.alertmanager.urls`), which
    is no key of the file; drop it so the path and line name the field itself."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)
