"""`doctor`: the real environment here, and environments made by monkeypatching what it probes."""

from __future__ import annotations

import json

import pytest

from emonas_edge.profile import doctor


def test_doctor_here_is_ready_to_run_export_and_train(cli):
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    names = {c["name"] for c in report["checks"]}
    assert {"python", "onnxruntime", "onnx", "opencv", "torch", "tensorrt", "model emonas-macro", "jetson"} <= names
    assert report["ready"]["run"] and report["ready"]["export"] and report["ready"]["train"]
    by_name = {c["name"]: c for c in report["checks"]}
    assert "CPUExecutionProvider" in by_name["onnxruntime"]["detail"]
    assert by_name["model emonas-macro"]["ok"] and "loadable" in by_name["model emonas-macro"]["detail"]
    assert by_name["model emonas-micro"]["detail"].endswith("(ships untrained)")
    table = cli("doctor")
    assert table.returncode == 0 and "ready for: run yes" in table.stdout


def test_a_runtime_only_install_is_ready_to_run_not_to_train(monkeypatch):
    real = doctor.package_version
    monkeypatch.setattr(doctor, "package_version", lambda name: None if name == "torch" else real(name))
    monkeypatch.setattr(doctor, "has_torch", lambda: False)
    d = doctor.diagnose()
    torch_check = next(c for c in d.checks if c.name == "torch")
    assert not torch_check.ok and "runtime-only" in torch_check.detail and "[train]" in torch_check.advice
    assert not d.missing_for("run") and d.missing_for("train") == [torch_check]
    model = next(c for c in d.checks if c.name == "model emonas-macro")
    assert model.ok and "shipped ONNX, loadable" in model.detail  # what a runtime-only install runs


def test_engines_need_the_cuda_bindings_not_torch(monkeypatch):
    real = doctor.package_version
    monkeypatch.setattr(doctor, "package_version", lambda n: None if n.startswith("cuda-") else real(n))
    check = next(c for c in doctor.diagnose().checks if c.name == "cuda-python")
    assert not check.ok and check.needed_for == ("tensorrt",) and "cuda-python>=12" in check.advice
    monkeypatch.setattr(doctor, "package_version", lambda n: "12.6.0" if n == "cuda-python" else real(n))
    assert next(c for c in doctor.diagnose().checks if c.name == "cuda-python").ok


def test_tensorrt_and_unknown_workflows(cli):
    r = cli("doctor", "--for", "tensorrt")
    if doctor.package_version("tensorrt") is None:
        assert r.returncode == 1 and "tensorrt" in r.stdout and "JetPack" in r.stdout
    r = cli("doctor", "--for", "dance")
    assert r.returncode == 2 and "--for must be one of" in r.stderr and "Traceback" not in r.stderr


def test_a_camera_that_is_not_there_makes_run_not_ready(cli):
    r = cli("doctor", "--camera", "63", "--json")
    assert r.returncode == 1
    camera = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "camera 63")
    assert not camera["ok"] and "permissions" in camera["advice"]


@pytest.mark.parametrize("clocks, ok", [(True, True), (False, False)])
def test_a_jetson_is_described_and_unpinned_clocks_get_advice(monkeypatch, clocks, ok):
    from emonas_edge.profile import jetson

    info = {
        "model": "NVIDIA Jetson Orin Nano",
        "l4t": "36.4.0",
        "nvpmodel": {"name": "15W", "id": 0},
        "jetson_clocks": clocks,
    }
    monkeypatch.setattr(jetson, "jetson_info", lambda: info)
    check = next(c for c in doctor.diagnose().checks if c.name == "jetson")
    assert "Orin Nano" in check.detail and "L4T 36.4.0" in check.detail and "15W" in check.detail
    assert check.ok == ok and (ok or "jetson_clocks" in check.advice)
