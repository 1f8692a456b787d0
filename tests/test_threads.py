"""Thread discipline: one plan sizes every library's pool from the cores and the pipeline's stages, is applied
to the real libraries (OpenCV, ONNX Runtime) and reported by `run` and `profile-pipeline`."""

from __future__ import annotations

import json
import sys

import cv2
import pytest

from emonas_edge.errors import UserError
from emonas_edge.export.session import choose_providers
from emonas_edge.pipeline import build_pipeline
from emonas_edge.threads import plan_threads, usable_cores


@pytest.fixture
def restore_opencv_threads(monkeypatch):
    before, switch = cv2.getNumThreads(), sys.getswitchinterval()
    monkeypatch.delenv("OPENCV_FFMPEG_THREADS", raising=False)  # the plan sets it: restored after the test
    yield
    cv2.setNumThreads(before)
    sys.setswitchinterval(switch)


def test_the_plan_splits_the_cores_between_the_stages():
    assert plan_threads(cores=2).onnxruntime == 1 and plan_threads(cores=2).opencv == 1
    eight = plan_threads(cores=8)
    assert (eight.opencv, eight.onnxruntime, eight.torch, eight.decode) == (
        4,
        4,
        4,
        4,
    ) and "auto: 8 cores" in eight.chosen_by
    assert plan_threads(cores=1).onnxruntime == 1  # never zero
    forced = plan_threads(3, cores=2)
    assert (forced.opencv, forced.onnxruntime, forced.torch) == (3, 3, 3) and forced.chosen_by == "--threads 3"
    assert not forced.spinning and "no spinning" in forced.describe()
    assert 1 <= usable_cores()
    for bad in (0, -2, True, 1.5):
        with pytest.raises(UserError, match="--threads must be a whole number"):
            plan_threads(bad)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_plan_is_applied_to_opencv_and_onnx_runtime(threads, restore_opencv_threads, shared):
    built = build_pipeline("emonas-macro-lite", None, threads=threads)
    try:
        assert cv2.getNumThreads() == threads
        opts = built.pipeline.macro.session.get_session_options()
        assert opts.intra_op_num_threads == threads and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert built.threads.onnxruntime == threads and built.pipeline.thread_plan is built.threads
        assert sys.getswitchinterval() == pytest.approx(built.threads.switch_interval_ms / 1000)
        # FFmpeg's decoding threads, read by OpenCV at each capture's opening (its default: every core)
        cap = cv2.VideoCapture(str(shared / "media" / "single_face.mp4"))
        assert cap.get(cv2.CAP_PROP_N_THREADS) == threads == built.threads.decode
        cap.release()
    finally:
        built.pipeline.detector.close()


def test_run_reports_its_threads(cli, shared, tmp_path):
    summary = tmp_path / "s.json"
    clip = shared / "media" / "single_face.mp4"
    r = cli("run", "--source", clip, "--max-frames", "5", "--threads", "1", "--summary-json", summary)
    assert r.returncode == 0, r.stderr
    threads = json.loads(summary.read_text())["threads"]
    assert threads["opencv"] == threads["onnxruntime"] == threads["torch"] == threads["decode"] == 1
    assert threads["chosen_by"] == "--threads 1"
    assert "OpenCV 1, video decoding 1, ONNX Runtime 1" in " ".join(r.stdout.split())
    providers = json.loads(summary.read_text())["providers"]  # this machine has no GPU provider
    assert providers["macro"] == ["CPUExecutionProvider"] and providers["detect"] == ["mediapipe (CPU)"]
    r = cli("run", "--source", clip, "--max-frames", "5", "--threads", "0")
    assert r.returncode == 2 and "--threads must be" in r.stderr and "Traceback" not in r.stderr


def test_gpu_providers_are_taken_first_where_onnx_runtime_has_them():
    """What a Jetson's onnxruntime-gpu lists (not runnable here: the choice is checked on the lists)."""
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, jetson) == jetson
    assert choose_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", jetson) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(UserError, match="not available here"):
        choose_providers("tensorrt", ["CPUExecutionProvider"])
