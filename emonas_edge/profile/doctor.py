"""``doctor``: what this machine has for each workflow, and one line of advice per problem.

A user on a new device (a Jetson, a robot, a laptop) asks first whether it can run a model at all,
then what is missing for exporting, training or TensorRT. Every check here is cheap (package
metadata, files, one provider list; a camera only when asked), so ``doctor`` answers in about a
second and can be pasted into a bug report (``--json``).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..deps import has_torch
from ..environment import cpu_model, package_version

WORKFLOWS = ("run", "export", "train", "tensorrt")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    advice: str = ""  # what to do when not ok
    needed_for: tuple[str, ...] = ()  # workflows that cannot work without it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)

    def missing_for(self, workflow: str) -> list[Check]:
        return [c for c in self.checks if not c.ok and workflow in c.needed_for]

    def to_dict(self) -> dict:
        return {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "checks": [c.to_dict() for c in self.checks],
            "ready": {w: not self.missing_for(w) for w in WORKFLOWS},
        }


def _package(name: str, needed_for: tuple[str, ...], advice: str, note: str = "") -> Check:
    version = package_version(name)
    detail = version or ("not installed" + (f": {note}" if note else ""))
    return Check(name, version is not None, detail, "" if version else advice, needed_for)


def _python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", ok, platform.python_version(), "" if ok else "emonas-edge needs Python >= 3.10", WORKFLOWS)


def _onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError:
        return Check(
            "onnxruntime",
            False,
            "not installed",
            "pip install onnxruntime (onnxruntime-gpu on CUDA)",
            ("run", "export", "tensorrt"),
        )
    providers = ort.get_available_providers()
    return Check(
        "onnxruntime",
        True,
        f"{ort.__version__}; providers {', '.join(providers)}",
        needed_for=("run", "export", "tensorrt"),
    )


def _opencv() -> Check:
    try:
        import cv2
    except ImportError:
        return Check("opencv", False, "not installed", "pip install 'opencv-python-headless<5'", ("run",))
    major = int(cv2.__version__.split(".")[0])
    haar = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / "haarcascade_frontalface_default.xml"
    if major >= 5 or not haar.is_file():
        return Check(
            "opencv",
            False,
            f"{cv2.__version__}, Haar cascade files {'present' if haar.is_file() else 'missing'}",
            "install 'opencv-python-headless<5' (5.x ships no Haar files, the fallback face detector)",
            ("run",),
        )
    return Check("opencv", True, f"{cv2.__version__}, Haar cascade files present", needed_for=("run",))


def _mediapipe() -> Check:
    version = package_version("mediapipe")
    assets = Path(__file__).resolve().parents[1] / "assets"
    models = sorted(p.name for p in assets.glob("face_detection_*.tflite"))
    if version is None:
        return Check(
            "mediapipe",
            False,
            "not installed: the Haar cascade detects faces (fewer, no eye landmarks)",
            "pip install mediapipe (BlazeFace: more faces found, aligned by the eyes)",
        )
    if len(models) < 2:
        return Check(
            "mediapipe",
            False,
            f"{version}, BlazeFace models missing from {assets}",
            "reinstall emonas-edge: its package carries the BlazeFace .tflite files",
        )
    return Check("mediapipe", True, f"{version}, BlazeFace {', '.join(models)}")


def _torch() -> Check:
    version = package_version("torch")
    if version is None or not has_torch():
        return Check(
            "torch",
            False,
            "not installed: runtime-only install (ONNX models run; no export or training)",
            "pip install 'emonas-edge[train]' (or the JetPack torch wheel on a Jetson)",
            ("export", "train"),
        )
    cuda = ""
    try:
        import torch

        cuda = f", CUDA {torch.version.cuda}: {'available' if torch.cuda.is_available() else 'no GPU'}"
    except ImportError as e:  # installed but broken (a wheel for another CUDA or Python)
        return Check(
            "torch",
            False,
            f"{version} but it does not import ({e})",
            "reinstall torch for this Python and platform",
            ("export", "train"),
        )
    return Check("torch", True, version + cuda, needed_for=("export", "train"))


def _tensorrt() -> Check:
    version = package_version("tensorrt")
    if version is None:
        return Check(
            "tensorrt",
            False,
            "not installed (TensorRT engines need an NVIDIA GPU; not verified here)",
            "on a Jetson, TensorRT comes with JetPack; on x86 pip install tensorrt with a CUDA GPU",
            ("tensorrt",),
        )
    return Check("tensorrt", True, version, needed_for=("tensorrt",))


def _cuda_bindings() -> Check:
    """Engines keep their buffers and stream in CUDA through cuda-python (not PyTorch, whose JetPack pip wheel
    has no CUDA)."""
    version = package_version("cuda-python") or package_version("cuda-bindings")
    if version is None:
        return Check(
            "cuda-python",
            False,
            "not installed: TensorRT engines cannot be built or run",
            "pip install 'cuda-python>=12' (on JetPack 6: 'cuda-python>=12,<13', CUDA 12)",
            ("tensorrt",),
        )
    return Check("cuda-python", True, version, needed_for=("tensorrt",))


def _models() -> list[Check]:
    from ..config import config_from_dict
    from ..errors import UserError
    from ..fileio import read_json
    from ..zoo import builtin_models

    checks = []
    for name, entry in builtin_models().items():
        try:
            config = config_from_dict(read_json(entry.genotype), str(entry.genotype))
        except UserError as e:
            checks.append(Check(f"model {name}", False, f"unreadable genotype ({e})", "reinstall emonas-edge"))
            continue
        default = name == "emonas-macro"  # what `run` and `demo` use without flags
        detail, trained = _weights(entry)
        advice = (
            f"reinstall emonas-edge ({name}'s weights are missing or unreadable)" if default and not trained else ""
        )
        checks.append(
            Check(
                f"model {name}", trained or not default, f"{config.task}, {detail}", advice, ("run",) if default else ()
            )
        )
    return checks


def _weights(entry) -> tuple[str, bool]:
    """``(what the weights are, whether they are trained)``: the checkpoint where PyTorch is here, else the
    ONNX export that ships beside it (what a runtime-only install runs)."""
    if entry.weights is None:
        return "no trained weights (ships untrained)", False
    from ..errors import UserError

    if not has_torch():
        if entry.onnx is None:
            return "trained weights, but no shipped ONNX to run them without torch", False
        from ..export.metadata import load_onnx, read_metadata

        try:
            trained = read_metadata(load_onnx(entry.onnx)).get("trained") == "true"
        except UserError as e:
            return f"shipped ONNX unreadable ({e})", False
        return (
            "shipped ONNX, loadable (no torch: the checkpoint is not read)" if trained else "ONNX marked untrained"
        ), trained
    from ..checkpoint import read_checkpoint

    try:
        trained = bool(read_checkpoint(entry.weights)["config"].get("trained"))
    except (UserError, KeyError) as e:
        return f"weights unreadable ({e})", False
    shipped = (
        ", ONNX fp32 + INT8 shipped" if entry.onnx and entry.onnx_int8 else ", ONNX fp32 shipped" if entry.onnx else ""
    )
    return ("trained weights, loadable" + shipped if trained else "weights marked untrained"), trained


def _jetson() -> Check:
    from .jetson import jetson_info

    info = jetson_info()
    if info is None:
        return Check("jetson", True, "not a Jetson")
    mode = (info.get("nvpmodel") or {}).get("name")
    clocks = info.get("jetson_clocks")
    detail = f"{info.get('model')}, L4T {info.get('l4t')}, power mode {mode}, jetson_clocks {clocks}"
    pinned = clocks is True
    return Check(
        "jetson", pinned, detail, "" if pinned else "run `sudo jetson_clocks` before profiling (and note nvpmodel)"
    )


def _camera(index: int) -> Check:
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
    finally:
        cap.release()
    if not ok or frame is None:
        return Check(
            f"camera {index}",
            False,
            "cannot be opened or gives no frame",
            "check the cable, /dev/video*, permissions (group video) and that no other program holds it",
            ("run",),
        )
    return Check(f"camera {index}", True, f"{frame.shape[1]}x{frame.shape[0]} frames", needed_for=("run",))


def diagnose(camera: int | None = None) -> Diagnosis:
    """Every check, in the order a user reads them: Python and the runtime, detection, export and
    training, TensorRT, the built-in models, the board, a camera when asked."""
    d = Diagnosis()
    d.checks += [
        _python(),
        _onnxruntime(),
        _package("onnx", ("run", "export"), "pip install onnx"),
        _package("numpy", WORKFLOWS, "pip install numpy"),
        _opencv(),
        _mediapipe(),
        _torch(),
    ]
    export_note = "the exporter needs it"
    d.checks += [_package("onnxscript", ("export",), "pip install 'emonas-edge[train]'", export_note)]
    simplifier = package_version("onnxsim") or package_version("onnxslim")
    d.checks.append(
        Check(
            "onnxsim / onnxslim",
            simplifier is not None,
            simplifier or "neither installed",
            "" if simplifier else "pip install onnxsim (or onnxslim)",
            ("export",),
        )
    )
    d.checks += [_tensorrt(), _cuda_bindings(), *_models(), _jetson()]
    if camera is not None:
        d.checks.append(_camera(camera))
    return d
