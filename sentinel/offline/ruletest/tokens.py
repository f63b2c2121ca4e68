"""What the in-process PromQL and LogQL parsers share: a regex tokenizer and a
recursive-descent cursor with `sum [by (...)] (...) [by (...)]`. Each parser supplies its
own token pattern and the wording of its errors (Loki's, for the LogQL one)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    col: int  # 1-based column


def tokenize(
    pattern: re.Pattern[str], query: str, error: Callable[[int, str], Exception], eof: str
) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(query):
        if not query[pos:].strip():
            break
        match = pattern.match(query, pos)
        if match is None or match.end() == pos:
            raise error(pos + 1, query[pos])
        kind = match.lastgroup or "op"
        out.append(Tok(kind, match.group(kind), match.start(kind) + 1))
        pos = match.end()
    out.append(Tok("eof", eof, len(query) + 1))
    return out


class TokenParser:
    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks
        self.pos = 0

    def error(self, tok: Tok, expected: str | None) -> Exception:
        raise NotImplementedError

    def peek(self, ahead: int = 0) -> Tok:
        return self.toks[min(self.pos + ahead, len(self.toks) - 1)]

    def take(self, text: str | None = None, kind: str | None = None) -> Tok:
        tok = self.peek()
        if (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            raise self.error(tok, text or kind)
        self.pos += 1
        return tok

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        names = []
        while self.peek().text != ")":
            names.append(self.take(kind="ident").text)
            if self.peek().text == ",":
                self.take(",")
        self.take(")")
        return tuple(names)

    def sum_by(self, inner: Callable[[], Any]) -> tuple[tuple[str, ...] | None, Any]:
        """`sum by (l) (expr)` or `sum (expr) by (l)` -> (labels or None, expr)."""
        self.take("sum")
        by = None
        if self.peek().text == "by":
            self.take("by")
            by = self.label_list()
        self.take("(")
        node = inner()
        self.take(")")
        if by is None and self.peek().text == "by":
            self.take("by")
            by = self.label_list()
        return by, node
