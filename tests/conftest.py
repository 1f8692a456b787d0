"""Shared fixtures: the real console script, genotype files, and the optional ../shared folder."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLI = Path(sys.executable).parent / "emonas-edge"

# The DARTS_V2 genotype as published in the DARTS repository (quark0/darts, cnn/genotypes.py).
DARTS_V2_TEXT = (
    "from collections import namedtuple\n"
    "\n"
    "Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')\n"
    "\n"
    "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])\n"
)

DARTS_V2_NORMAL = [
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("skip_connect", 0),
    ("dil_conv_3x3", 2),
]
DARTS_V2_REDUCE = [
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 1),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
    ("max_pool_3x3", 0),
    ("skip_connect", 2),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
]

# A small, valid cell genotype: two nodes per cell, 4 channels, 3 cells, 16x16 gray input.
# Exports in a few seconds; every field of the genotype format is spelled out.
TINY_GENOTYPE = {
    "format": "emonas-genotype/1",
    "name": "tiny",
    "task": "macro",
    "family": "cell",
    "normal": [["conv_3x3", 0], ["skip_connect", 1], ["sep_conv_3x3", 1], ["max_pool_3x3", 2]],
    "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["conv_3x3", 1], ["skip_connect", 2], ["avg_pool_3x3", 1]],
    "reduce_concat": [2, 3],
    "network": {
        "in_channels": 1,
        "input_size": 16,
        "init_channels": 4,
        "layers": 3,
        "num_classes": 3,
        "auxiliary": False,
        "drop_path": 0.0,
        "dropout": 0.0,
        "stem_stride": 1,
        "stem_multiplier": 3,
        "test_time_flip": False,
    },
    "classes": ["negative", "neutral", "positive"],
    "preprocess": {"grayscale": True, "mean": [0.5], "std": [0.25]},
    "trained": False,
    "description": "tiny test genotype",
}


def _environ() -> dict:
    """A copy of os.environ that is safe off the main thread: pytest sets and clears PYTEST_CURRENT_TEST there
    while tests/test_cli.py's pool starts commands, and a key gone mid-copy raised KeyError (seen under -n 2)."""
    while True:
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):  # changed while being copied: copy again
            continue


def _cli_env(extra: dict | None = None) -> dict:
    env = _environ()
    # Plain output (no colour codes), as when the tool runs in a script or CI log.
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    if extra:
        env.update(extra)
    return env


@pytest.fixture(scope="session")
def cli_path() -> Path:
    if not CLI.is_file():
        pytest.fail(f"console script not installed at {CLI}: run `pip install -e .` in the virtualenv")
    return CLI


@pytest.fixture(scope="session")
def cli(cli_path):
    """``cli("export", "--genotype", path, cwd=..., env=..., timeout=...)`` runs the installed console script."""

    def run(
        *args,
        cwd: str | os.PathLike | None = None,
        env: dict | None = None,
        timeout: float = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(cli_path), *map(str, args)],
            cwd=cwd,
            env=_cli_env(env),
            text=True,
            capture_output=True,
            timeout=timeout,
            input=input,
        )

    return run


@pytest.fixture
def darts_v2_file(tmp_path) -> Path:
    """The canonical DARTS_V2 genotype, as a DARTS ``genotypes.py``-style text file."""
    p = tmp_path / "darts_v2.py"
    p.write_text(DARTS_V2_TEXT, encoding="utf-8")
    return p


@pytest.fixture
def tiny_genotype() -> dict:
    """A fresh copy of a small valid cell genotype dict (safe to mutate)."""
    return copy.deepcopy(TINY_GENOTYPE)


@pytest.fixture
def tiny_genotype_file(tmp_path, tiny_genotype) -> Path:
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(tiny_genotype), encoding="utf-8")
    return p


@pytest.fixture
def write_json(tmp_path):
    """``write_json(obj, name="g.json")`` -> path of a JSON file in tmp_path."""

    def write(obj, name: str = "genotype.json") -> Path:
        p = tmp_path / name
        p.write_text(json.dumps(obj), encoding="utf-8")
        return p

    return write


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder beside the checkout (``datasets/fer2013/{train,publictest}``, ``media/``).

    The one place that knows where it is: a test (or fixture, any scope) that takes ``shared`` is
    skipped, with the reason shown by ``-ra``, when the folder is absent; the rest of the suite runs.
    """
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is not present beside the checkout (FER2013 images, face media)")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def _runs_outside_the_checkout(tmp_path_factory):
    """Commands given no output write numbered run folders under ./runs: the suite keeps them in a temporary
    folder instead (the console-script subprocesses inherit the variable)."""
    from emonas_edge.rundirs import RUNS_ENV

    before = os.environ.get(RUNS_ENV)
    os.environ[RUNS_ENV] = str(tmp_path_factory.mktemp("runs"))
    yield
    if before is None:
        os.environ.pop(RUNS_ENV, None)
    else:
        os.environ[RUNS_ENV] = before
