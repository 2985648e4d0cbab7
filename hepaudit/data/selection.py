"""Event selection: ``data.cut = "jet_pt > 500 & abs(jet_eta) < 2"``, parsed here, never eval'd.

The config is untrusted (an audit service runs configs users submit), so the expression is
read by a small recursive-descent parser into a tree of a few node kinds and evaluated with
numpy over the chunk's flat branches. The language:

* numbers (``500``, ``1.5e3``), branch names (one value per jet), parentheses;
* ``+ - * /`` and unary ``-``; comparisons ``< <= > >= == !=``;
* ``&`` (and), ``|`` (or), ``~`` (not), binding *looser* than comparisons, so
  ``jet_pt > 500 & abs(jet_eta) < 2`` means what a physicist means (unlike numpy/Python);
* the functions ``abs sqrt log exp min max`` (``min``/``max`` of two arguments).

Precedence, loosest first: ``|``, ``&``, ``~``, comparisons, ``+ -``, ``* /``, unary ``-``.
Errors name the position in the expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from hepaudit.errors import ConfigError

FUNCTIONS: dict[str, tuple[int, Callable[..., np.ndarray]]] = {
    "abs": (1, np.abs), "sqrt": (1, np.sqrt), "log": (1, np.log), "exp": (1, np.exp),
    "min": (2, np.minimum), "max": (2, np.maximum),
}
_COMPARE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}
_ARITH: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
}
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
                    r"|(?P<op><=|>=|==|!=|[<>+\-*/&|~(),]))")


@dataclass(frozen=True)
class Node:
    """One node of a parsed cut: ``kind`` is num, name, call, neg, not, arith, cmp, and, or."""

    kind: str
    value: object = None
    args: tuple[Node, ...] = ()


class Cut:
    """A parsed selection; ``branches`` are the names it reads, ``mask(arrays)`` evaluates it."""

    def __init__(self, text: str, where: str = "data.cut") -> None:
        self.text = text
        self.where = where
        self._tokens = _tokenize(text, where)
        self._pos = 0
        self.tree = self._or()
        if self._pos < len(self._tokens):
            self._fail("unexpected " + repr(self._tokens[self._pos][1]))
        self.branches = sorted(_names(self.tree))

    # -- parsing -------------------------------------------------------------------------------
    def _peek(self) -> str | None:
        return self._tokens[self._pos][1] if self._pos < len(self._tokens) else None

    def _take(self) -> tuple[str, str, int]:
        if self._pos >= len(self._tokens):
            self._fail("the expression ends too early")
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _fail(self, why: str) -> None:
        at = self._tokens[self._pos][2] if self._pos < len(self._tokens) else len(self.text)
        raise ConfigError(f"{self.where}: {why} at position {at + 1} of {self.text!r}")

    def _left_associative(self, kind: str, ops: Collection[str], operand: Callable[[], Node],
                          keep_op: bool = True) -> Node:
        """operand (op operand)*, grouped from the left: one precedence level of the grammar."""
        node = operand()
        while self._peek() in ops:
            op = self._take()[1]
            node = Node(kind, op if keep_op else None, (node, operand()))
        return node

    def _or(self) -> Node:
        return self._left_associative("or", ("|",), self._and, keep_op=False)

    def _and(self) -> Node:
        return self._left_associative("and", ("&",), self._not, keep_op=False)

    def _not(self) -> Node:
        if self._peek() == "~":
            self._take()
            return Node("not", args=(self._not(),))
        return self._compare()

    def _compare(self) -> Node:
        return self._left_associative("cmp", _COMPARE, self._sum)

    def _sum(self) -> Node:
        return self._left_associative("arith", ("+", "-"), self._product)

    def _product(self) -> Node:
        return self._left_associative("arith", ("*", "/"), self._unary)

    def _unary(self) -> Node:
        if self._peek() == "-":
            self._take()
            return Node("neg", args=(self._unary(),))
        if self._peek() == "+":
            self._take()
            return self._unary()
        return self._atom()

    def _atom(self) -> Node:
        kind, text, _ = self._take()
        if kind == "num":
            return Node("num", float(text))
        if kind == "name":
            if self._peek() == "(":
                if text not in FUNCTIONS:
                    self._pos -= 1
                    self._fail(f"unknown function {text!r} (known: {', '.join(FUNCTIONS)})")
                self._take()
                args = [self._or()]
                while self._peek() == ",":
                    self._take()
                    args.append(self._or())
                if self._take()[1] != ")":
                    self._pos -= 1
                    self._fail("expected ')'")
                if len(args) != FUNCTIONS[text][0]:
                    self._fail(f"{text}() takes {FUNCTIONS[text][0]} argument(s), {len(args)} given")
                return Node("call", text, tuple(args))
            return Node("name", text)
        if text == "(":
            node = self._or()
            if self._take()[1] != ")":
                self._pos -= 1
                self._fail("expected ')'")
            return node
        self._pos -= 1
        self._fail(f"unexpected {text!r}")
        raise AssertionError  # unreachable: _fail raises

    # -- evaluation ------------------------------------------------------------------------------
    def mask(self, branches: Mapping[str, np.ndarray]) -> np.ndarray:
        """The selected jets (bool, one per jet) from the branches' values."""
        n = len(next(iter(branches.values()))) if branches else 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = _evaluate(self.tree, branches)
        out = np.broadcast_to(np.asarray(value), (n,))
        if out.dtype != np.bool_:
            raise ConfigError(f"{self.where}: {self.text!r} is a number, not a condition (use a comparison)")
        return np.array(out)


def _tokenize(text: str, where: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise ConfigError(f"{where}: unexpected character {text[start]!r} at position {start + 1} of {text!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    if not tokens:
        raise ConfigError(f"{where}: the selection is empty")
    return tokens


def _names(node: Node) -> set[str]:
    if node.kind == "name":
        return {str(node.value)}
    return set().union(*(_names(a) for a in node.args)) if node.args else set()


def _evaluate(node: Node, branches: Mapping[str, np.ndarray]) -> np.ndarray:
    kind = node.kind
    if kind == "num":
        return np.asarray(node.value)
    if kind == "name":
        return np.asarray(branches[str(node.value)], np.float64)
    args = [_evaluate(a, branches) for a in node.args]
    if kind == "call":
        return FUNCTIONS[str(node.value)][1](*args)
    if kind == "neg":
        return -args[0]
    if kind == "not":
        return ~_boolean(args[0])
    if kind == "arith":
        return _ARITH[str(node.value)](args[0], args[1])
    if kind == "cmp":
        return _COMPARE[str(node.value)](args[0], args[1])
    left, right = _boolean(args[0]), _boolean(args[1])
    return left & right if kind == "and" else left | right


def _boolean(value: np.ndarray) -> np.ndarray:
    if value.dtype != np.bool_:
        raise ConfigError("data.cut: & | ~ combine conditions (comparisons), not numbers")
    return value
