"""The run filter language of ``mlhub runs list --filter`` and ``TrackingService.list_runs(filter=...)``.

::

    metrics.f1 > 0.9 and params.lr < 0.01
    params.optimizer = 'adam' and (tags.team = "vision" or tags.team = "nlp")
    status = 'finished' and name != 'smoke'          # attributes: bare, or attributes.status

- A comparison is ``FIELD OP VALUE`` with OP one of ``= == != <> < <= > >=``; comparisons combine with ``and``
  and ``or`` (``and`` binds tighter) and parentheses. Keywords are case-insensitive.
- Fields: ``metrics.KEY`` (the key's latest value: the one at its highest step; compared with a number),
  ``params.KEY`` and ``tags.KEY`` (compared as numbers when the value is a number literal, as text when it is
  quoted), and the run's attributes ``id``, ``name``, ``experiment``, ``status``, ``job_id``, ``attempt``,
  ``parent_run_id``, ``source`` (bare or as ``attributes.X``). A key with a space or an operator character is
  written in backticks or double quotes: ``metrics.`val loss```. A run that lacks the key never matches.
- Strings are quoted with ``'`` or ``"``; a backslash escapes the quote.

:func:`parse_filter` returns a small tree (:class:`Comparison`, :class:`And`, :class:`Or`); :func:`parse_order_by`
parses ``metrics.f1 desc, name``. Errors are :class:`FilterSyntaxError` with the position (0-based) of the
problem. Pure code: the store turns the tree into SQL (:mod:`mlhub.tracking`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mlhub.domain.enums import RunStatus
from mlhub.errors import ValidationError

__all__ = ["ATTRIBUTES", "ORDER_ATTRIBUTES", "And", "Comparison", "FilterSyntaxError", "Node", "Or", "OrderKey",
           "parse_filter", "parse_order_by"]

Kind = Literal["metric", "param", "tag", "attribute"]

#: attribute -> the type of literal it compares with
ATTRIBUTES: dict[str, type] = {"id": float, "name": str, "experiment": str, "status": str, "job_id": float,
                               "attempt": float, "parent_run_id": float, "source": str}
ORDER_ATTRIBUTES = (*ATTRIBUTES, "created_at", "started_at", "ended_at")
OPS = ("=", "!=", "<", "<=", ">", ">=")
MAX_LENGTH = 4000
MAX_COMPARISONS = 64
KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,128}$")  # a metric, param or tag key, everywhere
_PREFIXES: dict[str, Kind] = {"metrics": "metric", "metric": "metric", "params": "param", "param": "param",
                              "tags": "tag", "tag": "tag", "attributes": "attribute", "attribute": "attribute",
                              "attr": "attribute", "run": "attribute"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<op>==|!=|<>|<=|>=|=|<|>)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<field>[A-Za-z_][A-Za-z0-9_]*\.(?:`[^`]*`|"[^"]*"|[A-Za-z0-9_.\-/]+))
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.]))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)


class FilterSyntaxError(ValidationError):
    """A filter or order-by that cannot be parsed; ``details``: ``position`` (0-based) and the ``text``."""

    code = "filter_syntax"

    def __init__(self, problem: str, text: str, position: int) -> None:
        near = text[position:position + 20]
        where = f"at position {position} (near {near!r})" if near.strip() else f"at position {position} (the end)"
        super().__init__(f"invalid filter: {problem} {where}",
                         details={"problem": problem, "position": position, "text": text})
        self.position = position


@dataclass(frozen=True)
class Comparison:
    kind: Kind
    key: str
    op: str                 # one of OPS (``==`` and ``<>`` are normalised to ``=`` and ``!=``)
    value: float | str      # a float when the literal was a number, else the unquoted string
    position: int = 0

    def __str__(self) -> str:
        value = _num(self.value) if isinstance(self.value, float) else "'" + self.value.replace("'", "\\'") + "'"
        return f"{_field(self.kind, self.key)} {self.op} {value}"


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]

    def __str__(self) -> str:
        return " and ".join(f"({i})" if isinstance(i, Or) else str(i) for i in self.items)


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]

    def __str__(self) -> str:
        return " or ".join(str(i) for i in self.items)


Node = Comparison | And | Or


@dataclass(frozen=True)
class OrderKey:
    kind: Kind
    key: str
    descending: bool = False

    def __str__(self) -> str:
        return _field(self.kind, self.key) + (" desc" if self.descending else " asc")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    if not isinstance(text, str):
        raise ValidationError(f"a filter is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"longer than {MAX_LENGTH} characters", text, MAX_LENGTH)
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            what = "unterminated string" if text[pos] in "'\"" else f"unexpected character {text[pos]!r}"
            raise FilterSyntaxError(what, text, pos)
        if m.lastgroup != "ws":
            out.append(_Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.comparisons = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, problem: str, tok: _Tok | None = None):
        raise FilterSyntaxError(problem, self.text, (tok or self.tok).pos)

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "word" and self.tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def expr(self) -> Node:
        items = [self.term()]
        while self.keyword("or"):
            items.append(self.term())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.keyword("and"):
            items.append(self.factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def factor(self) -> Node:
        if self.tok.kind == "lparen":
            opened = self.tok
            self.i += 1
            node = self.expr()
            if self.tok.kind != "rparen":
                self.fail(f"expected ')' to close the '(' at position {opened.pos}")
            self.i += 1
            return node
        return self.comparison()

    def field(self) -> tuple[Kind, str, _Tok]:
        tok = self.tok
        if tok.kind == "field":
            prefix, key = tok.text.split(".", 1)
            kind = _PREFIXES.get(prefix.lower())
            if kind is None:
                self.fail(f"unknown field prefix {prefix!r}: use metrics., params., tags. or attributes.")
            if key[:1] in "`\"":
                key = key[1:-1]
        elif tok.kind == "word" and tok.text.lower() not in ("and", "or", "asc", "desc"):
            kind, key = "attribute", tok.text
            if key.lower() in _PREFIXES:
                self.fail(f"{key!r} needs a key: {key}.KEY")
        else:
            self.fail("expected a field such as metrics.f1, params.lr, tags.team or status")
        if kind == "attribute":
            key = key.lower()
        elif not KEY_RE.match(key):
            self.fail(f"invalid key {key!r}: 1-128 of letters, digits, space, '_', '.', '-', '/'")
        self.i += 1
        return kind, key, tok

    def comparison(self) -> Comparison:
        kind, key, start = self.field()
        if kind == "attribute" and key not in ATTRIBUTES:
            self.fail(f"unknown attribute {key!r} (one of {', '.join(ATTRIBUTES)}; metrics, params and tags "
                      f"need their prefix: metrics.{key})", start)
        if self.tok.kind != "op":
            self.fail("expected a comparison operator (= != < <= > >=)")
        op = {"==": "=", "<>": "!="}.get(self.tok.text, self.tok.text)
        self.i += 1
        vtok = self.tok
        if vtok.kind == "number":
            value: float | str = float(vtok.text)
        elif vtok.kind == "string":
            value = re.sub(r"\\(.)", r"\1", vtok.text[1:-1])
        elif vtok.kind == "word":
            self.fail(f"a text value is quoted: '{vtok.text}'")
        else:
            self.fail("expected a value: a number or a quoted string")
        self.i += 1
        want = float if kind == "metric" else ATTRIBUTES.get(key) if kind == "attribute" else None
        if want is float and not isinstance(value, float):
            self.fail(f"{_field(kind, key)} compares with a number", vtok)
        if want is str and not isinstance(value, str):
            self.fail(f"{_field(kind, key)} compares with a quoted string", vtok)
        if kind == "attribute" and key == "status" and value not in {s.value for s in RunStatus}:
            self.fail(f"unknown run status {value!r}: one of {', '.join(s.value for s in RunStatus)}", vtok)
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            self.fail(f"more than {MAX_COMPARISONS} comparisons", start)
        return Comparison(kind, key, op, value, start.pos)


def parse_filter(text: str | None) -> Node | None:
    """The tree of a filter, or None for an empty one. :class:`FilterSyntaxError` says what and where."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    p = _Parser(text)
    node = p.expr()
    if p.tok.kind != "end":
        p.fail("expected 'and', 'or' or the end" if p.tok.kind != "rparen" else "unbalanced ')'")
    return node


def parse_order_by(text: str | None) -> tuple[OrderKey, ...]:
    """``metrics.f1 desc, params.lr, name asc`` -> order keys (ascending unless ``desc``)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return ()
    p = _Parser(text)
    keys = []
    while True:
        kind, key, start = p.field()
        if kind == "attribute" and key not in ORDER_ATTRIBUTES:
            p.fail(f"cannot order by attribute {key!r} (one of {', '.join(ORDER_ATTRIBUTES)})", start)
        descending = p.keyword("desc")
        if not descending:
            p.keyword("asc")
        keys.append(OrderKey(kind, key, descending))
        if p.tok.kind == "comma":
            p.i += 1
            continue
        if p.tok.kind != "end":
            p.fail("expected ',', 'asc', 'desc' or the end")
        return tuple(keys)


def _field(kind: Kind, key: str) -> str:
    if kind == "attribute":
        return key
    quoted = key if re.fullmatch(r"[A-Za-z0-9_.\-/]+", key) else f"`{key}`"
    return f"{kind}s.{quoted}"


def _num(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
