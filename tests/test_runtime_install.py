"""The wheel, installed the way a device installs it: into a clean virtualenv outside the checkout, base
install only (no PyTorch). It must run the built-ins by name and refuse what needs the ``train`` extra in one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, _cli_env

pytestmark = pytest.mark.slow

SOURCES = ["pyproject.toml", "README.md", "LICENSE", "THIRD_PARTY_NOTICES.md", "emonas_edge", "models"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources (a build in place leaves build/ and egg-info in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("emonas_edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def runtime_venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr
    return venv


def _run(venv: Path, *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = _cli_env({"EMONAS_EDGE_CACHE": str(cwd / "cache")})
    env.pop("PYTHONPATH", None)
    exe = venv / "bin" / "emonas-edge"
    return subprocess.run(
        [str(exe), *map(str, args)], cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout
    )


def test_the_wheel_carries_models_detectors_and_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("emonas-macro", "emonas-macro-fast", "emonas-macro-lite"):
        for suffix in (".json", ".pt", ".md", ".onnx", ".int8.onnx"):
            assert f"emonas_edge/zoo_files/{model}{suffix}" in names
    assert {"emonas_edge/assets/face_detection_short_range.tflite", "emonas_edge/assets/README.md"} <= names
    licences = {n.rsplit("/", 1)[-1] for n in names if "/licenses/" in n}
    assert licences == {"LICENSE", "THIRD_PARTY_NOTICES.md"}
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert base and not any("torch" in line or "onnxsim" in line for line in base), base


def test_a_runtime_install_runs_builtins_without_pytorch(runtime_venv, shared, tmp_path):
    r = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0, "the base install must not bring PyTorch"
    r = _run(runtime_venv, "models", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["emonas-macro"]["trained"] and rows["emonas-macro"]["params"] == 980_767
    assert "zoo_files" in rows["emonas-macro"]["onnx"] and str(REPO) not in rows["emonas-macro"]["onnx"]
    r = _run(runtime_venv, "info", "emonas-macro", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["classes"][3] == "happy", r.stderr
    out = tmp_path / "faces.jsonl"
    r = _run(runtime_venv, "run", "--source", shared / "media" / "single_face.mp4", "--jsonl", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    faces = [f for fr in frames for f in fr["faces"]]
    assert len(frames) > 50 and len(faces) >= 0.9 * len(frames)
    assert all(abs(sum(f["macro"].values()) - 1) < 1e-3 for f in faces)
    r = _run(
        runtime_venv,
        "evaluate",
        "--model",
        "emonas-macro-lite",
        "--data",
        shared / "datasets" / "fer2013" / "publictest",
        "--limit-per-class",
        "40",
        "--json",
        tmp_path / "eval.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["trained"] and report["accuracy"] > 0.45 and "onnx" in report["backend"].lower()


def test_what_needs_pytorch_names_the_extra_in_one_line(runtime_venv, tmp_path):
    for args in (("export", "--genotype", "emonas-macro"), ("info", "emonas-micro")):
        r = _run(runtime_venv, *args, cwd=tmp_path)
        assert r.returncode == 2 and "emonas-edge[train]" in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = _run(runtime_venv, "doctor", "--for", "run", cwd=tmp_path)
    assert r.returncode == 0 and "runtime-only install" in r.stdout, r.stdout
    assert not (tmp_path / "export").exists()
