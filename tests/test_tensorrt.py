"""TensorRT: everything that can be checked without TensorRT or a GPU, plus one hardware test.

Without TensorRT (this machine): the trtexec line, the ONNX/settings checks, the sidecar and
its checks, and that missing TensorRT is a one-line MissingDependency. The engine build and its
agreement with ONNX Runtime run only where TensorRT and a CUDA GPU are present.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

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
    # built from the gated fp16 ONNX, strongly typed: what the gate kept fp32 stays fp32 (--fp16 is deprecated)
    assert "--stronglyTyped" in fp16 and "--fp16" not in fp16 and "--noTF32" not in fp16
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
    assert "--stronglyTyped" in side["trtexec"] and "--memPoolSize=workspace:128M" in side["trtexec"]
    assert side["strongly_typed"] is True
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
    """TensorRT and a CUDA device, seen through the CUDA runtime bindings the backend uses (not torch)."""
    if not tensorrt_available():
        return False
    try:
        from emonas_edge.export.cuda_rt import gpu_info

        gpu_info()
    except Exception:
        return False
    return True


HARDWARE_CASES = {  # precision, batch profile (min, opt, max), static batch, rows run (chunking past max / below min)
    "fp32-dynamic": ("fp32", (1, 4, 8), None, 13),
    "fp16-strongly-typed": ("fp16", (1, 4, 8), None, 13),
    "int8-strongly-typed": ("int8", (1, 4, 8), None, 13),
    "static-batch-4": ("fp32", (4, 4, 4), 4, 10),
    "min-above-one": ("fp32", (2, 4, 8), None, 9),  # a last chunk of 1 row is padded up to the profile's 2
}


@pytest.mark.skipif(not _have_trt_gpu(), reason="TensorRT is not installed here (no GPU; not verified on hardware)")
@pytest.mark.parametrize("case", sorted(HARDWARE_CASES))
def test_build_and_run_engine_matches_onnxruntime(case, tmp_path, tiny_genotype_file, shared):
    """Every engine kind against ONNX Runtime on the same file; the timing cache is written, then reused."""
    from emonas_edge.export.onnx import export_onnx
    from emonas_edge.export.precision import derive_precision
    from emonas_edge.resolve import load_model
    from emonas_edge.runtime.ort_backend import OrtBackend

    precision, batch, static, rows = HARDWARE_CASES[case]
    config, model, _ = load_model(tiny_genotype_file)
    result = export_onnx(config, model, tmp_path / "export", random_inputs=True, batch=static)
    source = result.path
    if precision != "fp32":  # the fp16 / QDQ graph the export path makes (TensorRT's signed INT8 scheme)
        calib = shared / "media" / "single_face.mp4" if precision == "int8" else None
        source = derive_precision(result.path, config, precision, calib=calib, max_drop=100.0, int8_scheme="trt").path
    cache = tmp_path / "timing.cache"
    for attempt in range(2):  # the second build reads the cache the first wrote
        engine = tmp_path / "export" / f"tiny-{attempt}.engine"
        side = build_engine(source, engine, precision=precision, batch=batch, timing_cache=cache)
        assert engine.is_file() and sidecar_path(engine).is_file() and cache.is_file()
        assert side["batch"]["static"] == static and side["strongly_typed"] is (precision != "fp32")
        assert side["gpu"]["name"] and side["gpu"]["compute_capability"]
    trt_backend, ort_backend = TrtBackend(engine), OrtBackend(source, provider="cpu")
    assert trt_backend.classes == ort_backend.classes and trt_backend.static_batch == static
    x = np.random.default_rng(0).standard_normal((rows, *config.input_shape)).astype(np.float32)
    diff = np.abs(trt_backend.run_all(x) - ort_backend.run_all(x)).max()
    assert diff < (1e-3 if precision == "fp32" else 5e-2), f"TensorRT and ONNX Runtime differ by {diff}"


# --- without a GPU: what the device path decides before TensorRT runs --------------------------


@pytest.mark.parametrize(
    "n, lo, hi, expected",
    [
        (10, 1, 4, [(0, 4, 4), (4, 8, 4), (8, 10, 2)]),
        (9, 2, 4, [(0, 4, 4), (4, 8, 4), (8, 9, 2)]),  # the last row alone is padded up to the profile's minimum
        (3, 4, 4, [(0, 3, 4)]),  # static batch 4: padded
        (8, 1, 8, [(0, 8, 8)]),
    ],
)
def test_chunks_respect_the_profile_minimum_and_maximum(n, lo, hi, expected):
    from emonas_edge.export.session import batch_chunks, padded

    assert batch_chunks(n, lo, hi) == expected
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    for start, stop, rows in expected:
        part = padded(x[start:stop], rows)
        assert len(part) == rows and np.array_equal(part[: stop - start], x[start:stop])
        assert all(np.array_equal(r, x[stop - 1]) for r in part[stop - start :])  # the pad repeats the last row
    with pytest.raises(UserError, match="1 <= min <= max"):
        batch_chunks(4, 3, 2)


def test_fp16_engines_are_strongly_typed(tmp_path, tiny_genotype):
    plain, qdq = _onnx_file(tmp_path, tiny_genotype), _onnx_file(tmp_path, tiny_genotype, qdq=True, name="q.onnx")
    for precision, typed in (("fp32", False), ("fp16", True), ("int8", True)):
        plan = plan_engine(qdq if precision == "int8" else plain, tmp_path / "m.engine", precision=precision)
        assert plan["strongly_typed"] is typed, precision
        assert ("--stronglyTyped" in plan["trtexec"]) is typed and "--fp16" not in plan["trtexec"]


@pytest.mark.parametrize(
    "gpu", [{"name": None, "compute_capability": "8.7"}, {"name": "Orin", "compute_capability": None}]
)
def test_a_sidecar_never_records_an_unknown_gpu(tmp_path, tiny_genotype, gpu):
    onnx_path = _onnx_file(tmp_path, tiny_genotype)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    plan = plan_engine(onnx_path, engine)
    with pytest.raises(UserError, match="would load nowhere"):
        make_sidecar(plan, engine, "10.3.0", gpu)
    assert make_sidecar(plan, engine, "10.3.0", {"name": "Orin", "compute_capability": "8.7"})["gpu"]["name"] == "Orin"


def test_running_engines_needs_no_pytorch():
    """JetPack's pip torch has no CUDA: the engine runtime and the CUDA helpers import nothing of torch."""
    import ast

    root = Path(__file__).resolve().parents[1] / "emonas_edge"
    for module in ("runtime/tensorrt.py", "export/cuda_rt.py"):
        tree = ast.parse((root / module).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m == "torch" or m.startswith("torch.") for m in imported), module


def test_cuda_errors_are_one_line_naming_the_call():
    """``cudaX`` returns its error first; a failure names the call (the enum's name where it has one)."""
    import enum

    from emonas_edge.export.cuda_rt import call

    class Err(enum.IntEnum):  # the shape of cuda-python's cudaError_t
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    assert call(None, "cudaMalloc", (Err.cudaSuccess, 1234)) == 1234
    assert call(None, "cudaStreamSynchronize", (Err.cudaSuccess,)) is None
    with pytest.raises(UserError, match="CUDA cudaMalloc failed: cudaErrorMemoryAllocation"):
        call(None, "cudaMalloc", (Err.cudaErrorMemoryAllocation, 0))
