"""Built-in model names -> the files in the repo's ``models/`` folder.

``models/`` is installed as ``emonas_edge/zoo_files/`` (see pyproject.toml), so ``--genotype emonas-macro``
works from a source checkout and after a plain ``pip install`` alike. A name resolves to its
genotype JSON and, when trained weights ship, to its checkpoint and to its verified ONNX export
(``<name>.onnx``; ``<name>.int8.onnx`` where INT8 passed its accuracy gate), so a runtime-only
install (no PyTorch) runs built-ins by name. ``make zoo-onnx`` writes those files; a test holds them
equal to a fresh export of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    genotype: Path
    weights: Path | None
    card: Path | None
    report: Path | None  # `emonas-edge evaluate --json` of the shipped weights on FER2013 PublicTest
    onnx: Path | None = None  # the checkpoint's verified fp32 export
    onnx_int8: Path | None = None  # its INT8 export, where it passed the accuracy gate

    def accuracy(self) -> float | None:
        """The top-1 the committed report records, None where none ships."""
        if self.report is None:
            return None
        import json

        return json.loads(self.report.read_text(encoding="utf-8")).get("accuracy")


def _zoo_dir() -> Path:
    # A source checkout (editable install) reads models/ directly; a wheel carries it as a package.
    repo = Path(__file__).resolve().parent.parent / "models"
    if repo.is_dir() and (repo.parent / "pyproject.toml").is_file():
        return repo
    return Path(__file__).resolve().parent / "zoo_files"


def builtin_models() -> dict[str, BuiltinModel]:
    root = _zoo_dir()
    out = {}
    for g in sorted(root.glob("*.json")):
        name = g.stem
        if "." in name:  # <name>.<what>.json beside a model (its evaluation report) is not a model
            continue
        files = [root / f"{name}{suffix}" for suffix in (".pt", ".md", ".publictest.json", ".onnx", ".int8.onnx")]
        out[name] = BuiltinModel(name, g, *(f if f.is_file() else None for f in files))
    return out


def builtin(name: str) -> BuiltinModel | None:
    return builtin_models().get(name)
