"""The ONNX exports that ship beside each trained built-in (``make zoo-onnx``): what a runtime-only install runs.

They must be what a fresh export of the shipped checkpoint gives today, or a retrained built-in would run its old
weights on every install without PyTorch. And asking for a built-in by name must never need PyTorch.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from emonas_edge.export.metadata import read_metadata
from emonas_edge.zoo import builtin_models

TRAINED = [name for name, e in builtin_models().items() if e.weights is not None]
STALE = "models/{name}.onnx is not what the checkpoint exports today: rerun `make zoo-onnx`"


def _graph(path) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    m = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return [n.op_type for n in m.graph.node], weights, read_metadata(m)


def test_every_trained_builtin_ships_its_exports():
    assert TRAINED, "no trained built-in found"
    for name in TRAINED:
        entry = builtin_models()[name]
        assert entry.onnx is not None, f"{name}: no models/{name}.onnx (run `make zoo-onnx`)"
        assert entry.onnx_int8 is not None, f"{name}: no models/{name}.int8.onnx (run `make zoo-onnx`)"
    untrained = [e for e in builtin_models().values() if e.weights is None]
    assert all(e.onnx is None for e in untrained), "an untrained built-in must not ship an export"


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_shipped_onnx_equals_a_fresh_export(name, cli, tmp_path):
    r = cli("export", "--genotype", name, "--output", tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    ops, weights, meta = _graph(tmp_path / f"{name}.onnx")
    s_ops, s_weights, s_meta = _graph(builtin_models()[name].onnx)
    assert s_ops == ops and s_meta == meta, STALE.format(name=name)
    assert s_weights.keys() == weights.keys(), STALE.format(name=name)
    for k, v in weights.items():
        assert np.array_equal(s_weights[k], v), STALE.format(name=name) + f" (initializer {k})"


@pytest.mark.parametrize("name", TRAINED)
def test_shipped_int8_agrees_with_its_fp32_on_real_faces(name, shared):
    """The gate ran when ``make zoo-onnx`` wrote it (PublicTest, <= 1 point); here: it is INT8, it is this model,
    and it still agrees with the shipped fp32 on real faces (97-98% at shipping)."""
    import onnxruntime as ort

    from emonas_edge.config import config_from_dict
    from emonas_edge.data.datasets import load_dataset
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.export.metadata import graph_precision

    entry = builtin_models()[name]
    fp32, int8 = onnx.load(str(entry.onnx)), onnx.load(str(entry.onnx_int8))
    assert graph_precision(int8) == "int8" and graph_precision(fp32) == "fp32"
    assert read_metadata(int8)["config"] == read_metadata(fp32)["config"]
    config = config_from_dict(__import__("json").loads(read_metadata(fp32)["config"]))
    ds = load_dataset(shared / "datasets" / "fer2013" / "publictest", config, limit_per_class=40)
    x = Preprocessor(config).normalize(ds.images)
    tops = []
    for path in (entry.onnx, entry.onnx_int8):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tops.append(np.concatenate([s.run(None, {"input": x[i : i + 64]})[0] for i in range(0, len(x), 64)]).argmax(1))
    assert (tops[0] == tops[1]).mean() >= 0.93, f"{name}: INT8 agrees with fp32 on {(tops[0] == tops[1]).mean():.1%}"


_NO_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "onnxscript", "onnxsim", "onnxslim"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


def test_a_builtin_by_name_runs_in_onnx_runtime_without_pytorch(tmp_path):
    """The library API, with PyTorch unimportable: a built-in name loads its shipped export (copied into the
    cache, where derived precisions may go) for every engine, and what needs PyTorch says which extra."""
    code = _NO_TORCH + (
        "import numpy as np\n"
        "from emonas_edge.runtime import load_backend\n"
        "from emonas_edge.errors import MissingDependency\n"
        "for engine in ('torch', 'auto'):\n"
        "    b = load_backend('emonas-macro-lite', engine=engine)\n"
        "    print(engine, b.name, b.trained, b.run_all(np.zeros((2, 1, 48, 48), np.float32), 2).shape)\n"
        "import emonas_edge as ee\n"
        "try:\n"
        "    ee.load_model('emonas-macro-lite')\n"
        "except MissingDependency as e:\n"
        "    print('refused:', e)\n"
    )
    env = {"EMONAS_EDGE_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("torch ") and "True (2, 7)" in lines[0] and "onnx" in lines[0].lower(), r.stdout
    assert lines[1].startswith("auto ") and "True (2, 7)" in lines[1], r.stdout
    assert "emonas-edge[train]" in lines[2], r.stdout
    cached = list((tmp_path / "cache").rglob("*.onnx"))
    assert {p.name for p in cached} == {"emonas-macro-lite.onnx", "emonas-macro-lite.int8.onnx"}
