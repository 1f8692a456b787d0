"""One call from a network to the artifact a device runs: fp32 ONNX -> precision -> TensorRT engine.

``emonas-edge export`` and the Python API take the same path through :func:`export_artifact`:
the fp32 ONNX is always built and verified first (every other artifact is derived from it and
compared with it), then the precision is derived and gated, then an engine is built from the
ONNX of the chosen precision. All settings live in one :class:`ArtifactSettings`, checked
before any work starts, so a bad flag costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import UserError
from .formats import DEFAULT_OPSET, FORMATS, artifact_name
from .onnx import ExportResult, check_export_settings, export_onnx
from .precision import PrecisionArtifact, Timer, check_precision_settings, derive_precision


@dataclass
class EngineSettings:
    """TensorRT only: builder workspace, the optimisation profile's largest batch (min 1, opt 1), timing cache."""

    workspace_mb: int = 256
    max_batch: int = 8
    timing_cache: Path | None = None


@dataclass
class ArtifactSettings:
    output: str | os.PathLike = "export"  # folder for the artifacts and their manifests
    format: str = "onnx"  # onnx | engine (TensorRT, built from the ONNX of the chosen precision)
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch axis
    simplify: str = "onnxsim"
    exporter: str = "auto"
    parity_data: str | os.PathLike | None = None  # face image(s) for the parity check; None: the bundled face
    atol: float = 1e-4
    precision: str = "fp32"  # fp32 | fp16 | int8 | auto
    calib: str | os.PathLike | None = None  # INT8 calibration faces
    calib_samples: int = 512
    calib_method: str = "minmax"
    eval_data: str | os.PathLike | None = None  # labelled data for the accuracy gate
    max_accuracy_drop: float = 1.0  # points of top-1 the new precision may cost
    engine: EngineSettings = field(default_factory=EngineSettings)

    def check(self) -> None:
        """Every bad setting fails here, before a model is loaded: :class:`UserError`, exit 2 in the CLI."""
        check_export_settings(self.opset, self.batch, self.simplify, self.output, self.parity_data, self.exporter)
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r} (choose from: {', '.join(FORMATS)})")
        check_precision_settings(self.precision, self.calib, self.calib_method, self.max_accuracy_drop, self.eval_data)
        if self.format == "engine":
            from .tensorrt import require_tensorrt

            require_tensorrt()  # before any work: a clear message


class ExportProgress:
    """Told as each artifact is written (the CLI prints its tables here); the default says nothing."""

    def onnx_written(self, result: ExportResult) -> None:
        pass

    def precision_written(self, derived: PrecisionArtifact) -> None:
        pass

    def engine_written(self, path: Path, sidecar: dict) -> None:
        pass


@dataclass
class ArtifactResult:
    onnx: ExportResult  # the verified fp32 ONNX every other artifact is derived from
    derived: PrecisionArtifact | None = None  # fp16 / int8 / auto's choice, when asked for
    engine: Path | None = None
    engine_sidecar: dict | None = None

    @property
    def manifest(self) -> dict:
        """The manifest of the ONNX file of the asked-for precision (the engine's sidecar is beside the engine)."""
        return self.derived.manifest if self.derived is not None else self.onnx.manifest

    @property
    def path(self) -> Path:
        """The artifact a device runs: the engine, else the ONNX file of the asked-for precision."""
        if self.engine is not None:
            return self.engine
        return self.derived.path if self.derived is not None else self.onnx.path


def export_artifact(
    config: ModelConfig,
    model: torch.nn.Module,
    settings: ArtifactSettings | None = None,
    *,
    weights: str | os.PathLike | None = None,
    timer: Timer | None = None,
    log: Callable[[str], None] = lambda msg: None,
    progress: ExportProgress | None = None,
) -> ArtifactResult:
    """Export ``model`` (built from ``config``, with ``weights`` if trained) as ``settings`` ask.

    ``timer`` ranks the candidates of ``precision="auto"`` (``profile.models.precision_timer``:
    how latency is measured is the profiler's business, which sits above export).
    """
    settings = settings or ArtifactSettings()
    settings.check()
    progress = progress or ExportProgress()
    result = ArtifactResult(
        export_onnx(
            config,
            model,
            settings.output,
            opset=settings.opset,
            batch=settings.batch,
            simplify=settings.simplify,
            parity_data=settings.parity_data,
            atol=settings.atol,
            weights=weights,
            exporter=settings.exporter,
            log=log,
        )
    )
    progress.onnx_written(result.onnx)
    onnx_for_engine, engine_precision = result.onnx.path, "fp32"
    if settings.precision != "fp32":
        result.derived = derive_precision(
            result.onnx.path,
            config,
            settings.precision,
            calib=settings.calib,
            calib_samples=settings.calib_samples,
            calib_method=settings.calib_method,
            eval_data=settings.eval_data,
            max_drop=settings.max_accuracy_drop,
            log=log,
            int8_scheme="tensorrt" if settings.format == "engine" else "ort",
            timer=timer,
        )
        progress.precision_written(result.derived)
        onnx_for_engine, engine_precision = result.derived.path, (result.derived.manifest.get("precision") or "fp32")
    if settings.format == "engine":
        from .tensorrt import build_engine

        engine = settings.engine
        result.engine = Path(settings.output) / artifact_name(config.name, "engine", engine_precision)
        result.engine_sidecar = build_engine(
            onnx_for_engine,
            result.engine,
            precision=engine_precision,
            batch=(1, 1, engine.max_batch),
            workspace_mb=engine.workspace_mb,
            timing_cache=engine.timing_cache,
            log=log,
        )
        progress.engine_written(result.engine, result.engine_sidecar)
    return result


__all__ = ["ArtifactResult", "ArtifactSettings", "EngineSettings", "ExportProgress", "export_artifact"]
