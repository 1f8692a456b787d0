"""DARTS-style cell genotypes: parsing (JSON lists or DARTS' ``Genotype(...)`` text) and validation.

A cell has two inputs (the outputs of the two previous cells, indices 0 and 1) and one
intermediate node per pair of operations; node ``i`` (0-based) may read any state with index
``< i + 2``. The cell output concatenates the states listed in ``*_concat``. The text form
is read with :mod:`ast` and never evaluated, because genotype files come from other people.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .errors import UserError

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict:
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for op, _ in self.normal + self.reduce:
            hist[op] = hist.get(op, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_darts_text(self) -> str:
        def edges(es):
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in es) + "]"

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )


CELL_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _edges(value, key: str) -> tuple[Edge, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"genotype '{key}' must be a non-empty list of [op_name, input_index] pairs")
    out = []
    for n, item in enumerate(value):
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
        ):
            raise UserError(f"genotype '{key}' entry {n} must be [op_name, input_index], got {item!r}")
        out.append((item[0], int(item[1])))
    return tuple(out)


def _concat(value, key: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"genotype '{key}' must be a non-empty list of state indices")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"genotype '{key}' must hold integers, got {list(value)!r}")
    return tuple(int(v) for v in value)


def genotype_from_dict(d: dict) -> Genotype:
    missing = [k for k in CELL_KEYS if k not in d]
    if missing:
        raise UserError(f"genotype is missing {', '.join(repr(k) for k in missing)}")
    g = Genotype(
        normal=_edges(d["normal"], "normal"),
        normal_concat=_concat(d["normal_concat"], "normal_concat"),
        reduce=_edges(d["reduce"], "reduce"),
        reduce_concat=_concat(d["reduce_concat"], "reduce_concat"),
    )
    validate_genotype(g)
    return g


# The operation names genotypes may use, with what each does. The implementations live in ``nn/ops.py``
# (which needs PyTorch); this table lets configs be validated and ``emonas-edge ops`` list them without
# importing it (the ONNX Runtime pipeline never does). ``nn/ops.py`` refuses to import if the two disagree.
OP_DESCRIPTIONS: dict[str, str] = {
    "none": "zero: the edge is absent",
    "max_pool_3x3": "3x3 max pooling",
    "avg_pool_3x3": "3x3 average pooling (padding not counted)",
    "skip_connect": "identity, or factorized reduce when the edge halves the resolution",
    "sep_conv_3x3": "two 3x3 depthwise-separable convolutions",
    "sep_conv_5x5": "two 5x5 depthwise-separable convolutions",
    "sep_conv_7x7": "two 7x7 depthwise-separable convolutions",
    "dil_conv_3x3": "3x3 depthwise-separable convolution, dilation 2",
    "dil_conv_5x5": "5x5 depthwise-separable convolution, dilation 2",
    "conv_7x1_1x7": "factorised 7x7: a 1x7 then a 7x1 convolution",
    "conv_1x1": "ReLU-conv1x1-BN",
    "conv_3x3": "ReLU-conv3x3-BN",
}
OP_NAMES = tuple(OP_DESCRIPTIONS)


def validate_genotype(g: Genotype) -> None:
    known = list(OP_NAMES)
    for kind in ("normal", "reduce"):
        edges = getattr(g, kind)
        if len(edges) % 2:
            raise UserError(
                f"genotype '{kind}' has {len(edges)} operations: each node takes exactly two, so the count must be even"
            )
        for n, (op, idx) in enumerate(edges):
            node = n // 2
            if op not in known:
                raise UserError(f"unknown operation {op!r} in '{kind}' (node {node}); known: {', '.join(known)}")
            if not 0 <= idx < node + 2:
                raise UserError(
                    f"'{kind}' node {node} reads input {idx}, out of range: node {node} may read 0..{node + 1}"
                )
        concat = getattr(g, f"{kind}_concat")
        states = len(edges) // 2 + 2
        if kind == "reduce" and any(c in (0, 1) for c in concat):
            raise UserError(
                f"'reduce_concat' {list(concat)} lists a cell input (0 or 1): "
                "a reduction cell's inputs are at the previous "
                "resolution, so only its nodes (2 and up) can be concatenated"
            )
        bad = [c for c in concat if not 0 <= c < states]
        if bad or len(set(concat)) != len(concat):
            raise UserError(
                f"'{kind}_concat' {list(concat)} is invalid: indices must be distinct and within 0..{states - 1} "
                f"({len(edges) // 2} nodes)"
            )
    if len(g.normal) != len(g.reduce):
        # Allowed by the network code, but worth catching: it is almost always a copy-paste slip.
        pass


# --------------------------------------------------------------------------- DARTS text form


class _TextError(Exception):
    pass


def _literal(node: ast.AST):
    """Evaluate the tiny literal subset a DARTS genotype uses: str, int, lists/tuples, range(a, b)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        args = [_literal(a) for a in node.args]
        if not (1 <= len(args) <= 3 and all(type(a) is int and abs(a) <= 1000 for a in args)):
            raise _TextError("range() takes 1 to 3 integers between -1000 and 1000")
        if len(args) == 3 and args[2] == 0:
            raise _TextError("range() step must not be zero")
        r = range(*args)
        if len(r) > 64:
            raise _TextError("range() is too long for a cell")
        return list(r)
    raise _TextError(
        f"unsupported expression ({type(node).__name__}); only strings, integers, lists, tuples and range() are read"
    )


def _nesting_ok(text: str, limit: int) -> bool:
    """Brackets and unary-minus runs deeper than ``limit`` are not a genotype (and would exhaust
    the parser's recursion)."""
    depth = run = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > limit:
                return False
        elif ch in ")]}":
            depth -= 1
        if ch in "-+~":
            run += 1
            if run > limit:
                return False
        elif not ch.isspace():
            run = 0
    return True


def _genotype_calls(tree: ast.AST) -> list[tuple[str | None, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Name) and call.func.id == "Genotype":
                name = node.targets[0].id if isinstance(node.targets[0], ast.Name) else None
                found.append((name, call))
    if not found:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Genotype":
                found.append((None, node))
    return found


def parse_darts_text(text: str, select: str | None = None, source: str = "text") -> tuple[str | None, Genotype]:
    """Parse ``Genotype(normal=[...], normal_concat=range(2, 6), ...)`` without evaluating it.

    The text may hold assignments such as ``DARTS_V2 = Genotype(...)``; with several, ``select``
    picks one by variable name. Returns ``(variable name or None, genotype)``.
    """
    if not _nesting_ok(text, 32):
        raise UserError(f"{source} is nested deeper than 32 levels, which no genotype is; refusing to parse it")
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        raise UserError(
            f"{source} is neither genotype JSON nor a DARTS Genotype(...) expression: {e.msg} (line {e.lineno})"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise UserError(f"{source} is too deeply nested or too large to be a genotype") from None  # parser recursion
    calls = _genotype_calls(tree)
    if not calls:
        raise UserError(f"{source} holds no Genotype(...) expression")
    if select is not None:
        chosen = [c for c in calls if c[0] == select]
        if not chosen:
            names = ", ".join(n for n, _ in calls if n) or "none named"
            raise UserError(f"{source} has no genotype named {select!r} (found: {names})")
        calls = chosen
    elif len(calls) > 1:
        names = ", ".join(n or "?" for n, _ in calls)
        raise UserError(f"{source} holds {len(calls)} genotypes ({names}): pick one with --select NAME")
    name, call = calls[0]
    if call.args:
        raise UserError(f"{source}: write Genotype(...) with keyword arguments (normal=..., reduce=...)")
    keywords = [kw.arg for kw in call.keywords]  # None for **unpacking
    repeated = sorted({n for n in keywords if n is not None and keywords.count(n) > 1})
    if repeated or None in keywords:
        raise UserError(f"{source}: Genotype(...) repeats or unpacks keyword(s) {', '.join(repeated) or '**'}")
    try:
        fields = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg is not None}  # all named (above)
    except _TextError as e:
        raise UserError(f"{source}: cannot read genotype: {e}") from None
    except RecursionError:
        raise UserError(f"{source} is too deeply nested to be a genotype") from None
    unknown = set(fields) - set(CELL_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown Genotype field(s) {', '.join(sorted(unknown))}")
    return name, genotype_from_dict(fields)
