"""The software and machine a figure was measured on, recorded in every manifest and report."""

from __future__ import annotations

import platform
from importlib import metadata


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(
    packages=("emonas-edge", "torch", "numpy", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnxslim"),
) -> dict:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {p: package_version(p) for p in packages},
    }
