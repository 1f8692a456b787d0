"""TensorRT: everything that can be checked without TensorRT or a GPU, plus one hardware test.

Without TensorRT (this machine): the trtexec line, the ONNX/settings checks, the sidecar and
its checks, and that missing TensorRT is a one-line MissingDependency. The engine build and its
agreement with ONNX Runtime run only where TensorRT and a CUDA GPU are present.
"""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from emonas_edge import __version__
from emonas_edge.config import config_from_dict
from emonas_edge.errors import MissingDependency, UserError
from emonas_edge.export.formats import format_of
from emonas_edge.export.metadata import build_metadata, write_metadata
from emonas_edge.export.tensorrt import (
    SIDECAR_FORMAT,
    build_engine,
    make_sidecar,
    plan_engine,
    require_tensorrt,
    sidecar_path,
    tensorrt_available,
    trtexec_command,
)
from emonas_edge.runtime.tensorrt import TrtBackend, check_environment, read_sidecar


def _onnx_file(tmp_path, genotype: dict, batch=None, qdq: bool = False, metadata: bool = True, name="tiny.onnx"):
    """A small valid classifier graph (Flatten + Gemm) with emonas-edge metadata; no torch export needed."""
    config = config_from_dict(genotype)
    c, h, w = config.input_shape
    nodes, src = [], "input"
    inits = [
        helper.make_tensor(
            "W", TensorProto.FLOAT, [c * h * w, config.num_classes], np.linspace(-1, 1, c * h * w * config.num_classes)
        ),
        helper.make_tensor("b", TensorProto.FLOAT, [config.num_classes], np.zeros(config.num_classes)),
    ]
    if qdq:
        inits += [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        ]
        src = "dq"
    nodes += [
        helper.make_node("Flatten", [src], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    n = batch if batch is not None else "batch"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, config.num_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        write_metadata(model, build_metadata(config, params=0, macs=0, version=__version__, batch=batch))
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` fails, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _fake_engine(tmp_path, genotype, **plan_kw):
    """An engine file plus a sidecar that matches it, as build_engine would leave them."""
    onnx_path = _onnx_file(tmp_path, genotype)
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"not really an engine")
    plan = plan_engine(onnx_path, engine, **plan_kw)
    side = make_sidecar(plan, engine, "10.3.0", {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"})
    sidecar_path(engine).write_text(json.dumps(side), encoding="utf-8")
    return engine, side


# --- trtexec command line ---------------------------------------------------------------------


def test_trtexec_fp32_shapes_and_workspace():
    cmd = trtexec_command("m.onnx", "m.engine", "fp32", "input", (1, 48, 48), 1, 4, 8, 256, None)
    args = shlex.split(cmd)
    assert args[0] == "trtexec"
    assert "--onnx=m.onnx" in args and "--saveEngine=m.engine" in args
    assert "--minShapes=input:1x1x48x48" in args
    assert "--optShapes=input:4x1x48x48" in args
    assert "--maxShapes=input:8x1x48x48" in args
    assert "--memPoolSize=workspace:256M" in args
    assert not any(a.startswith("--timingCacheFile") for a in args)
    assert "--noTF32" in args  # fp32 engines stay fp32 on Ampere and newer
    assert "--fp16" not in args and "--stronglyTyped" not in args and "--int8" not in args


def test_trtexec_fp16_int8_and_timing_cache():
    fp16 = shlex.split(trtexec_command("m.onnx", "m.engine", "fp16", "input", (3, 112, 112), 1, 1, 8, 512, "t.cache"))
    assert "--fp16" in fp16 and "--stronglyTyped" not in fp16 and "--noTF32" not in fp16
    assert "--timingCacheFile=t.cache" in fp16 and "--memPoolSize=workspace:512M" in fp16
    assert "--minShapes=input:1x3x112x112" in fp16
    int8 = shlex.split(trtexec_command("m.onnx", "m.engine", "int8", "input", (1, 48, 48), 1, 1, 8, 256, None))
    assert "--stronglyTyped" in int8
    assert "--int8" not in int8 and "--fp16" not in int8  # QDQ graph: types come from the graph


def test_trtexec_static_batch_and_quoting():
    args = shlex.split(
        trtexec_command("my dir/m.onnx", "out dir/m.engine", "fp32", "x", (1, 16, 16), 4, 4, 4, 64, None, dynamic=False)
    )
    assert "--onnx=my dir/m.onnx" in args and "--saveEngine=out dir/m.engine" in args
    assert not any("Shapes=" in a for a in args)
    with pytest.raises(UserError, match="precision"):
        trtexec_command("m.onnx", "m.engine", "int4", "input", (1, 48, 48), 1, 1, 8, 256, None)


def test_sidecar_path():
    assert sidecar_path("out/tiny.engine").as_posix() == "out/tiny.engine.json"
    assert sidecar_path("tiny.fp16.plan").name == "tiny.fp16.engine.json"


def test_engine_suffixes_come_from_the_formats_table():
    """load_backend and profile pick TensorRT by these; trtexec users name engines .plan or .trt."""
    assert [format_of(p) for p in ("m.engine", "out/m.FP16.PLAN", "m.int8.trt")] == ["engine"] * 3
    assert [format_of(p) for p in ("m.onnx", "m.int8.onnx", "m.pt", "m.engine.json")] == ["onnx", "onnx", None, None]


# --- checks before TensorRT -------------------------------------------------------------------


def test_plan_dynamic_and_fixed_batch(tmp_path, tiny_genotype):
    plan = plan_engine(_onnx_file(tmp_path, tiny_genotype), tmp_path / "t.engine", batch=(1, 2, 8))
    assert plan["batch"] == {"min": 1, "opt": 2, "max": 8, "static": None}
    assert plan["input"] == {"name": "input", "shape_chw": [1, 16, 16]}
    assert plan["model"]["classes"] == tiny_genotype["classes"]
    assert plan["model"]["config"]["name"] == "tiny" and plan["model"]["trained"] is False
    assert "--maxShapes=input:8x1x16x16" in plan["trtexec"]

    fixed = plan_engine(
        _onnx_file(tmp_path, tiny_genotype, batch=4, name="b4.onnx"), tmp_path / "b4.engine", batch=(1, 2, 8)
    )
    assert fixed["batch"] == {"min": 4, "opt": 4, "max": 4, "static": 4}
    assert "Shapes=" not in fixed["trtexec"]


def test_plan_rejects_bad_inputs(tmp_path, tiny_genotype):
    plain = _onnx_file(tmp_path, tiny_genotype)
    with pytest.raises(UserError, match="QuantizeLinear/DequantizeLinear"):
        plan_engine(plain, tmp_path / "t.engine", precision="int8")
    qdq = _onnx_file(tmp_path, tiny_genotype, qdq=True, name="q.onnx")
    assert plan_engine(qdq, tmp_path / "q.engine", precision="int8")["strongly_typed"] is True
    with pytest.raises(UserError, match="int8"):
        plan_engine(qdq, tmp_path / "q.engine", precision="fp16")
    with pytest.raises(UserError, match="no emonas-edge metadata"):
        plan_engine(_onnx_file(tmp_path, tiny_genotype, metadata=False, name="foreign.onnx"), tmp_path / "f.engine")
    for batch in [(2, 1, 8), (0, 1, 1), (1, 2)]:
        with pytest.raises(UserError, match="batch"):
            plan_engine(plain, tmp_path / "t.engine", batch=batch)
    with pytest.raises(UserError, match="workspace"):
        plan_engine(plain, tmp_path / "t.engine", workspace_mb=0)
    with pytest.raises(UserError, match="not found"):
        plan_engine(tmp_path / "missing.onnx", tmp_path / "t.engine")


def test_environment_mismatch_says_how_to_rebuild(tmp_path, tiny_genotype):
    _, side = _fake_engine(tmp_path, tiny_genotype)
    check_environment(side, "10.3.0", {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"})  # same: fine
    with pytest.raises(UserError) as e:
        check_environment(side, "10.8.0", {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"})
    msg = str(e.value)
    assert "engine built for TensorRT 10.3.0 on GPU NVIDIA A100-SXM4-80GB (sm_80)" in msg
    assert "rebuild it on this device with: trtexec --onnx=" in msg and "\n" not in msg
    with pytest.raises(UserError, match="sm_80"):
        check_environment(side, "10.3.0", {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "9.0"})


def test_sidecar_content(tmp_path, tiny_genotype):
    engine, side = _fake_engine(tmp_path, tiny_genotype, precision="fp16", workspace_mb=128)
    assert side["format"] == SIDECAR_FORMAT and side["precision"] == "fp16"
    assert side["input"]["name"] == "input" and side["input"]["spec"]["shape"] == ["batch", 1, 16, 16]
    assert side["model"]["classes"] == tiny_genotype["classes"]
    assert config_from_dict(side["config"]).name == "tiny"
    assert len(side["sha256"]) == 64 and len(side["onnx"]["sha256"]) == 64
    assert "--fp16" in side["trtexec"] and "--memPoolSize=workspace:128M" in side["trtexec"]
    assert read_sidecar(engine)["sha256"] == side["sha256"]


def test_backend_file_errors_need_no_tensorrt(tmp_path, tiny_genotype, no_tensorrt):
    with pytest.raises(UserError, match="not found"):
        TrtBackend(tmp_path / "missing.engine")
    engine, _ = _fake_engine(tmp_path, tiny_genotype)
    side = sidecar_path(engine)

    side.rename(tmp_path / "elsewhere.json")
    with pytest.raises(UserError) as e:
        TrtBackend(engine)
    assert str(side) in str(e.value) and "sidecar" in str(e.value)

    side.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        TrtBackend(engine)
    side.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(UserError, match=SIDECAR_FORMAT):
        TrtBackend(engine)

    (tmp_path / "elsewhere.json").rename(side)
    engine.write_bytes(b"\x00garbage that is not the engine the sidecar describes")
    with pytest.raises(UserError, match="does not match its sidecar") as e:
        TrtBackend(engine)
    assert "trtexec --onnx=" in str(e.value)


# --- TensorRT missing -------------------------------------------------------------------------


def _assert_missing(err: MissingDependency):
    assert isinstance(err, UserError) and err.exit_code == 2
    assert "tensorrt" in str(err) and "emonas-edge[tensorrt]" in str(err)


def test_missing_tensorrt_is_a_user_error(tmp_path, tiny_genotype, no_tensorrt):
    assert tensorrt_available() is False
    with pytest.raises(MissingDependency) as e:
        require_tensorrt()
    _assert_missing(e.value)
    onnx_path = _onnx_file(tmp_path, tiny_genotype)
    with pytest.raises(MissingDependency) as e:
        build_engine(onnx_path, tmp_path / "out" / "tiny.engine")
    _assert_missing(e.value)
    assert not (tmp_path / "out").exists()  # nothing half-written
    engine, _ = _fake_engine(tmp_path, tiny_genotype)
    with pytest.raises(MissingDependency, match="running TensorRT engines") as e:
        TrtBackend(engine)
    _assert_missing(e.value)


def test_tensorrt_really_absent_here():
    if tensorrt_available():
        pytest.skip("TensorRT is installed here; covered by test_missing_tensorrt_is_a_user_error")
    with pytest.raises(MissingDependency) as e:
        require_tensorrt()
    _assert_missing(e.value)


# --- hardware ---------------------------------------------------------------------------------


def _have_trt_gpu() -> bool:
    if not tensorrt_available():
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _have_trt_gpu(), reason="TensorRT is not installed here (no GPU; not verified on hardware)")
def test_build_and_run_engine_matches_onnxruntime(tmp_path, tiny_genotype_file):
    from emonas_edge.export.onnx import export_onnx
    from emonas_edge.resolve import load_model
    from emonas_edge.runtime.ort_backend import OrtBackend

    config, model, _ = load_model(tiny_genotype_file)
    result = export_onnx(config, model, tmp_path / "export", random_inputs=True)
    engine = tmp_path / "export" / "tiny.engine"
    side = build_engine(result.path, engine, precision="fp32", batch=(1, 4, 8), timing_cache=tmp_path / "timing.cache")
    assert engine.is_file() and sidecar_path(engine).is_file() and (tmp_path / "timing.cache").is_file()
    assert side["batch"]["static"] is None and side["tensorrt_version"]

    trt_backend, ort_backend = TrtBackend(engine), OrtBackend(result.path, provider="cpu")
    assert trt_backend.classes == ort_backend.classes and trt_backend.static_batch is None
    x = np.random.default_rng(0).standard_normal((13, *config.input_shape)).astype(np.float32)  # > max batch: chunked
    diff = np.abs(trt_backend.run_all(x) - ort_backend.run_all(x)).max()
    assert diff < 1e-3, f"TensorRT and ONNX Runtime differ by {diff}"
