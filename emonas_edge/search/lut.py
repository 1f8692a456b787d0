"""The latency table of a target device: every block of a search space, timed as ONNX Runtime runs it.

Why blocks in place and not bare PyTorch modules: ONNX Runtime folds BatchNorm into convolutions,
fuses Conv+ReLU, and (INT8) chooses per node whether to run it quantized, which depends on the
neighbours (a pooling alone has no weights and stays float; between quantized convolutions it
runs as QLinearAveragePool or in uint8). So each block is exported, simplified and quantized
inside a *sandwich* (a 1x1 convolution before it, a ReLU-1x1 convolution after it, as in a
cell), timed with the project's one timing method, and the empty sandwich's halves are
subtracted. Every timing group also runs a per-call overhead model and a fixed *anchor*
network; times are divided by the anchor's time in the same group, because this VM's speed
drifts by up to ~2x within minutes (the same 72 networks timed twice, twenty minutes apart,
differed by 0.64-1.91x before the anchor). A handful of whole networks, timed the same way,
fit ``measured = a + b * (overhead + sum of blocks)``.

The table records what it was measured on and for which input spec, backend, threads and
precision; :func:`load_lut` refuses a table for another spec or backend and warns on another CPU.
"""

from __future__ import annotations

import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..environment import cpu_model, environment
from ..errors import UserError
from ..export.formats import PRECISIONS
from ..fileio import read_json, write_json_atomic
from ..genotype import Genotype
from .blocks import block_module, edge_key, k_add, k_concat, k_fr, k_head, k_pre, k_stem, network_blocks
from .space import SearchSpace, genotype_of, stage_shapes

FORMAT = "emonas-lut/2"  # 2: in-place (sandwich) timing, anchor units, ops after a factorized reduce keyed apart
BACKENDS = ("ort",)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# the artifact precisions a table can time (export/formats.py holds them all); fp16 runs as fp32 on ORT's CPU
TIMED_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")


@dataclass
class LutSettings:
    backend: str = "ort"
    provider: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    iters: int = 400
    warmup: int = 40
    group: int = 6  # blocks timed interleaved with the reference at a time
    calibration_networks: int = 8
    seed: int = 0

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(
                f"unknown latency backend {self.backend!r} (choose from: {', '.join(BACKENDS)}; TensorRT tables are "
                "not built by this version)"
            )
        if self.provider not in PROVIDERS:
            raise UserError(f"unknown provider {self.provider!r} (choose from: {', '.join(PROVIDERS)})")
        if self.precision not in TIMED_PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r} (choose from: {', '.join(TIMED_PRECISIONS)})")
        if self.threads < 1 or self.iters < 10 or self.warmup < 0 or self.group < 1 or self.calibration_networks < 0:
            raise UserError("--threads must be >= 1, --iters >= 10, --warmup >= 0, calibration networks >= 0")


@dataclass
class LatencyTable:
    space: SearchSpace
    settings: LutSettings
    blocks: dict[str, float]
    overhead_ms: float
    a: float = 0.0
    b: float = 1.0
    device: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)
    seconds: float = 0.0

    def raw_ms(self, keys) -> float:
        missing = sorted({k for k in keys if k not in self.blocks})
        if missing:
            raise UserError(
                f"the latency table has no entry for {missing[0]} ({len(missing)} missing): the network is outside "
                "the table's search space"
            )
        return self.overhead_ms + sum(self.blocks[k] for k in keys)

    def predict_ms(self, config: ModelConfig, *, drop_dead: bool = True) -> float:
        """Predicted batch-1 latency of a cell network from the table's space (``drop_dead``: see
        :func:`~emonas_edge.search.blocks.network_blocks`)."""
        return self.a + self.b * self.raw_ms(network_blocks(config, drop_dead=drop_dead))

    def to_dict(self) -> dict:
        s = self.settings
        return {
            "format": FORMAT,
            "space": self.space.to_dict(),
            "backend": s.backend,
            "provider": s.provider,
            "threads": s.threads,
            "precision": s.precision,
            "timing": {
                "iters": s.iters,
                "warmup": s.warmup,
                "group": s.group,
                "statistic": "p50 minus the reference model's p50 in the same interleaved group",
            },
            "device": self.device,
            "overhead_ms": self.overhead_ms,
            "fit": {"a": self.a, "b": self.b, "networks": self.calibration},
            "seconds": round(self.seconds, 1),
            "blocks": self.blocks,
        }


# --------------------------------------------------------------------------- which blocks a space needs


def space_blocks(space: SearchSpace) -> list[str]:
    """Every block any network of the space can run (each op at each place the supernet puts it)."""
    keys: dict[str, None] = {}
    mult = space.multiplier
    for width in space.widths:
        shapes = stage_shapes(space, width)
        keys[k_stem(space.in_channels, mult * width, space.stem_stride, space.input_size)] = None
        c_prev_out = mult * width
        for stage, (c, res) in enumerate(shapes):
            if stage > 0:
                # the reduction cell entering this stage: inputs at the previous stage's resolution
                for key in _all_cell_blocks(
                    space, reduction=True, reduction_prev=False, c_pp=c_prev_out, c_p=c_prev_out, c=c, res=2 * res
                ):
                    keys[key] = None
            after_reduction = stage > 0
            for key in _all_cell_blocks(
                space,
                reduction=False,
                reduction_prev=after_reduction,
                c_pp=c_prev_out if after_reduction else mult * c,
                c_p=mult * c,
                c=c,
                res=res,
            ):
                keys[key] = None
            if after_reduction:  # later normal cells of the stage read two same-stage outputs
                for key in _all_cell_blocks(
                    space, reduction=False, reduction_prev=False, c_pp=mult * c, c_p=mult * c, c=c, res=res
                ):
                    keys[key] = None
            c_prev_out = mult * c
        keys[k_head(mult * shapes[-1][0], space.num_classes, shapes[-1][1])] = None
    return list(keys)


def _all_cell_blocks(
    space: SearchSpace, *, reduction: bool, reduction_prev: bool, c_pp: int, c_p: int, c: int, res: int
) -> list[str]:
    """Blocks of a cell at this shape whatever its genotype: both preprocessings, every op from every input."""
    r_out = res // 2 if reduction else res
    keys = [
        k_fr(c_pp, c, 2 * res) if reduction_prev else k_pre(c_pp, c, res),
        k_pre(c_p, c, res),
        k_add(c, r_out),
        k_concat(space.nodes, c, r_out),
    ]
    key = partial(edge_key, reduction=reduction, reduction_prev=reduction_prev, c_pp=c_pp, c=c, res=res)
    for op in space.ops:
        keys += [key(op, j) for j in range(min(space.nodes + 1, 3))]  # inputs 0 and 1, an earlier node
    return [k for k in keys if k]


# --------------------------------------------------------------------------- export and timing


def _fr_from(key: str | None) -> int | None:
    last = key.split(":")[-1] if key else ""
    return int(last[2:]) if key and key.startswith("op:") and last.startswith("fr") else None


def _sandwich(key: str | None, context: tuple | None = None):
    """``(module, input shape, output shape)``: the block between the layers it meets in a network.

    Alone, a block is quantized differently from inside a network (no weights -> a pooling
    stays float; the input needs its own QuantizeLinear): a 1x1 convolution before it (a factorized
    reduce for ops that read one) and a ReLU-1x1 convolution after it put it where a network puts
    it. ``key=None`` builds the empty sandwich of a ``context`` (see :func:`_context_shapes`).
    """
    import torch
    from torch import nn

    from ..nn.ops import FactorizedReduce, ReLUConvBN

    fr = _fr_from(key)
    if key is None:
        if context is None:
            raise ValueError("an empty sandwich needs its context")
        kind, c, r = context[0], context[-2], context[-1]
        block, shapes, pre, post = nn.Identity(), [(1, c, r, r)], True, True
        fr = context[1] if kind == "fr" else None
    else:
        block, shapes = block_module(key)
        pre, post = not key.startswith("stem:"), not key.startswith("head:")
    block.eval()
    with torch.no_grad():
        out = block(*(torch.zeros(*sh) for sh in shapes))
    c, r, cout = shapes[0][1], shapes[0][2], out.shape[1]
    x_shape = (1, fr, 2 * r, 2 * r) if fr else (1, c, r, r) if pre else shapes[0]

    class Sandwich(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = (
                nn.ModuleList((FactorizedReduce(fr, c) if fr else ReLUConvBN(c, c, 1, 1, 0)) for _ in shapes)
                if pre
                else None
            )
            self.block = block
            self.post = ReLUConvBN(cout, cout, 1, 1, 0) if post else None

        def forward(self, x):
            y = self.block(*([p(x) for p in self.pre] if self.pre is not None else [x]))
            return self.post(y) if self.post is not None else y

    return Sandwich().eval(), x_shape, out.shape


def _export_module(module, shape: tuple, path: Path, precision: str) -> None:
    import onnx
    import onnxsim
    import torch

    _torch_export(module, (torch.randn(*shape),), path, ["in0"])
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if ok:
        onnx.save(simplified, str(path))
    if precision == "int8":
        _quantize_random(path, ["in0"], [tuple(shape)])


def _like_trained(module):
    """Give BatchNorm layers trained-looking statistics before export.

    Freshly initialised BN folds into identical all-zero biases, which the simplifier merges into one
    shared initializer; ONNX Runtime's quantizer then leaves those biases in float and the INT8 graph
    falls back to float convolutions (2-4x slower here). Trained models never look like that.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.running_mean is not None and m.running_var is not None:  # tracked statistics (all BNs here)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return module


def _torch_export(module, examples: tuple, path: Path, names: list[str]) -> None:
    import contextlib
    import io

    import torch

    _like_trained(module)

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            examples,
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=names,
            output_names=["out"],
            do_constant_folding=True,
        )


def _quantize_random(path: Path, names: list[str], shapes: list[tuple]) -> None:
    """INT8 with the shipped QDQ settings; latency does not depend on the calibration values, so
    random activations of the right shape calibrate."""
    from onnxruntime.quantization import CalibrationDataReader

    from ..export.precision import quantize_qdq

    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.left = 4

        def get_next(self):
            if not self.left:
                return None
            self.left -= 1
            return {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes, strict=True)}

    src = path.with_suffix(".fp32.onnx")
    path.rename(src)
    quantize_qdq(src, path, Reader())
    src.unlink()


def _session(path: Path, settings: LutSettings):
    import onnxruntime as ort

    provider = PROVIDERS[settings.provider]
    if provider not in ort.get_available_providers():
        raise UserError(
            f"ONNX Runtime provider {settings.provider!r} is not available here (available: "
            f"{', '.join(ort.get_available_providers())})"
        )
    o = ort.SessionOptions()
    o.intra_op_num_threads = settings.threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    sess = ort.InferenceSession(
        str(path), o, providers=[provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
    )
    feeds = {
        i.name: np.random.default_rng(1)
        .standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
        .astype(np.float32)
        for i in sess.get_inputs()
    }
    return lambda: sess.run(None, feeds)


class _References:
    """What every timing group runs besides its own models.

    ``overhead``: a one-node model on a tiny tensor (the per-call cost). ``anchor``: one fixed
    network of the space. This VM's speed drifts by up to ~2x within minutes, so a group's times
    are divided by the anchor's time in the same group: everything is in anchor units, turned
    back into ms with the anchor's median over the whole session.
    """

    def __init__(self, tmp: Path, settings: LutSettings, space: SearchSpace):
        import torch

        path = tmp / "reference.onnx"
        _torch_export(torch.nn.ReLU(), (torch.randn(1, 1, 2, 2),), path, ["in0"])
        self.overhead = _session(path, settings)
        path = tmp / "anchor.onnx"
        network_onnx(anchor_config(space), path, settings.precision)
        self.anchor = _session(path, settings)
        self.anchor_ms: list[float] = []
        self.overhead_units: list[float] = []

    def time(self, fns: dict[str, Callable], settings: LutSettings) -> dict[str, float]:
        """``{name: anchor units}`` of one interleaved group."""
        from ..profile.timing import time_interleaved

        t = time_interleaved(
            {**fns, "__overhead__": self.overhead, "__anchor__": self.anchor},
            iters=settings.iters,
            warmup=settings.warmup,
            block=max(10, settings.iters // 10),
        )
        anchor = t.pop("__anchor__").p50_ms
        self.anchor_ms.append(anchor)
        self.overhead_units.append(t.pop("__overhead__").p50_ms / anchor)
        return {k: v.p50_ms / anchor for k, v in t.items()}

    def ms(self) -> float:
        """One anchor unit in ms: the anchor's median over the session."""
        return float(np.median(self.anchor_ms))


def anchor_config(space: SearchSpace) -> ModelConfig:
    """A plain network in the middle of the space (3x3 convolutions at the middle width)."""
    op = "conv_3x3" if "conv_3x3" in space.ops else space.ops[0]
    cell = [(op, n // 2 + 1) for n in range(2 * space.nodes)]  # a chain: node i reads the state before it
    widths = sorted(space.widths)
    return space.config(
        genotype_of(cell, cell, space.nodes), widths[len(widths) // 2], min(space.depths), name="anchor"
    )


def _context_shapes(key: str) -> tuple[list[tuple], tuple | None]:
    """The empty sandwiches a block's sandwich shares sides with: ("plain", c, r) per 1x1-conv
    input side, ("fr", cin, c, r) for a factorized-reduce one, and ("plain", c, r) for the output side."""
    module, shape, out_shape = _sandwich(key)
    fr = _fr_from(key)
    n_in = len(module.pre) if module.pre is not None else 0
    c, r = (shape[1], shape[2]) if not fr else (block_module(key)[1][0][1], shape[2] // 2)
    ins = [("fr", fr, c, r) if fr else ("plain", c, r)] * n_in
    out = ("plain", out_shape[1], out_shape[2]) if module.post is not None else None
    return ins, out


def _side_costs(empty: dict, overhead: float) -> Callable[[tuple], float]:
    """A side's cost in anchor units: half an empty plain sandwich (its two sides are nearly the
    same layer); a factorized-reduce side is its empty sandwich minus the plain half after it."""

    def cost(ctx: tuple) -> float:
        half = (empty[("plain", ctx[-2], ctx[-1])] - overhead) / 2
        return empty[ctx] - overhead - half if ctx[0] == "fr" else half

    return cost


def _time_keys(
    keys: list, build, settings: LutSettings, tmp: Path, refs: _References, progress=None, done: int = 0, total: int = 0
) -> dict:
    out = {}
    for start in range(0, len(keys), settings.group):
        chunk = keys[start : start + settings.group]
        fns = {}
        for n, key in enumerate(chunk):
            path = tmp / f"b{start + n}.onnx"
            module, shape, _ = build(key)
            _export_module(module, shape, path, settings.precision)
            fns[key] = _session(path, settings)
        out.update(refs.time(fns, settings))
        if progress:
            progress(done + min(start + settings.group, len(keys)), total)
    return out


def time_blocks(
    keys: list[str], space: SearchSpace, settings: LutSettings, progress: Callable[[int, int], None] | None = None
) -> tuple[dict[str, float], float, float]:
    """``{block: ms}`` and the per-call overhead, each block timed inside its sandwich.

    A sandwich runs overhead + its input sides + block + output side, so block = sandwich -
    overhead - the sides' costs (:func:`_side_costs`), each measured in an empty sandwich.
    """
    contexts = {k: _context_shapes(k) for k in keys}
    sides = {s for ins, out in contexts.values() for s in ins + ([out] if out else [])}
    shapes = sorted(sides | {("plain", s[-2], s[-1]) for s in sides}, key=str)
    total = len(keys) + len(shapes)
    with tempfile.TemporaryDirectory(prefix="emonas-lut-") as tmp_name:
        tmp = Path(tmp_name)
        refs = _References(tmp, settings, space)
        empty = _time_keys(shapes, lambda sh: _sandwich(None, sh), settings, tmp, refs, progress, 0, total)
        full = _time_keys(keys, _sandwich, settings, tmp, refs, progress, len(shapes), total)
    unit = refs.ms()
    overhead = float(np.median(refs.overhead_units))
    cost = _side_costs(empty, overhead)
    out = {}
    for key in keys:
        ins, outs = contexts[key]
        out[key] = unit * max(0.0, full[key] - overhead - sum(cost(c) for c in ins + ([outs] if outs else [])))
    return out, unit * overhead, unit


def network_onnx(config: ModelConfig, path: Path, precision: str) -> None:
    """A whole network exported, simplified and (int8) quantized exactly as its blocks were."""
    import onnx
    import onnxsim
    import torch

    from ..nn import create_model

    model = create_model(config).eval()
    _torch_export(model, (torch.randn(1, *config.input_shape),), path, ["in0"])
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if ok:
        onnx.save(simplified, str(path))
    if precision == "int8":
        _quantize_random(path, ["in0"], [(1, *config.input_shape)])


def time_networks(
    configs: list[ModelConfig],
    space: SearchSpace,
    settings: LutSettings,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Measured batch-1 median latency (ms) of whole networks, in anchor units of this session (see
    :class:`_References`)."""
    units: list[float] = []
    with tempfile.TemporaryDirectory(prefix="emonas-nets-") as tmp_name:
        tmp = Path(tmp_name)
        refs = _References(tmp, settings, space)
        for start in range(0, len(configs), settings.group):
            fns = {}
            for n, config in enumerate(configs[start : start + settings.group]):
                path = tmp / f"n{start + n}.onnx"
                network_onnx(config, path, settings.precision)
                fns[str(start + n)] = _session(path, settings)
            t = refs.time(fns, settings)
            units += [t[str(start + n)] for n in range(len(fns))]
            if progress:
                progress(len(units), len(configs))
        return [u * refs.ms() for u in units]


def random_genotype(space: SearchSpace, rng: random.Random) -> Genotype:
    def cell() -> list[tuple[str, int]]:
        return [(rng.choice(space.ops), rng.randrange(node + 2)) for node in range(space.nodes) for _ in range(2)]

    return genotype_of(cell(), cell(), space.nodes)


def random_configs(space: SearchSpace, n: int, seed: int) -> list[ModelConfig]:
    rng = random.Random(seed)
    return [
        space.config(random_genotype(space, rng), rng.choice(space.widths), rng.choice(space.depths), name=f"random{i}")
        for i in range(n)
    ]


def _fit(raw: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """``measured = a + b * raw`` as (b, a). A negative intercept or a slope at or below zero (a few noisy
    networks on a loaded machine: seen in CI, a slope that predicted a large network below zero) would predict
    networks below zero, so then the line goes through the origin (and keeps the table's scale, b = 1, if even
    that slope is not positive)."""
    b, a = (float(v) for v in np.polyfit(raw, measured, 1))
    if a < 0 or b <= 0:
        through = float(raw @ measured / (raw @ raw)) if float(raw @ raw) > 0 else 0.0
        b, a = (through if through > 0 else 1.0), 0.0
    return b, a


def build_lut(
    space: SearchSpace, settings: LutSettings, progress: Callable[[str, int, int], None] | None = None
) -> LatencyTable:
    settings.check()
    t0 = time.perf_counter()
    keys = space_blocks(space)
    blocks, overhead, anchor = time_blocks(
        keys, space, settings, (lambda i, n: progress("blocks", i, n)) if progress else None
    )
    table = LatencyTable(space, settings, blocks, overhead, device={**_device(settings), "anchor_ms": anchor})
    if settings.calibration_networks >= 2:
        configs = random_configs(space, settings.calibration_networks, seed=10_000 + settings.seed)
        measured = time_networks(
            configs, space, settings, (lambda i, n: progress("networks", i, n)) if progress else None
        )
        raw = [table.raw_ms(network_blocks(c)) for c in configs]
        table.b, table.a = _fit(np.asarray(raw), np.asarray(measured))
        table.calibration = [
            {
                "layers": c.network["layers"],
                "init_channels": c.network["init_channels"],
                "raw_ms": round(r, 5),
                "measured_ms": round(m, 5),
            }
            for c, r, m in zip(configs, raw, measured, strict=True)
        ]
    table.seconds = time.perf_counter() - t0
    return table


def _device(settings: LutSettings) -> dict:
    env = environment(("onnxruntime", "onnx", "torch", "emonas-edge"))
    return {
        "cpu": env["cpu"],
        "cpu_count": env["cpu_count"],
        "platform": env["platform"],
        "packages": env["packages"],
        "provider": PROVIDERS[settings.provider],
    }


# --------------------------------------------------------------------------- files


def save_lut(table: LatencyTable, path: str | Path) -> Path:
    return write_json_atomic(path, table.to_dict())


def lut_from_dict(d: object, source: str) -> LatencyTable:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise UserError(f"{source} is not an emonas-edge latency table (format {FORMAT!r})")
    try:
        space = SearchSpace.from_dict(d["space"], source)
        settings = LutSettings(
            backend=d["backend"],
            provider=d["provider"],
            threads=int(d["threads"]),
            precision=d["precision"],
            iters=int(d["timing"]["iters"]),
            warmup=int(d["timing"]["warmup"]),
            group=int(d["timing"]["group"]),
        )
        settings.check()
        blocks = {str(k): float(v) for k, v in d["blocks"].items()}
        fit = d["fit"]
        return LatencyTable(
            space,
            settings,
            blocks,
            float(d["overhead_ms"]),
            float(fit["a"]),
            float(fit["b"]),
            dict(d.get("device", {})),
            list(fit.get("networks", [])),
            float(d.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{source} is a damaged latency table ({type(e).__name__}: {e})") from None


def load_lut(
    path: str | Path,
    *,
    in_channels: int | None = None,
    input_size: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Read a table; refuse one made for another input spec, backend or precision; warn on another CPU."""
    table = lut_from_dict(read_json(path, "latency table"), str(path))
    s, sp = table.settings, table.space
    if (
        in_channels is not None
        and in_channels != sp.in_channels
        or input_size is not None
        and input_size != sp.input_size
    ):
        raise UserError(
            f"{path} was built for {sp.in_channels}x{sp.input_size}x{sp.input_size} inputs, not "
            f"{in_channels or sp.in_channels}x{input_size or sp.input_size}x{input_size or sp.input_size}: build a "
            "table for this input spec"
        )
    if backend is not None and backend != s.backend:
        raise UserError(f"{path} was built for backend {s.backend!r}, not {backend!r}")
    if precision is not None and precision != s.precision:
        raise UserError(f"{path} was built for {s.precision}, not {precision}: build a table for this precision")
    here = cpu_model()
    if table.device.get("cpu") and table.device["cpu"] != here:
        (warn or (lambda m: warnings.warn(m, stacklevel=2)))(
            f"{path} was measured on '{table.device['cpu']}', this machine is '{here}': its predictions may not hold "
            "here"
        )
    return table
