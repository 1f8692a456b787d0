"""The package's layers point one way: a module may import its own layer and those below, never above.

In-function imports count too: they keep start-up light, but they hid two import cycles before,
so every import anywhere in a module is read from its source with ``ast``. ``LAYERS`` is the one
place the order is written (README's layout table follows it); a new top-level module or
package must be placed in it, or this test fails.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "emonas_edge"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first. A unit is a top-level module or subpackage of emonas_edge ("__init__" is the package's own
# module, which only names the version and re-exports the public API lazily, by string).
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "__init__",
        "errors",
        "deps",
        "fileio",
        "cache",
        "rundirs",
        "threads",
        "environment",
        "genotype",
        "config",
        "zoo",
        "macs",
        "metrics",
        "viz",
    ),
    ("nn", "checkpoint"),  # networks from configs; the one checkpoint format (weights + config)
    ("data",),  # preprocessing, datasets, dynamic images
    ("faces",),  # detection and alignment, shared by export (calibration), pipeline and crop-faces
    ("export",),  # artifacts: ONNX, metadata, formats, parity, precision, TensorRT engines, ORT sessions
    ("resolve",),  # a user's name for a model (built-in, genotype, checkpoint, ONNX) -> config, model, info
    ("runtime",),  # one Backend interface over PyTorch, ONNX Runtime, TensorRT; the export cache
    ("pipeline",),  # the real-time loop
    ("train",),  # training, evaluation, LOSO, slimming
    ("profile",),  # latency, memory, power; measures artifacts, models and the pipeline
    ("search",),  # architecture search: trains supernets, times blocks
    ("cli",),
)
LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def modules_under(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names, resolving ``from ..x import y``."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, known: dict[str, Path]) -> set[str]:
    """Every module of the package that ``module`` imports, at any depth of its source."""
    path, out = known[module], set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def graph_of(root: Path) -> dict[str, set[str]]:
    known = modules_under(root)
    return {m: imports_of(m, known) - {m} for m in known}


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    return graph_of(ROOT)


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} ({unit(m)}) imports {t} ({unit(t)})"
        for m, targets in sorted(edges.items())
        for t in sorted(targets)
        if LEVEL[unit(t)] > LEVEL[unit(m)]
    ]


def unit_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for m, targets in edges.items():
        units.setdefault(unit(m), set()).update(unit(t) for t in targets if unit(t) != unit(m))
    return units


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in graph()} - set(LEVEL))
    assert not missing, f"place these in LAYERS (tests/test_layers.py): {missing}"


def test_no_module_imports_a_higher_layer():
    wrong = upward(graph())
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    assert not cycles(graph()), f"module import cycles: {cycles(graph())}"


def test_no_import_cycle_between_packages():
    assert not cycles(unit_graph(graph())), f"package import cycles: {cycles(unit_graph(graph()))}"


def test_the_checker_finds_what_function_bodies_hide(tmp_path):
    """The two cycles this file guards against hid in function bodies; a package built to have them is caught."""
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "export/__init__.py": "",
        "export/precision.py": "def f():\n    from ..profile.models import g\n",
        "profile/__init__.py": "",
        "profile/models.py": "from ..export import precision\n\ndef g():\n    import emonas_edge.runtime.base\n",
        "runtime/__init__.py": "",
        "runtime/base.py": "def load():\n    from .tensorrt import Trt\n",
        "runtime/tensorrt.py": "from .base import load\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text, encoding="utf-8")
    edges = graph_of(pkg)
    assert edges["emonas_edge.profile.models"] == {"emonas_edge.export.precision", "emonas_edge.runtime.base"}
    assert upward(edges) == ["emonas_edge.export.precision (export) imports emonas_edge.profile.models (profile)"]
    assert sorted(cycles(edges)) == [
        ["emonas_edge.export.precision", "emonas_edge.profile.models"],
        ["emonas_edge.runtime.base", "emonas_edge.runtime.tensorrt"],
    ]
    assert cycles(unit_graph(edges)) == [["export", "profile"]]
