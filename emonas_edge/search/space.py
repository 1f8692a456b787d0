"""The search space: which networks a search may return, and the blocks each one runs.

A searched network is an ordinary cell network (``cellnet``), so the space is described with the
genotype format's own knobs: the operations each node slot may use, the number of nodes per cell,
the first-stage width (``init_channels``) and the number of normal cells per stage (``layers`` =
3 x depth + 2: a depth-``d`` network has ``d`` normal cells in each of its three stages). On CPUs
width and depth decide latency as much as the operation does, so both are searched.

This module needs no PyTorch: the latency table, the predictor and configuration checks use it
without building a network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import FER2013_CLASSES, MEGC_CLASSES, ModelConfig, config_from_dict
from ..errors import UserError
from ..genotype import OP_NAMES, Genotype

# 'none' is a DARTS supernet device (an absent edge); a derived cell never contains it.
DEFAULT_OPS = tuple(op for op in OP_NAMES if op != "none")
DEFAULT_WIDTHS = (16, 20, 24, 28, 32)
DEFAULT_DEPTHS = (1, 2, 3)


def layers_for_depth(depth: int) -> int:
    """``cellnet`` puts its reductions at layers//3 and 2*layers//3: 3d+2 cells give d normal cells per stage."""
    return 3 * depth + 2


@dataclass(frozen=True)
class SearchSpace:
    in_channels: int = 1
    input_size: int = 48
    num_classes: int = 7
    task: str = "macro"
    ops: tuple[str, ...] = DEFAULT_OPS
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    nodes: int = 2
    stem_stride: int = 2
    classes: tuple[str, ...] = field(default=FER2013_CLASSES)

    def __post_init__(self):
        check_space(self)

    @property
    def multiplier(self) -> int:
        return self.nodes

    def input_spec(self) -> dict:
        return {"in_channels": self.in_channels, "input_size": self.input_size}

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict, source: str = "search space") -> SearchSpace:
        if not isinstance(d, dict):
            raise UserError(f"{source}: the search space must be an object")
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise UserError(f"{source}: unknown search-space key(s) {', '.join(bad)}")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**kw)
        except TypeError as e:
            raise UserError(f"{source}: malformed search space ({e})") from None

    def config(self, genotype: Genotype, width: int, depth: int, name: str = "searched") -> ModelConfig:
        """The cell-network config of one point of the space (what ``export --genotype`` builds)."""
        return config_from_dict(
            {
                "name": name,
                "task": self.task,
                "family": "cell",
                **genotype.to_dict(),
                "network": {
                    "in_channels": self.in_channels,
                    "input_size": self.input_size,
                    "num_classes": self.num_classes,
                    "init_channels": width,
                    "layers": layers_for_depth(depth),
                    "stem_stride": self.stem_stride,
                    "stem_multiplier": self.nodes,
                    "auxiliary": False,
                    "drop_path": 0.0,
                    "dropout": 0.0,
                },
                "classes": list(self.classes),
            },
            "search space",
        )


def default_classes_for(task: str, num_classes: int | None) -> tuple[str, ...]:
    if task == "micro" and num_classes in (None, 3):
        return MEGC_CLASSES
    if task == "macro" and num_classes in (None, 7):
        return FER2013_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes or 7))


def check_space(s: SearchSpace) -> None:
    """One line naming the first thing wrong with a space (CLI flags and LUT files both land here)."""
    unknown = [op for op in s.ops if op not in OP_NAMES]
    if unknown:
        raise UserError(
            f"unknown operation(s) {', '.join(map(repr, unknown))} in the op list; known: {', '.join(DEFAULT_OPS)}"
        )
    if "none" in s.ops:
        raise UserError("'none' cannot be searched: every node slot of a derived cell needs a real operation")
    if not s.ops or len(set(s.ops)) != len(s.ops):
        raise UserError(f"the op list must be non-empty and without repeats, got {list(s.ops)}")
    if (
        not s.widths
        or any(not isinstance(w, int) or w < 4 or w % 2 for w in s.widths)
        or len(set(s.widths)) != len(s.widths)
    ):
        raise UserError(f"widths must be distinct even integers >= 4, got {list(s.widths)}")
    if (
        not s.depths
        or any(not isinstance(d, int) or not 1 <= d <= 8 for d in s.depths)
        or len(set(s.depths)) != len(s.depths)
    ):
        raise UserError(f"depths (normal cells per stage) must be distinct integers from 1 to 8, got {list(s.depths)}")
    if not isinstance(s.nodes, int) or not 1 <= s.nodes <= 4:
        raise UserError(f"nodes per cell must be 1 to 4, got {s.nodes!r}")
    if s.in_channels not in (1, 3) or s.task not in ("macro", "micro") or s.stem_stride not in (1, 2):
        raise UserError("the search space needs in_channels 1 or 3, task macro or micro, stem_stride 1 or 2")
    step = 4 * s.stem_stride
    if not isinstance(s.input_size, int) or s.input_size % step or s.input_size < 4 * step:
        raise UserError(
            f"input size {s.input_size} does not fit a cell network with stem stride {s.stem_stride}: use a multiple "
            f"of {step}, at least {4 * step}"
        )
    if len(s.classes) != s.num_classes:
        raise UserError(f"{len(s.classes)} class names for {s.num_classes} classes")


def stage_shapes(s: SearchSpace, width: int) -> list[tuple[int, int]]:
    """(channels per node, resolution) of the three stages."""
    r0 = s.input_size // s.stem_stride
    return [(width, r0), (2 * width, r0 // 2), (4 * width, r0 // 4)]


def genotype_of(normal: list[tuple[str, int]], reduce: list[tuple[str, int]], nodes: int) -> Genotype:
    concat = tuple(range(2, nodes + 2))
    return Genotype(tuple(normal), concat, tuple(reduce), concat)
