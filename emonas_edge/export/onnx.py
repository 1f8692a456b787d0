"""PyTorch -> one self-contained, checked, simplified, parity-verified ONNX file.

Order matters: export, full ``onnx.checker``, simplify (onnxsim, else onnxslim, saying so),
check again, write metadata, then run ONNX Runtime on real faces against PyTorch. Only a
model that passed is renamed into place together with its manifest; an interrupted or failed
export leaves neither behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from .. import __version__
from ..config import ModelConfig
from ..errors import CheckFailed, UserError
from ..fileio import (
    Terminated,
    atomic_outputs,
    check_safe_name,
    check_writable_location,
    recorded_path,
    sha256_file,
    write_fault,
)
from ..macs import macs_torch
from ..nn import count_params
from .formats import DEFAULT_OPSET, EXPORTERS, FORMATS, MIN_OPSET, SIMPLIFIERS, artifact_name, manifest_name
from .manifest import make_manifest, write_manifest
from .metadata import build_metadata, output_kind, write_metadata
from .parity import ParityReport, check_parity, parity_inputs
from .quiet import quiet_loggers


@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict
    parity: ParityReport
    notes: list[str] = field(default_factory=list)


class ExportError(CheckFailed):
    """The exporter or checker rejected our own graph: a bug or an unsupported op, not user input."""


def _quiet():
    """The exporters print progress and deprecation chatter; the CLI prints its own summary."""
    stack = quiet_loggers("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


@contextlib.contextmanager
def _stops_kept() -> Iterator[None]:
    """Ctrl-C and SIGTERM during an export stop it, even where the exporter swallows them.

    torch's TorchScript exporter calls Python symbolic functions from C++, and a KeyboardInterrupt raised
    inside one can be caught there: the export then completed and exited 0 as if never interrupted (seen
    here: a SIGINT ~4 s into a DARTS_V2 export). So the signal is remembered, and raised again once the
    exporter returns."""
    seen: list[int] = []

    def handler(signum, frame):  # noqa: ARG001
        seen.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    if seen:
        raise Terminated if seen[0] == signal.SIGTERM else KeyboardInterrupt


def _export(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int,
    batch: int | None,
    exporter: str,
    output: str = "logits",
) -> None:
    with _quiet(), _stops_kept():
        if exporter == "torchscript":
            dynamic_axes = None if batch is not None else {"input": {0: "batch"}, output: {0: "batch"}}
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                opset_version=opset,
                input_names=["input"],
                output_names=[output],
                verbose=False,
            )
        else:
            dynamic = None if batch is not None else ({0: torch.export.Dim("batch", min=1, max=65536)},)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic,
                opset_version=opset,
                input_names=["input"],
                output_names=[output],
                verbose=False,
            )


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def torch_to_onnx(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    opset: int,
    batch: int | None,
    exporter: str = "auto",
    output: str = "logits",
) -> tuple[str, list[str]]:
    """Export to a single file; ``batch=None`` gives a dynamic batch axis; ``output`` names the output.

    Returns ``(exporter used, notes)``. Whichever exporter ran, the caller checks the graph and
    its parity with PyTorch, so the choice changes export time, not what is accepted.
    """
    example = torch.randn(2 if batch is None else batch, *input_shape)
    notes: list[str] = []
    if exporter in ("auto", "torchscript"):
        try:
            _export(model, example, path, opset, batch, "torchscript", output)
            return "torchscript", notes
        except Exception as e:
            _raise_os_fault(e, path)  # a full disk is no exporter's fault: no fallback, no blame
            if exporter == "torchscript":
                raise ExportError(f"torch.onnx.export (TorchScript) failed: {_first_line(e)}") from None
            notes.append(f"the TorchScript exporter failed ({_first_line(e)[:120]}); used the dynamo exporter")
            path.unlink(missing_ok=True)
    try:
        _export(model, example, path, opset, batch, "dynamo", output)
    except Exception as e:
        _raise_os_fault(e, path)
        raise ExportError(f"torch.onnx.export (dynamo) failed: {_first_line(e)}") from None
    return "dynamo", notes


def _raise_os_fault(e: BaseException, path: Path) -> None:
    """An OSError anywhere in the chain (exporters wrap them) is the machine's refusal: say so, one line."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            raise write_fault(path.parent, seen) from None
        seen = seen.__cause__ or seen.__context__


def simplify_onnx(model: onnx.ModelProto, method: str) -> tuple[onnx.ModelProto, str, list[str]]:
    """Returns ``(model, simplifier actually used, notes)``; onnxsim falls back to onnxslim."""
    notes: list[str] = []
    if method == "none":
        return model, "none", notes
    if method == "onnxsim":
        try:
            import onnxsim

            with _quiet():
                simplified, ok = onnxsim.simplify(model)
            if ok:
                onnx.checker.check_model(simplified, full_check=True)
                return simplified, "onnxsim", notes
            notes.append("onnxsim could not verify its result; fell back to onnxslim")
        except Exception as e:
            notes.append(
                f"onnxsim failed ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}); "
                "fell back to onnxslim"
            )
    try:
        import onnxslim

        with _quiet():
            slim = onnxslim.slim(model)
        onnx.checker.check_model(slim, full_check=True)
        return slim, "onnxslim", notes
    except Exception as e:
        notes.append(f"onnxslim failed ({type(e).__name__}); kept the unsimplified graph")
        return model, "none", notes


def max_opset() -> int:
    """The newest opset both the installed exporter and onnx know (a newer request was silently lowered)."""
    import onnx

    try:
        from torch.onnx import _constants

        exporter_max = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # a private constant: absent, trust onnx alone
        exporter_max = 10**6
    return min(exporter_max, onnx.defs.onnx_opset_version())


def written_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def check_export_settings(
    opset: int, batch: int | None, simplify: str, output, parity_data=None, exporter: str = "auto"
) -> None:
    """Every flag problem is reported before any work (or warning) happens."""
    if opset < MIN_OPSET:
        raise UserError(
            f"opset {opset} is too old: emonas-edge exports need opset >= {MIN_OPSET} (LayerNormalization, dynamo)"
        )
    if opset > max_opset():
        raise UserError(f"opset {opset} is newer than this PyTorch / onnx can write (at most {max_opset()})")
    if exporter not in EXPORTERS:
        raise UserError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if simplify not in SIMPLIFIERS:
        raise UserError(f"--simplify must be one of {', '.join(SIMPLIFIERS)}, got {simplify!r}")
    if batch is not None and not 1 <= batch <= 4096:
        raise UserError(f"batch must be 'dynamic' or an integer from 1 to 4096, got {batch}")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} exists and is not a folder")
    check_writable_location(out_dir, "--output")
    if parity_data is not None and not Path(parity_data).exists():
        raise UserError(f"parity data not found: {parity_data}")


def _write_checked_onnx(
    model: torch.nn.Module,
    config: ModelConfig,
    path: Path,
    opset: int,
    batch: int | None,
    exporter: str,
    simplify: str,
    params: int,
    macs: int,
    notes: list[str],
    log: Callable[[str], None],
) -> tuple[str, str, dict[str, float]]:
    """Export, check, simplify and label ``path``; returns ``(exporter used, simplifier used, seconds per step)``."""
    name = config.name
    t = time.perf_counter()
    used_exporter, export_notes = torch_to_onnx(
        model, config.input_shape, path, opset, batch, exporter, output_kind(config)
    )
    t_export = time.perf_counter() - t
    notes += export_notes
    log(
        f"exported {name} ({config.family}, {params:,} params) with the {used_exporter} exporter, "
        f"opset {opset}, in {t_export:.1f} s"
    )
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"exported graph failed onnx.checker: {str(e).splitlines()[0][:200]}") from None
    t = time.perf_counter()
    proto, used_simplifier, simplify_notes = simplify_onnx(proto, simplify)
    t_simplify = time.perf_counter() - t
    notes += simplify_notes
    log(f"checked and simplified ({used_simplifier})")
    proto.doc_string = f"{name}: {config.task}-expression {config.family} network exported by emonas-edge {__version__}"
    write_metadata(proto, build_metadata(config, params, macs, __version__, batch))
    onnx.save(proto, str(path))
    return used_exporter, used_simplifier, {"export": round(t_export, 3), "simplify": round(t_simplify, 3)}


def _model_summary(config: ModelConfig, name: str, params: int, macs: int, batch: int | None) -> dict:
    return {
        "name": name,
        "task": config.task,
        "family": config.family,
        "params": params,
        "macs": macs,
        "trained": config.trained,
        "classes": list(config.classes),
        "input_spec": json.loads(build_metadata(config, params, macs, __version__, batch)["input_spec"]),
    }


def export_onnx(
    config: ModelConfig,
    model: torch.nn.Module,
    output: str | os.PathLike = "export",
    *,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    simplify: str = "onnxsim",
    parity_data: str | os.PathLike | None = None,
    random_inputs: bool = False,
    atol: float = 1e-4,
    weights: str | os.PathLike | None = None,
    exporter: str = "auto",
    log: Callable[[str], None] = lambda msg: None,
) -> ExportResult:
    """Export ``model`` (built from ``config``) to ``output/<name>.onnx`` plus its manifest.

    Raises :class:`UserError` for bad settings and :class:`CheckFailed` if the parity check
    fails (nothing is written then).
    """
    t0 = time.perf_counter()
    check_export_settings(opset, batch, simplify, output, parity_data, exporter)
    name = check_safe_name(config.name, "model name")
    out_dir = Path(output)
    target = out_dir / artifact_name(name)
    manifest_path = out_dir / manifest_name(target.name)

    model = model.eval()
    params = count_params(model)
    macs = macs_torch(model, config.input_shape)
    x, described = parity_inputs(config, parity_data, random=random_inputs)
    notes: list[str] = []

    with atomic_outputs(target, manifest_path) as (tmp_onnx, tmp_manifest):
        used_exporter, used_simplifier, timings = _write_checked_onnx(
            model, config, tmp_onnx, opset, batch, exporter, simplify, params, macs, notes, log
        )
        t = time.perf_counter()
        parity = check_parity(model, tmp_onnx, x, described, static_batch=batch, atol=atol)
        timings["parity"] = round(time.perf_counter() - t, 3)
        if not parity.passed:
            raise CheckFailed(
                f"ONNX Runtime output differs from PyTorch: max abs diff {parity.max_abs_diff:.3g} > tolerance "
                f"{parity.tolerance:.3g}",
                parity.to_dict(),
            )
        timings["total"] = round(time.perf_counter() - t0, 3)
        written = written_opset(tmp_onnx)
        if written != opset:
            notes.append(f"opset {opset} was asked for; the exporter wrote opset {written}")
        manifest = make_manifest(
            tmp_onnx,
            target.name,
            "fp32",
            _model_summary(config, name, params, macs, batch),
            opset=written,
            batch="dynamic" if batch is None else batch,
            weights={"path": recorded_path(weights), "sha256": sha256_file(weights)} if weights else None,
            exporter={"requested": exporter, "used": used_exporter},
            simplifier={"requested": simplify, "used": used_simplifier},
            parity=parity.to_dict(),
            notes=notes,
            timings_s=timings,
            config=config.to_dict(),
        )
        write_manifest(tmp_manifest, manifest)
    return ExportResult(target, manifest_path, manifest, parity, notes)


__all__ = ["export_onnx", "ExportResult", "FORMATS", "simplify_onnx", "torch_to_onnx"]
