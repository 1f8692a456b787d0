"""ONNX export: real exports, real ONNX Runtime, real files, through the library and the console script.

Every exported graph is run in ONNX Runtime here (batch 1 and 3, or the static batch) and
compared with PyTorch independently of the library's own parity check, on models whose
BatchNorm statistics and some weights were perturbed so the logits are not near zero.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from torch import nn

from emonas_edge.config import FER2013_CLASSES, config_from_dict
from emonas_edge.errors import CheckFailed
from emonas_edge.export.metadata import read_metadata
from emonas_edge.export.onnx import export_onnx
from emonas_edge.export.parity import check_parity, parity_inputs
from emonas_edge.macs import macs_torch
from emonas_edge.nn import count_params, create_model
from emonas_edge.nn.ops import OPS
from emonas_edge.resolve import load_genotype, load_model

DARTS_V2_TEXT = """\
from collections import namedtuple
Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), \
('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], \
reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), \
('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])
"""
DARTS_V2_NORMAL = [
    ["sep_conv_3x3", 0],
    ["sep_conv_3x3", 1],
    ["sep_conv_3x3", 0],
    ["sep_conv_3x3", 1],
    ["sep_conv_3x3", 1],
    ["skip_connect", 0],
    ["skip_connect", 0],
    ["dil_conv_3x3", 2],
]

# Exercises separable, dilated, factorised and plain convolutions, pooling, and FactorizedReduce.
CELL_GENOTYPE = {
    "format": "emonas-genotype/1",
    "name": "cellnet",
    "family": "cell",
    "normal": [["sep_conv_3x3", 0], ["dil_conv_3x3", 1], ["conv_7x1_1x7", 2], ["skip_connect", 0]],
    "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["skip_connect", 1], ["avg_pool_3x3", 2], ["conv_3x3", 1]],
    "reduce_concat": [2, 3],
    "network": {"in_channels": 1, "input_size": 48, "init_channels": 8, "layers": 3},
}

TINY_GENOTYPE = {
    "name": "tiny",
    "family": "cell",
    "normal": [["conv_3x3", 0], ["skip_connect", 1], ["sep_conv_3x3", 1], ["max_pool_3x3", 2]],
    "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["conv_3x3", 1], ["skip_connect", 2], ["avg_pool_3x3", 1]],
    "reduce_concat": [2, 3],
    "network": {"in_channels": 1, "input_size": 16, "init_channels": 4, "layers": 3, "num_classes": 3},
    "classes": ["negative", "neutral", "positive"],
}


# ------------------------------------------------------------------------------------ helpers


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics/affine params and a few scaled weights, so logits are sizeable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            elif isinstance(m, nn.LayerNorm):
                m.weight.mul_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.05 * torch.randn(m.bias.shape, generator=g))
        clf = model.classifier
        clf.weight.add_(torch.randn(clf.weight.shape, generator=g) * 0.5)
        clf.bias.add_(torch.randn(clf.bias.shape, generator=g) * 0.1)
    return model.eval()


def session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def assert_matches_torch(model: nn.Module, onnx_path, input_shape, batches=(1, 3), seed=0, min_scale=1e-2):
    """Run the ONNX file in ONNX Runtime at each batch size and compare with PyTorch."""
    sess = session(onnx_path)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    for b in batches:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        got = sess.run(None, {name: x})[0]
        with torch.no_grad():
            ref = model.eval()(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape, f"batch {b}: ONNX {got.shape} vs PyTorch {ref.shape}"
        scale = float(np.abs(ref).max())
        assert scale > min_scale, f"batch {b}: logits are trivially small ({scale:.2g}); the comparison would be weak"
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4 + 1e-4 * scale, f"batch {b}: max abs diff {diff:.3g} (max |logit| {scale:.3g})"


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def graph_input_dims(path) -> list:
    proto = onnx.load(str(path))
    inits = {i.name for i in proto.graph.initializer}
    (inp,) = [i for i in proto.graph.input if i.name not in inits]
    return [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]


def visible_and_hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------- export_onnx on five networks

CASES = {
    "cell-gray48": ("cell", dict(in_channels=1, input_size=48, init_channels=8)),
    "cell-rgb64": ("cell", dict(in_channels=3, input_size=64, init_channels=6)),
    # The mirror view runs inside the graph (nn/flip.py): the artifact must average like PyTorch.
    "cell-gray48-flip": ("cell", dict(in_channels=1, input_size=48, init_channels=8, test_time_flip=True)),
    "cell-rgb112-stem2": ("cell", dict(in_channels=3, input_size=112, init_channels=4, stem_stride=2)),
    "mit-b0-gray48": ("mit", dict(in_channels=1, input_size=48)),
    "mit-small-rgb112": ("mit", dict(in_channels=3, input_size=112)),  # custom widths/depths, see below
    # the paper's ablation: the same small MiT classifying from its last stage, without the fusion block
    "mit-small-nofusion-gray48": ("mit", dict(in_channels=1, input_size=48)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(case)`` -> (config, model, ExportResult); each case is exported once per module."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("exports")

    def get(case: str):
        if case not in cache:
            family, net = CASES[case]
            net = dict(net)
            if family == "cell":
                raw = {**CELL_GENOTYPE, "name": case, "network": dict(CELL_GENOTYPE["network"])}
                if "stem_stride" in net:  # not a load_genotype override: it goes in the file
                    raw["network"]["stem_stride"] = net.pop("stem_stride")
            else:
                raw = {"name": case, "family": "mit", "network": {"variant": "b0"}}
                if "small" in case:
                    raw["network"].update(dims=[16, 32, 64, 128], depths=[1, 1, 2, 1], heads=[1, 2, 2, 4], decoder=64)
                raw["network"]["fusion"] = "nofusion" not in case
            gfile = write_json(root / f"{case}.json", raw)
            config = load_genotype(gfile, **net)
            assert config.input_size == net["input_size"] and config.in_channels == net["in_channels"]
            torch.manual_seed(0)
            model = perturb(create_model(config), seed=1)
            result = export_onnx(config, model, root / case)
            cache[case] = (config, model, result)
        return cache[case]

    return get


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c == "mit-b0-gray48" else c for c in CASES]
)
def test_export_matches_onnx_runtime(exported, case):
    config, model, result = exported(case)
    assert result.path.is_file() and result.path.name == f"{case}.onnx"
    onnx.checker.check_model(onnx.load(str(result.path)), full_check=True)
    dims = graph_input_dims(result.path)
    assert isinstance(dims[0], str), f"batch axis should be dynamic, got {dims}"
    assert dims[1:] == list(config.input_shape)
    assert_matches_torch(model, result.path, config.input_shape, batches=(1, 3))
    if config.family == "mit":  # sizes are fixed by the config: no run-time shape arithmetic in the graph
        ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
        assert not ops & {"Shape", "Gather", "Slice"}, ops


@pytest.mark.parametrize("case", list(CASES))
def test_export_metadata_and_manifest(exported, case):
    config, model, result = exported(case)
    meta = read_metadata(onnx.load(str(result.path)))
    assert json.loads(meta["classes"]) == list(config.classes) == list(FER2013_CLASSES)
    assert json.loads(meta["input_spec"]) == config.input_spec()
    assert json.loads(meta["input_spec"])["shape"][1:] == list(config.input_shape)
    assert meta["trained"] == "false"
    assert meta["family"] == config.family and meta["name"] == case
    assert int(meta["params"]) == count_params(model)
    assert config_from_dict(json.loads(meta["config"])) == config

    assert result.manifest_path.is_file() and result.manifest_path.name == f"{case}.manifest.json"
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["artifact"] == result.path.name
    assert manifest["bytes"] == result.path.stat().st_size
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert manifest["batch"] == "dynamic"
    assert manifest["model"]["macs"] == macs_torch(model, config.input_shape)
    assert manifest["model"]["input_spec"] == config.input_spec()
    parity = manifest["parity"]
    assert parity["passed"] is True
    assert parity["max_abs_diff"] <= parity["tolerance"]
    assert parity["batches"] == [8, 1]
    assert parity["top1_agreement"] == 1.0
    # No --parity-data given: the bundled face is what the check ran on.
    assert parity["inputs"].startswith("bundled astronaut face")
    simp = manifest["simplifier"]
    assert simp["requested"] == "onnxsim"
    assert simp["used"] in ("onnxsim", "onnxslim")
    if simp["used"] != "onnxsim":
        assert manifest["notes"], "falling back from onnxsim must be noted"
    # Nothing but the artifact and its manifest is left in the folder (no temporaries).
    assert visible_and_hidden_files(result.path.parent) == sorted([result.path.name, result.manifest_path.name])


# ------------------------------------------------------------------ DARTS_V2 through the CLI


@pytest.mark.slow
def test_cli_exports_darts_v2_text_genotype(cli, tmp_path):
    gfile = tmp_path / "genotypes.py"
    gfile.write_text(DARTS_V2_TEXT, encoding="utf-8")
    # the defaults a DARTS text genotype gets (no network block in the file)
    default_net = load_genotype(gfile).network
    assert default_net["layers"] == 8 and default_net["init_channels"] == 16
    # exported narrower and shallower: the parse and the graph are the same, the export 3x cheaper
    proc = cli("export", "--genotype", gfile, "--output", "out/", "--layers", "3", "--init-channels", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    out = tmp_path / "out"
    onnx_path = out / "DARTS_V2.onnx"
    assert onnx_path.is_file(), visible_and_hidden_files(out)
    assert (out / "DARTS_V2.manifest.json").is_file()

    meta = read_metadata(onnx.load(str(onnx_path)))
    assert json.loads(meta["classes"]) == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert meta["trained"] == "false"
    cfg = json.loads(meta["config"])
    assert cfg["normal"] == DARTS_V2_NORMAL and cfg["normal_concat"] == [2, 3, 4, 5]
    assert cfg["network"]["layers"] == 3 and cfg["network"]["init_channels"] == 8

    sess = session(onnx_path)
    inp = sess.get_inputs()[0]
    assert inp.shape[1:] == [1, 48, 48]
    rng = np.random.default_rng(0)
    for b in (1, 3):
        (logits,) = sess.run(None, {inp.name: rng.standard_normal((b, 1, 48, 48)).astype(np.float32)})
        assert logits.shape == (b, 7)
        assert np.isfinite(logits).all()

    manifest = json.loads((out / "DARTS_V2.manifest.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"] is True
    assert "trained" in proc.stderr.lower() or "random" in proc.stderr.lower()  # untrained-weights warning


# ------------------------------------------------------------------------------ exporters


@pytest.mark.slow
def test_both_exporters_pass_the_same_checks_and_are_recorded(tmp_path):
    config = config_from_dict(TINY_GENOTYPE)
    torch.manual_seed(0)
    model = perturb(create_model(config), seed=4)
    outs = {}
    for exporter in ("torchscript", "dynamo", "auto"):
        r = export_onnx(config, model, tmp_path / exporter, exporter=exporter)
        used = "torchscript" if exporter == "auto" else exporter
        assert r.manifest["exporter"] == {"requested": exporter, "used": used}
        assert r.parity.passed and r.notes == []
        assert graph_input_dims(r.path)[0] == "batch"
        assert_matches_torch(model, r.path, config.input_shape, batches=(1, 3))
        x = np.random.default_rng(1).standard_normal((5, *config.input_shape)).astype(np.float32)
        outs[exporter] = session(r.path).run(None, {"input": x})[0]
    np.testing.assert_allclose(outs["torchscript"], outs["dynamo"], rtol=1e-4, atol=1e-5)


def test_auto_exporter_falls_back_to_dynamo_with_a_note(tmp_path, monkeypatch):
    """A PyTorch without the TorchScript exporter (announced for removal) still exports."""
    import emonas_edge.export.onnx as onnx_mod

    real = onnx_mod._export

    def without_torchscript(model, example, path, opset, batch, exporter, output="logits"):
        if exporter == "torchscript":
            raise RuntimeError("the TorchScript-based ONNX exporter has been removed\nmore text")
        return real(model, example, path, opset, batch, exporter, output)

    monkeypatch.setattr(onnx_mod, "_export", without_torchscript)
    config = config_from_dict(TINY_GENOTYPE)
    model = perturb(create_model(config), seed=5)
    r = export_onnx(config, model, tmp_path / "auto")
    assert r.manifest["exporter"] == {"requested": "auto", "used": "dynamo"}
    assert r.notes == [
        "the TorchScript exporter failed (the TorchScript-based ONNX exporter has been removed); used the dynamo "
        "exporter"
    ]
    assert r.manifest["notes"] == r.notes and r.parity.passed
    with pytest.raises(
        CheckFailed,
        match=r"torch.onnx.export \(TorchScript\) failed: the TorchScript-based ONNX exporter has been removed$",
    ):
        export_onnx(config, model, tmp_path / "forced", exporter="torchscript")
    assert visible_and_hidden_files(tmp_path / "forced") == []


def test_cli_rejects_an_unknown_exporter_before_any_work(cli, tmp_path):
    gfile = write_json(tmp_path / "tiny.json", TINY_GENOTYPE)
    proc = cli("export", "-g", gfile, "-o", tmp_path / "out", "--exporter", "tflite")
    assert proc.returncode == 2 and "--exporter must be one of auto, torchscript, dynamo, got 'tflite'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ static batch


def test_static_batch_export(tmp_path):
    config = config_from_dict(TINY_GENOTYPE)
    torch.manual_seed(0)
    model = perturb(create_model(config), seed=2)
    result = export_onnx(config, model, tmp_path / "out", batch=4)
    assert graph_input_dims(result.path) == [4, 1, 16, 16]
    out_dims = [d.dim_value for d in onnx.load(str(result.path)).graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [4, 3]
    assert_matches_torch(model, result.path, config.input_shape, batches=(4,))
    assert result.manifest["batch"] == 4
    assert result.manifest["parity"]["batches"] == [4]
    sess = session(result.path)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # ONNX Runtime enforces the fixed batch
        sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 1, 16, 16), np.float32)})


# ----------------------------------------------------------------------------- simplifiers


@pytest.mark.parametrize("method", ["onnxslim", "none"])
@pytest.mark.slow
def test_cli_simplifier_choice_recorded(cli, tmp_path, method):
    gfile = write_json(tmp_path / "tiny.json", TINY_GENOTYPE)
    proc = cli("export", "-g", gfile, "-o", tmp_path / "out", "--simplify", method, "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "tiny.manifest.json").read_text(encoding="utf-8"))
    assert manifest["simplifier"] == {"requested": method, "used": method}
    assert manifest["notes"] == []
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == manifest
    assert manifest["parity"]["passed"] is True
    onnx_path = tmp_path / "out" / "tiny.onnx"
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    # The CLI builds its own random weights; the reproduced PyTorch model is the same only in
    # architecture, so check that ONNX Runtime runs at batch 1 and 3 and returns 3 logits.
    sess = session(onnx_path)
    for b in (1, 3):
        (y,) = sess.run(None, {"input": np.zeros((b, 1, 16, 16), np.float32)})
        assert y.shape == (b, 3)
    if method == "none":
        ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
        assert "BatchNormalization" in ops, f"unsimplified graph should keep BatchNorm nodes, has {sorted(ops)}"


def test_bad_simplifier_is_rejected(tmp_path):
    config = config_from_dict(TINY_GENOTYPE)
    from emonas_edge.errors import UserError

    with pytest.raises(UserError, match="simplify"):
        export_onnx(config, create_model(config), tmp_path / "out", simplify="magic")
    assert visible_and_hidden_files(tmp_path / "out") == []


@pytest.mark.parametrize("opset", [99, 17])
def test_an_opset_the_exporter_cannot_write_is_refused_before_any_work(opset, tmp_path, capfd):
    config = config_from_dict(TINY_GENOTYPE)
    from emonas_edge.errors import UserError

    with pytest.raises(UserError, match=f"opset {opset} is"):
        export_onnx(config, create_model(config), tmp_path / "out", opset=opset)
    assert visible_and_hidden_files(tmp_path / "out") == [] and capfd.readouterr().out == ""


# ------------------------------------------------------------- property: random valid genotypes


@st.composite
def genotypes(draw):
    op_names = sorted(OPS)

    def cell(kind):
        nodes = draw(st.integers(1, 4), label=f"{kind} nodes")
        edges = []
        for node in range(nodes):
            for _ in range(2):
                edges.append([draw(st.sampled_from(op_names)), draw(st.integers(0, node + 1))])
        # Reduction cells: concat from the nodes only (concatenating the unreduced inputs is a
        # known bug, see test_nn.py::test_genotype_accepted_by_validation_builds_and_runs).
        states = list(range(nodes + 2)) if kind == "normal" else list(range(2, nodes + 2))
        concat = draw(st.lists(st.sampled_from(states), min_size=1, max_size=len(states), unique=True))
        return edges, sorted(concat)

    normal, normal_concat = cell("normal")
    reduce, reduce_concat = cell("reduce")
    return {
        "name": "random",
        "family": "cell",
        "normal": normal,
        "normal_concat": normal_concat,
        "reduce": reduce,
        "reduce_concat": reduce_concat,
        "network": {
            "in_channels": draw(st.sampled_from([1, 3])),
            "input_size": draw(st.sampled_from([16, 32])),
            "init_channels": 4,
            "layers": 3,
        },
    }


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(raw=genotypes())
@pytest.mark.slow
def test_random_valid_genotypes_export_and_match(raw):
    config = config_from_dict(raw)
    torch.manual_seed(0)
    model = perturb(create_model(config), seed=3)
    with tempfile.TemporaryDirectory() as d:
        result = export_onnx(config, model, d)
        assert result.parity.passed
        assert_matches_torch(model, result.path, config.input_shape, batches=(1, 3), min_scale=0.0)


# ------------------------------------------------------------------------ parity failure path


def test_check_parity_detects_a_corrupted_graph(exported, tmp_path):
    config, model, result = exported("cell-gray48")
    x, described = parity_inputs(config)
    good = check_parity(model, result.path, x, described)
    assert good.passed and good.batches == [8, 1]

    proto = onnx.load(str(result.path))
    floats = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 0]
    target = max(floats, key=lambda i: int(np.prod(i.dims)))
    arr = numpy_helper.to_array(target).copy()
    arr += 0.5
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    bad_path = tmp_path / "corrupt.onnx"
    onnx.save(proto, str(bad_path))

    bad = check_parity(model, bad_path, x, described)
    assert bad.passed is False
    assert bad.max_abs_diff > bad.tolerance
    assert bad.inputs == described


def test_check_parity_on_unreadable_onnx_raises_checkfailed(exported, tmp_path):
    config, model, _ = exported("cell-gray48")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all")
    x, described = parity_inputs(config)
    with pytest.raises(CheckFailed):
        check_parity(model, junk, x, described)


def test_failed_parity_leaves_no_files(tmp_path):
    config = config_from_dict(TINY_GENOTYPE)
    torch.manual_seed(0)
    model = perturb(create_model(config), seed=4)
    out = tmp_path / "out"
    with pytest.raises(CheckFailed) as info:
        export_onnx(config, model, out, atol=-1.0)  # tolerance below zero: cannot pass
    assert info.value.table.get("passed") is False
    assert visible_and_hidden_files(out) == [], "a failed export must leave neither artifact nor temporaries"


@pytest.mark.slow
def test_cli_failed_parity_exits_1(cli, tmp_path):
    gfile = write_json(tmp_path / "tiny.json", TINY_GENOTYPE)
    out = tmp_path / "out"
    proc = cli("export", "--genotype", gfile, "--output", out, "--atol=-1")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "check failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert visible_and_hidden_files(out) == []


# ------------------------------------------------------------------------------ parity inputs


@pytest.mark.slow
def test_cli_parity_data_with_real_fer2013_images(cli, tmp_path, shared):
    folders = sorted(p for p in (shared / "datasets" / "fer2013" / "publictest").iterdir() if p.is_dir())
    # The smallest class folder keeps the directory scan short.
    folder = min(folders, key=lambda p: sum(1 for _ in p.iterdir()))
    gfile = write_json(
        tmp_path / "tiny.json", {**TINY_GENOTYPE, "network": {**TINY_GENOTYPE["network"], "input_size": 48}}
    )
    proc = cli("export", "-g", gfile, "-o", tmp_path / "out", "--parity-data", folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "tiny.manifest.json").read_text(encoding="utf-8"))
    parity = manifest["parity"]
    assert parity["inputs"].startswith("real images from")
    assert str(folder) in parity["inputs"]
    assert parity["samples"] == 8
    assert parity["passed"] is True


def test_parity_inputs_are_real_preprocessed_faces():
    config = config_from_dict({**TINY_GENOTYPE, "network": {**TINY_GENOTYPE["network"], "input_size": 48}})
    x, described = parity_inputs(config)
    assert described.startswith("bundled astronaut face")
    assert x.shape == (8, 1, 48, 48) and x.dtype == np.float32
    # Preprocessed pixels: (x/255 - 0.5) / 0.5 lies in [-1, 1], and the variants differ.
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    assert float(x.std()) > 0.1
    assert not np.allclose(x[0], x[1])


def test_load_model_then_export_roundtrip(tmp_path):
    gfile = write_json(tmp_path / "tiny.json", TINY_GENOTYPE)
    config, model, weights = load_model(gfile, input_size=32)
    assert weights is None and not model.training
    assert config.input_shape == (1, 32, 32)
    perturb(model, seed=5)
    result = export_onnx(config, model, tmp_path / "out", simplify="none")
    assert result.manifest["simplifier"] == {"requested": "none", "used": "none"}
    assert_matches_torch(model, result.path, config.input_shape)
    assert load_genotype(result.path) == config  # the artifact carries its full config
