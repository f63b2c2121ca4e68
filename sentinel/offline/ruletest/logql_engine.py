"""The LogQL subset Sentinel emits, parsed and evaluated like Loki 2.9 does (used by
`sentinel test` and by the protocol-faithful Loki server in tests/).

Grammar (anything else is refused with Loki's own 400 wording):

    expr     := or_expr
    or_expr  := div_expr ("or" div_expr)*
    div_expr := atom ("/" atom)*
    atom     := "(" expr ")" | agg | label_replace | range_fn | number
    agg      := "sum" ["by" "(" labels ")"] "(" expr ")" ["by" "(" labels ")"]
    range_fn := ("count_over_time" | "rate") "(" selector stage* "[" duration "]" ")"
    selector := "{" matcher ("," matcher)* "}"         matcher ops: = != =~ !~
    stage    := "|" "json" | "|" label op value | "|=" string | "!=" string
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.offline.ruletest.tokens import Tok, TokenParser
from sentinel.offline.ruletest.tokens import tokenize as tokenize_with
from sentinel.units import parse_duration

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]

TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<duration>(?:\d+(?:ms|s|m|h|d))+)(?![a-zA-Z_])'
    r"|(?P<number>\d+(?:\.\d+)?)|(?P<op>=~|!~|!=|\|=|>=|<=|==|[{}()\[\],|/=<>])"
    r"|(?P<ident>[a-zA-Z_][a-zA-Z0-9_]*))"
)


class LogQLError(Exception):
    """Answered as HTTP 400 with this text, like Loki."""


@dataclass
class Entry:
    ts_ns: int
    line: str
    stream: dict[str, str]


def _token_error(col: int, char: str) -> LogQLError:
    return LogQLError(f"parse error at line 1, col {col}: syntax error: unexpected {char!r}")


def tokenize(query: str) -> list[Tok]:
    return tokenize_with(TOKEN, query, _token_error, "$end")


@dataclass
class Stage:
    kind: str  # json | label | line_contains | line_not_contains
    name: str = ""
    op: str = ""
    value: str = ""


@dataclass
class RangeFn:
    fn: str
    matchers: list[tuple[str, str, str]]
    stages: list[Stage]
    window: float


@dataclass
class Agg:
    by: list[str] | None
    inner: Any


@dataclass
class BinOp:
    op: str
    left: Any
    right: Any


@dataclass
class LabelReplace:
    inner: Any
    dst: str
    replacement: str
    src: str
    regex: str


class Parser(TokenParser):
    def error(self, tok: Tok, expected: str | None) -> LogQLError:
        where = f"parse error at line 1, col {tok.col}: syntax error: unexpected {tok.text}"
        return LogQLError(f"{where}, expecting {expected}" if expected else where)

    def parse(self) -> Any:
        node = self.expr()
        if self.peek().kind != "eof":
            tok = self.peek()
            raise LogQLError(
                f"parse error at line 1, col {tok.col}: syntax error: unexpected {tok.text}"
            )
        return node

    def expr(self) -> Any:
        node = self.div()
        while self.peek().text == "or":
            self.take("or")
            node = BinOp("or", node, self.div())
        return node

    def div(self) -> Any:
        node = self.atom()
        while self.peek().text == "/":
            self.take("/")
            node = BinOp("/", node, self.atom())
        return node

    def atom(self) -> Any:
        tok = self.peek()
        if tok.text == "(":
            self.take("(")
            node = self.expr()
            self.take(")")
            return node
        if tok.text == "sum":
            return self.agg()
        if tok.text == "label_replace":
            return self.label_replace()
        if tok.text in ("count_over_time", "rate"):
            return self.range_fn()
        raise LogQLError(
            f"parse error at line 1, col {tok.col}: syntax error: unexpected {tok.text}"
        )

    def agg(self) -> Agg:
        by, inner = self.sum_by(self.expr)
        return Agg(None if by is None else list(by), inner)

    def label_replace(self) -> LabelReplace:
        self.take("label_replace")
        self.take("(")
        inner = self.expr()
        args = []
        for _ in range(4):
            self.take(",")
            args.append(unquote(self.take(kind="string").text))
        self.take(")")
        return LabelReplace(inner, *args)

    def range_fn(self) -> RangeFn:
        fn = self.take().text
        self.take("(")
        matchers = self.selector()
        stages = []
        while self.peek().text in ("|", "|=", "!="):
            stages.append(self.stage())
        self.take("[")
        dur = self.take(kind="duration").text
        self.take("]")
        self.take(")")
        # Compound durations too ("5m9s"): what Sentinel renders for a gate's window.
        return RangeFn(fn, matchers, stages, parse_duration(dur))

    def selector(self) -> list[tuple[str, str, str]]:
        self.take("{")
        out = []
        while self.peek().text != "}":
            name = self.take(kind="ident").text
            op = self.take().text
            if op not in ("=", "!=", "=~", "!~"):
                raise LogQLError(f"parse error : syntax error: unexpected {op}")
            out.append((name, op, unquote(self.take(kind="string").text)))
            if self.peek().text == ",":
                self.take(",")
        self.take("}")
        if not out:
            raise LogQLError(
                "parse error : queries require at least one regexp or equality matcher that "
                'does not have an empty-compatible value. For instance, app=~".*" does not '
                'meet this requirement, but app=~".+" will'
            )
        return out

    def stage(self) -> Stage:
        tok = self.take()
        if tok.text in ("|=", "!="):
            kind = "line_contains" if tok.text == "|=" else "line_not_contains"
            return Stage(kind, value=unquote(self.take(kind="string").text))
        nxt = self.take()
        if nxt.text == "json":
            return Stage("json")
        if nxt.kind != "ident":
            raise LogQLError(
                f"parse error at line 1, col {nxt.col}: syntax error: unexpected {nxt.text}"
            )
        op = self.take().text
        value_tok = self.take()
        if op not in ("=", "!=", "=~", "!~", ">", ">=", "<", "<=", "=="):
            raise LogQLError(
                f"parse error at line 1, col {value_tok.col}: syntax error: unexpected {op}"
            )
        value = unquote(value_tok.text) if value_tok.kind == "string" else value_tok.text
        return Stage("label", nxt.text, op, value)


def unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return str(json.loads(text, strict=False))  # a raw tab is fine in LogQL, not in JSON


@dataclass
class LogQuery:
    matchers: list[tuple[str, str, str]]
    stages: list[Stage]


def parse(query: str) -> Any:
    parser = Parser(tokenize(query))
    if parser.peek().text == "{":
        matchers = parser.selector()
        stages = []
        while parser.peek().text in ("|", "|=", "!="):
            stages.append(parser.stage())
        parser.take(kind="eof")
        return LogQuery(matchers, stages)
    return parser.parse()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        return  # Loki's json parser skips arrays without an expression
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif value is None:
        out[prefix] = ""
    elif isinstance(value, float) and value.is_integer():
        out[prefix] = str(int(value))
    else:
        out[prefix] = str(value)


def _match(op: str, actual: str, expected: str) -> bool:
    if op in ("=", "=="):
        return actual == expected
    if op == "!=":
        return actual != expected
    if op == "=~":
        return re.fullmatch(expected, actual) is not None
    if op == "!~":
        return re.fullmatch(expected, actual) is None
    try:
        a, b = float(actual), float(expected)
    except ValueError:
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def run_pipeline(entry: Entry, stages: Sequence[Stage]) -> dict[str, str] | None:
    labels = dict(entry.stream)
    for stage in stages:
        if stage.kind == "line_contains" and stage.value not in entry.line:
            return None
        if stage.kind == "line_not_contains" and stage.value in entry.line:
            return None
        if stage.kind == "json":
            try:
                parsed = json.loads(entry.line)
                if not isinstance(parsed, dict):
                    raise ValueError("not an object")
            except ValueError:
                labels["__error__"] = "JSONParserErr"
                labels["__error_details__"] = (
                    "Value looks like object, but can't find closing '}' symbol"
                )
                continue
            extracted: dict[str, str] = {}
            _flatten("", parsed, extracted)
            for k, v in extracted.items():
                labels[k + "_extracted" if k in entry.stream else k] = v
        if stage.kind == "label" and not _match(stage.op, labels.get(stage.name, ""), stage.value):
            return None
    return labels


Select = Callable[[list[tuple[str, str, str]], int, int], list[Entry]]


def evaluate(node: Any, at_ns: int, select: Select) -> Vector:
    if isinstance(node, RangeFn):
        start = at_ns - int(node.window * 1e9)
        out: Vector = {}
        for entry in select(node.matchers, start, at_ns):
            if not (start < entry.ts_ns <= at_ns):
                continue
            extracted = run_pipeline(entry, node.stages)
            if extracted is None:
                continue
            key = tuple(sorted(extracted.items()))
            out[key] = out.get(key, 0.0) + 1.0
        if node.fn == "rate":
            out = {k: v / node.window for k, v in out.items()}
        return out
    if isinstance(node, Agg):
        inner = evaluate(node.inner, at_ns, select)
        out = {}
        for labels, value in inner.items():
            kept = tuple((k, v) for k, v in labels if node.by is not None and k in node.by)
            out[kept] = out.get(kept, 0.0) + value
        return out
    if isinstance(node, LabelReplace):
        inner = evaluate(node.inner, at_ns, select)
        out = {}
        for labels, value in inner.items():
            d = dict(labels)
            m = re.fullmatch(node.regex, d.get(node.src, ""))
            if m:
                new = m.expand(node.replacement.replace("$", "\\"))
                if new:
                    d[node.dst] = new
                else:
                    d.pop(node.dst, None)
            out[tuple(sorted(d.items()))] = value
        return out
    if isinstance(node, BinOp):
        left = evaluate(node.left, at_ns, select)
        right = evaluate(node.right, at_ns, select)
        if node.op == "or":
            return {**right, **left}
        out = {}
        for labels, value in left.items():
            if labels in right:
                denominator = right[labels]
                out[labels] = (
                    value / denominator if denominator else (math.nan if value == 0 else math.inf)
                )
        return out
    raise LogQLError("unsupported expression")


def check_errors(node: Any, vector: Vector) -> None:
    """Loki refuses to return raw series carrying a pipeline error (no aggregation)."""
    if isinstance(node, RangeFn):
        for labels in vector:
            d = dict(labels)
            if "__error__" in d:
                series = ", ".join(f'{k}="{v}"' for k, v in labels)
                raise LogQLError(
                    f"pipeline error: '{d['__error__']}' for series: '{{{series}}}'.\n"
                    "Use a label filter to intentionally skip this error. "
                    f'(e.g | __error__!="{d["__error__"]}").\n'
                    'To skip all potential errors you can match empty errors.(e.g __error__="")\n'
                    "The label filter can also be specified after unwrap. "
                    '(e.g | unwrap latency | __error__="" )\n'
                )
