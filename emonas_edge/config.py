"""``ModelConfig``: everything needed to rebuild a network and feed it correctly.

One object travels from the genotype file into the checkpoint, the ONNX metadata and the
manifest, so nothing downstream (export, runtime, pipeline) asks the user again for input
size, colour, normalisation or labels. The JSON form is the genotype file format.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .fileio import check_safe_name, loads_json_limited, read_text_limited
from .genotype import CELL_KEYS, Genotype, genotype_from_dict, parse_darts_text

FORMAT = "emonas-genotype/1"
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
MEGC_CLASSES = ("negative", "positive", "surprise")
TASKS = ("macro", "micro")
FAMILIES = ("cell", "mit")

# SegFormer's widths and depths (Xie et al., 2021); a MiT network may override any of them.
MIT_VARIANTS: dict[str, dict[str, Any]] = {
    "b0": dict(dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8), decoder=256),
    "b1": dict(dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8), decoder=256),
    "b2": dict(dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), heads=(1, 2, 5, 8), decoder=768),
}


def _ints(v, n: int, lo: int, hi: int) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) == n
        and all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)
    )


# Network settings per family: name -> (default, check, description). Defaults are the
# text-genotype defaults of the issue tracker: 1x48x48 gray, 16 channels, 8 cells.
Setting = tuple[Any, Callable[[Any], bool], str]
_COMMON: dict[str, Setting] = {
    "in_channels": (1, lambda v: v in (1, 3), "1 (gray) or 3 (RGB)"),
    "input_size": (48, lambda v: isinstance(v, int) and 8 <= v <= 1024, "an integer from 8 to 1024"),
    "num_classes": (None, lambda v: isinstance(v, int) and 2 <= v <= 10000, "an integer >= 2"),
    "drop_path": (0.0, lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a probability in [0, 1)"),
    "dropout": (0.0, lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a probability in [0, 1)"),
    # Average each prediction over the image and its mirror inside the network (nn/flip.py).
    "test_time_flip": (False, lambda v: isinstance(v, bool), "true or false"),
}
NETWORK_KEYS: dict[str, dict[str, Setting]] = {
    "cell": {
        **_COMMON,
        "init_channels": (16, lambda v: isinstance(v, int) and 2 <= v <= 1024 and v % 2 == 0, "an even integer >= 2"),
        "layers": (8, lambda v: isinstance(v, int) and 3 <= v <= 64, "an integer from 3 to 64"),
        "auxiliary": (False, lambda v: isinstance(v, bool), "true or false"),
        "stem_stride": (1, lambda v: v in (1, 2), "1 or 2"),
        "stem_multiplier": (3, lambda v: isinstance(v, int) and 1 <= v <= 8, "an integer from 1 to 8"),
    },
    "mit": {
        **_COMMON,
        "variant": ("b0", lambda v: v in MIT_VARIANTS, "b0, b1 or b2"),
        # Each defaults to the variant's; set them for smaller (edge) or custom MiTs.
        "dims": (None, lambda v: v is None or _ints(v, 4, 8, 2048), "4 integers from 8 to 2048 (stage widths)"),
        "depths": (None, lambda v: v is None or _ints(v, 4, 1, 16), "4 integers from 1 to 16 (blocks per stage)"),
        "heads": (
            None,
            lambda v: v is None or _ints(v, 4, 1, 64),
            "4 integers from 1 to 64 (attention heads per stage)",
        ),
        "decoder": (
            None,
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096),
            "an integer from 8 to 4096 (fusion width)",
        ),
        # Key/value shrink per stage; unset: SegFormer's (8, 4, 2, 1), each lowered until the shrunk grid
        # keeps at least 4x4 positions (at 48x48 input an 8x shrink would leave stage 1 one key).
        "sr_ratios": (None, lambda v: v is None or _ints(v, 4, 1, 32), "4 integers from 1 to 32 (key/value shrink)"),
        # The paper's multiscale fusion block; false classifies from the last stage alone (its ablation).
        "fusion": (True, lambda v: isinstance(v, bool), "true or false"),
    },
}
TOP_KEYS = {
    "format",
    "name",
    "task",
    "family",
    "network",
    "classes",
    "preprocess",
    "trained",
    "description",
    "meta",
    *CELL_KEYS,
}


@dataclass(frozen=True)
class Preprocess:
    """Pixels are scaled to [0, 1], then ``(x - mean) / std`` per channel; gray means one channel."""

    grayscale: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"grayscale": self.grayscale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    task: str
    family: str
    network: dict
    classes: tuple[str, ...]
    preprocess: Preprocess
    genotype: Genotype | None = None
    trained: bool = False
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.network["in_channels"]

    @property
    def input_size(self) -> int:
        return self.network["input_size"]

    @property
    def num_classes(self) -> int:
        return self.network["num_classes"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    def input_spec(self) -> dict:
        return {
            "name": "input",
            "shape": ["batch", *self.input_shape],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "gray" if self.preprocess.grayscale else "rgb",
            "scale": "1/255",
            "mean": list(self.preprocess.mean),
            "std": list(self.preprocess.std),
        }

    def to_dict(self) -> dict:
        d: dict = {"format": FORMAT, "name": self.name, "task": self.task, "family": self.family}
        if self.genotype is not None:
            d.update(self.genotype.to_dict())
        d["network"] = dict(self.network)
        d["classes"] = list(self.classes)
        d["preprocess"] = self.preprocess.to_dict()
        d["trained"] = self.trained
        if self.description:
            d["description"] = self.description
        if self.meta:
            d["meta"] = copy.deepcopy(self.meta)
        return d

    def replace(self, **changes) -> ModelConfig:
        d = self.to_dict()
        d.update(changes)
        return config_from_dict(d)


def default_classes(task: str, n: int) -> tuple[str, ...]:
    if task == "macro" and n == len(FER2013_CLASSES):
        return FER2013_CLASSES
    if task == "micro" and n == len(MEGC_CLASSES):
        return MEGC_CLASSES
    return tuple(f"class_{i}" for i in range(n))


def _choice(d: dict, key: str, options: tuple[str, ...], default: str) -> str:
    v = d.get(key, default)
    if v not in options:
        raise UserError(f"'{key}' must be one of {', '.join(options)}, got {v!r}")
    return v


def supported_sizes_message(family: str, network: dict) -> str | None:
    """None when ``input_size`` works for this network, else a message saying which sizes do."""
    size = network["input_size"]
    if family == "cell":
        step = 4 * network["stem_stride"]
        if size % step or size < 4 * step:
            examples = ", ".join(str(s) for s in (48, 64, 112, 128) if s % step == 0)
            return (
                f"input_size {size} is not supported by this cell network: with stem_stride {network['stem_stride']} "
                f"and two reduction cells it must be a multiple of {step} and at least {4 * step} (e.g. {examples})"
            )
    elif family == "mit" and size < 32:
        return f"input_size {size} is not supported by the MiT family: it must be at least 32 (e.g. 48, 64, 112)"
    return None


def mit_grids(input_size: int) -> list[int]:
    """Each MiT stage's token grid side: a stride-4 patch embedding (7x7, padding 3), then stride 2 (3x3, padding 1)."""
    sides, side = [], (input_size + 2 * 3 - 7) // 4 + 1
    for _ in range(4):
        sides.append(side)
        side = (side + 2 - 3) // 2 + 1
    return sides


def auto_sr_ratios(input_size: int) -> list[int]:
    ratios = []
    for r, side in zip((8, 4, 2, 1), mit_grids(input_size), strict=True):
        while r > 1 and side // r < 4:
            r //= 2
        ratios.append(r)
    return ratios


def _resolve_mit(network: dict, source: str) -> None:
    """Unset widths/depths/heads/decoder come from the variant, so a config always says what it builds."""
    base = MIT_VARIANTS[network["variant"]]
    for key in ("dims", "depths", "heads"):
        network[key] = list(network[key] if network[key] is not None else base[key])
    if network["decoder"] is None:
        network["decoder"] = base["decoder"]
    if network["sr_ratios"] is None:
        network["sr_ratios"] = auto_sr_ratios(network["input_size"])
    network["sr_ratios"] = list(network["sr_ratios"])
    bad = [f"{d}/{h}" for d, h in zip(network["dims"], network["heads"], strict=True) if d % h]
    if bad:
        raise UserError(
            f"{source}: MiT stage widths must divide by their head counts; not so for {', '.join(bad)} (dims/heads)"
        )


def _network_settings(d: dict, family: str, task: str, classes_in: list | None, source: str) -> dict[str, Any]:
    """The ``network`` object checked key by key against the family's spec, defaults filled in."""
    net_in = d.get("network", {})
    if not isinstance(net_in, dict):
        raise UserError(f"{source}: 'network' must be an object")
    spec = NETWORK_KEYS[family]
    bad = sorted(set(net_in) - set(spec))
    if bad:
        raise UserError(
            f"{source}: unknown network setting(s) {', '.join(map(repr, bad))} for family '{family}'; "
            f"allowed: {', '.join(spec)}"
        )
    network: dict[str, Any] = {}  # settings of several types, each checked by its spec
    for key, (default, check, what) in spec.items():
        value = net_in.get(key, default)
        if key == "num_classes" and value is None:
            value = len(classes_in) if classes_in else (7 if task == "macro" else 3)
        if isinstance(value, bool) and key not in ("auxiliary", "test_time_flip", "fusion"):
            raise UserError(f"{source}: network '{key}' must be {what}, got {value!r}")
        if not check(value):
            raise UserError(f"{source}: network '{key}' must be {what}, got {value!r}")
        network[key] = value
    return network


def _class_names(d: dict, source: str) -> list | None:
    classes_in = d.get("classes")
    if classes_in is not None:
        if not isinstance(classes_in, list) or not all(isinstance(c, str) and c for c in classes_in):
            raise UserError(f"{source}: 'classes' must be a list of non-empty strings")
        if len(set(classes_in)) != len(classes_in):
            raise UserError(f"{source}: 'classes' has duplicates: {classes_in}")
    return classes_in


def _preprocess(d: dict, in_channels: int, source: str) -> Preprocess:
    """Gray or colour must agree with the input channels; mean and std default to 0.5 per channel."""
    pre_in = d.get("preprocess", {})
    if not isinstance(pre_in, dict) or set(pre_in) - {"grayscale", "mean", "std"}:
        raise UserError(f"{source}: 'preprocess' must be an object with grayscale, mean, std")
    c = in_channels
    grayscale = pre_in.get("grayscale", c == 1)
    if grayscale != (c == 1):
        raise UserError(f"{source}: preprocess grayscale={grayscale} contradicts in_channels={c}")
    mean = pre_in.get("mean", [0.5] * c)
    std = pre_in.get("std", [0.5] * c)
    for label, vals in (("mean", mean), ("std", std)):
        if (
            not isinstance(vals, list)
            or len(vals) != c
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        ):
            raise UserError(f"{source}: preprocess {label} must be a list of {c} number(s), got {vals!r}")
    if any(s <= 0 for s in std):
        raise UserError(f"{source}: preprocess std must be positive, got {std}")
    return Preprocess(bool(grayscale), tuple(float(v) for v in mean), tuple(float(v) for v in std))


def _typed(d: dict, key: str, default: Any, kind: type, what: str, source: str) -> Any:
    value = d.get(key, default)
    if not isinstance(value, kind):
        raise UserError(f"{source}: '{key}' must be {what}")
    return value


def config_from_dict(d: object, source: str = "genotype") -> ModelConfig:
    """A checked :class:`ModelConfig` from a genotype/config JSON object; every problem is a :class:`UserError`
    naming ``source`` and the key."""
    if not isinstance(d, dict):
        raise UserError(f"{source} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - TOP_KEYS)
    if unknown:
        raise UserError(
            f"{source} has unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(TOP_KEYS))}"
        )
    fmt = d.get("format", FORMAT)
    if fmt != FORMAT:
        raise UserError(f"{source} has format {fmt!r}; this version reads {FORMAT!r}")
    name = check_safe_name(d.get("name", "model"), "genotype name")
    task = _choice(d, "task", TASKS, "macro")
    family = _choice(d, "family", FAMILIES, "cell")

    genotype = None
    if family == "cell":
        genotype = genotype_from_dict(d)
    elif any(k in d for k in CELL_KEYS):
        raise UserError(
            f"{source}: family 'mit' takes no cell description (normal/reduce); remove it or use family 'cell'"
        )

    classes_in = _class_names(d, source)
    network = _network_settings(d, family, task, classes_in, source)
    classes = tuple(classes_in) if classes_in is not None else default_classes(task, network["num_classes"])
    if len(classes) != network["num_classes"]:
        raise UserError(f"{source}: {len(classes)} class names given but num_classes is {network['num_classes']}")

    msg = supported_sizes_message(family, network)
    if msg:
        raise UserError(f"{source}: {msg}")
    if family == "mit":
        _resolve_mit(network, source)
    preprocess = _preprocess(d, network["in_channels"], source)
    return ModelConfig(
        name=name,
        task=task,
        family=family,
        network=network,
        classes=classes,
        preprocess=preprocess,
        genotype=genotype,
        trained=_typed(d, "trained", False, bool, "true or false", source),
        meta=_typed(d, "meta", {}, dict, "an object", source),
        description=_typed(d, "description", "", str, "a string", source),
    )


def apply_overrides(d: object, overrides: dict | None) -> object:
    """Fold CLI flags (``input_size=64``, ``task='micro'``, ``classes=[...]``) into a raw config dict.

    Anything but a dict comes back unchanged, for ``config_from_dict`` to refuse with its message."""
    if not overrides or not isinstance(d, dict):
        return d
    d = copy.deepcopy(d)
    net = dict(d.get("network", {}))
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("name", "task", "family", "classes", "trained"):
            d[key] = value
        else:
            net[key] = value
    if ("in_channels" in overrides and overrides["in_channels"] is not None) and "preprocess" not in (overrides or {}):
        # A channel change invalidates the old normalisation; fall back to the defaults for the new count.
        d.pop("preprocess", None)
    if overrides.get("classes") is not None and overrides.get("num_classes") is None:
        net.pop("num_classes", None)
    d["network"] = net
    return d


def parse_genotype_text(
    text: str, source: str, select: str | None = None, overrides: dict | None = None
) -> ModelConfig:
    """Genotype JSON or DARTS ``Genotype(...)`` text -> validated config."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        raw = loads_json_limited(text, source)
    elif stripped.startswith("[") or not stripped:
        raise UserError(f"{source} is not a genotype: expected a JSON object or a DARTS Genotype(...) expression")
    else:
        var, g = parse_darts_text(text, select=select, source=source)
        raw = {
            "name": var or (re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).stem).strip("._-") or "genotype"),
            **g.to_dict(),
        }
    return config_from_dict(apply_overrides(raw, overrides), source)


def load_genotype_file(
    path: str | os.PathLike, select: str | None = None, overrides: dict | None = None
) -> ModelConfig:
    text = read_text_limited(path, "genotype file")
    return parse_genotype_text(text, str(path), select=select, overrides=overrides)
