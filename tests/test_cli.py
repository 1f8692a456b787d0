"""The real ``emonas-edge`` console script: help, ops, info, and one-line errors (exit 2) for every bad input.

Every invocation is a separate process (~2 s of Python/torch start-up each), so the error cases are
started together, two at a time, in a module fixture; each test then checks its own result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from conftest import TINY_GENOTYPE

from emonas_edge import create_model, load_genotype, save_checkpoint
from emonas_edge.config import FER2013_CLASSES, config_from_dict
from emonas_edge.export.onnx import export_onnx
from emonas_edge.nn import count_params
from emonas_edge.nn.ops import known_ops

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_one_line_error(r, code: int = 2) -> str:
    """Exit ``code``, exactly one non-empty stderr line, starting with 'error:', and no traceback anywhere."""
    out = f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert "Traceback" not in r.stdout and "Traceback" not in r.stderr, out
    assert r.returncode == code, out
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error:"), out
    assert len(lines[0]) > len("error: ") + 5, out
    return lines[0]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# --------------------------------------------------------------------------- inputs made once


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> SimpleNamespace:
    """Genotype files, checkpoints and ONNX files (good and broken) that the cases below hand to the CLI."""
    d = tmp_path_factory.mktemp("cli-inputs")
    a = SimpleNamespace(dir=d)

    def write(name: str, obj) -> Path:
        p = d / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
        return p

    def tweak(**changes) -> dict:
        g = json.loads(json.dumps(TINY_GENOTYPE))
        g.update(changes)
        return g

    a.tiny = write("tiny.json", TINY_GENOTYPE)
    a.bad_json = write("bad.json", '{"name": "tiny", "normal": [["conv_3x3", 0],')
    a.json_list = write("list.json", "[1, 2, 3]")
    normal = json.loads(json.dumps(TINY_GENOTYPE["normal"]))
    normal[2] = ["bogus_op", 1]
    a.unknown_op = write("unknown_op.json", tweak(normal=normal))
    normal = json.loads(json.dumps(TINY_GENOTYPE["normal"]))
    normal[3] = ["conv_3x3", 4]
    a.bad_index = write("bad_index.json", tweak(normal=normal))
    a.bad_name = write("traversal.json", tweak(name="../../x"))
    a.mit = write("mit.json", {"family": "mit", "name": "mit-tiny", "network": {"input_size": 32}})

    # Checkpoints: a trained one for this genotype, one for another architecture, broken ones.
    cfg = config_from_dict(TINY_GENOTYPE)
    a.trained = save_checkpoint(d / "trained.pt", create_model(cfg), cfg.replace(trained=True))
    wide = cfg.replace(network={**cfg.network, "init_channels": 6})
    a.other_arch = save_checkpoint(d / "other_arch.pt", create_model(wide), wide.replace(trained=True))
    blob = a.trained.read_bytes()
    a.truncated_pt = d / "truncated.pt"
    a.truncated_pt.write_bytes(blob[: len(blob) // 2])
    a.garbage_pt = d / "garbage.pt"
    a.garbage_pt.write_bytes(os.urandom(4096))

    # A real exported ONNX file, then its first half, and a text file with an .onnx name.
    result = export_onnx(cfg, create_model(cfg), d / "export", simplify="none")
    a.onnx = result.path
    blob = a.onnx.read_bytes()
    a.truncated_onnx = d / "truncated.onnx"
    a.truncated_onnx.write_bytes(blob[: len(blob) // 2])
    a.text_onnx = write("x.onnx", "hello, I am a text file\n")
    a.a_file = write("plain-file", "x")
    return a


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    args: Callable[[SimpleNamespace, Path], list]  # (inputs, case folder) -> argv after "emonas-edge"
    fragment: str  # must appear in the error line


def _export(*extra):
    """``export`` into <case>/a/b/out, run from <case>/a/b, so escapes via '..' land inside <case>."""
    return lambda a, d: ["export", *[x(a) if callable(x) else x for x in extra], "-o", d / "a" / "b" / "out"]


ERRORS: dict[str, Case] = {
    "malformed-json": Case(_export("-g", lambda a: a.bad_json), "not valid JSON"),
    "unknown-op": Case(_export("-g", lambda a: a.unknown_op), "unknown operation 'bogus_op'"),
    "bad-index": Case(_export("-g", lambda a: a.bad_index), "out of range"),
    "missing-file": Case(_export("-g", lambda a: a.dir / "nope.json"), "no such file"),
    "unsupported-size": Case(_export("-g", lambda a: a.tiny, "--input-size", "50"), "input_size 50"),
    "truncated-onnx": Case(lambda a, d: ["info", a.truncated_onnx], "ONNX"),
    "text-as-onnx": Case(lambda a, d: ["info", a.text_onnx], "ONNX"),
    "onnx-as-genotype": Case(_export("-g", lambda a: a.onnx), "ONNX"),
    "truncated-pt-info": Case(lambda a, d: ["info", a.truncated_pt], "checkpoint"),
    "garbage-pt-weights": Case(_export("-g", lambda a: a.tiny, "--weights", lambda a: a.garbage_pt), "checkpoint"),
    "weights-other-architecture": Case(
        _export("-g", lambda a: a.tiny, "--weights", lambda a: a.other_arch), "different network"
    ),
    "name-in-genotype": Case(_export("-g", lambda a: a.bad_name), "not allowed"),
    "name-flag": Case(_export("-g", lambda a: a.tiny, "--name", "../../x"), "not allowed"),
    "batch-abc": Case(_export("-g", lambda a: a.tiny, "--batch", "abc"), "--batch"),
    # The remaining export flags are checked after the model is loaded; a trained checkpoint keeps the
    # "random weights" warning out of the way (that warning is the bug KNOWN_BAD["opset-11-untrained"] shows).
    "simplify-bogus": Case(_export("-g", lambda a: a.trained, "--simplify", "bogus"), "--simplify"),
    "opset-11": Case(_export("-g", lambda a: a.trained, "--opset", "11"), "opset 11"),
    "output-is-a-file": Case(lambda a, d: ["export", "-g", a.trained, "-o", a.a_file], "not a folder"),
    "parity-data-missing": Case(
        _export("-g", lambda a: a.trained, "--parity-data", lambda a: a.dir / "no-faces"), "not found"
    ),
}

# Inputs that once escaped as tracebacks or multi-line output (fixed; kept as regressions).
KNOWN_BAD: dict[str, tuple[Case, str]] = {
    "markup-closing-tag-in-op": (
        Case(lambda a, d: ["info", a.markup_close], "[/x]"),
        "cli/main.py prints the UserError text as Rich markup: an op named '[/x]' raises MarkupError "
        "-> traceback, exit 1",
    ),
    "markup-style-tag-in-op": (
        Case(lambda a, d: ["info", a.markup_style], "'[red]boo'"),
        "cli/main.py prints the UserError text as Rich markup: the op name '[red]boo' is shown as 'boo'",
    ),
    "deep-darts-text": (
        Case(lambda a, d: ["info", a.deep_text], "genotype"),
        "genotype.parse_darts_text catches only SyntaxError: a deeply nested expression raises "
        "RecursionError -> traceback, exit 1",
    ),
    "opset-11-untrained": (
        Case(_export("-g", lambda a: a.tiny, "--opset", "11"), "opset 11"),
        "cli/models.py export prints the 'no trained weights' warning (wrapped over 2 lines) to stderr "
        "before --opset/--simplify/--batch N/--output/--parity-data are validated, so stderr is not one line",
    ),
    "override-a-checkpoint": (
        Case(_export("-g", lambda a: a.trained, "--input-size", "32"), "cannot be overridden"),
        "resolve.load_model ignores overrides for a checkpoint (only load_genotype refuses them): "
        "`export -g ckpt.pt --input-size 32` silently exports the checkpoint's 16x16 network",
    ),
}


@pytest.fixture(scope="module")
def runs(inputs, cli, tmp_path_factory) -> dict[str, tuple[Future, Path]]:
    """Start every case (two processes at a time); tests wait for their own."""
    for attr, op in (("markup_close", "[/x]"), ("markup_style", "[red]boo")):
        g = json.loads(json.dumps(TINY_GENOTYPE))
        g["normal"][0][0] = op
        p = inputs.dir / f"{attr}.json"
        p.write_text(json.dumps(g), encoding="utf-8")
        setattr(inputs, attr, p)
    inputs.deep_text = inputs.dir / "deep.py"
    inputs.deep_text.write_text("X = Genotype(normal=" + "-" * 5000 + "0)", encoding="utf-8")

    root = tmp_path_factory.mktemp("cli-cases")
    pool = ThreadPoolExecutor(max_workers=2)
    out = {}
    for case_id, case in [*ERRORS.items(), *((k, c) for k, (c, _) in KNOWN_BAD.items())]:
        d = root / case_id
        (d / "a" / "b").mkdir(parents=True)
        out[case_id] = (pool.submit(cli, *case.args(inputs, d), cwd=d / "a" / "b"), d)
    yield out
    pool.shutdown(wait=True, cancel_futures=True)


def _check(case_id: str, case: Case, runs) -> None:
    future, d = runs[case_id]
    r = future.result()
    line = assert_one_line_error(r)
    assert case.fragment in line, line
    # A failed command writes nothing: no artifact, no manifest, no temporary file, no plot.
    assert files_under(d) == set(), files_under(d)
    assert not (d.parent / "x.onnx").exists() and not (d.parent / "x.manifest.json").exists()


@pytest.mark.parametrize("case_id", list(ERRORS))
@pytest.mark.slow
def test_bad_input_gives_one_line_error(case_id, runs):
    _check(case_id, ERRORS[case_id], runs)


@pytest.mark.parametrize("case_id", list(KNOWN_BAD))
@pytest.mark.slow
def test_fixed_cli_error_regressions(case_id, runs):
    _check(case_id, KNOWN_BAD[case_id][0], runs)


@pytest.mark.slow
def test_unknown_op_exits_2_with_one_line(runs):
    """Acceptance criterion: a genotype with an unknown op -> exit 2, a one-line message naming it."""
    r = runs["unknown-op"][0].result()
    line = assert_one_line_error(r)
    assert "bogus_op" in line and "'normal'" in line and "node 1" in line
    for op in known_ops():
        assert op in line
    assert r.stdout.strip() == ""


@pytest.mark.slow
def test_path_traversal_name_writes_nothing_outside(runs):
    for case_id in ("name-in-genotype", "name-flag"):
        r, d = runs[case_id][0].result(), runs[case_id][1]
        assert "not allowed" in assert_one_line_error(r)
        # ../../x from <case>/a/b/out would be <case>/a/x.onnx; from the cwd <case>/a/b it would be <case>/x.onnx.
        for p in (d / "a" / "x.onnx", d / "x.onnx", d / "abs.onnx", d.parent / "x.onnx"):
            assert not p.exists(), p
        assert files_under(d) == set()


# --------------------------------------------------------------------------- what works


def _squeezed_lines(text: str) -> list[str]:
    """Lines of an option panel whose help column holds one word in the middle of that option's help: the
    sign of a help column squeezed to a few characters. A paragraph's last word alone on its line (a widow)
    and typer's ``[required]``/``[default: ...]`` markers are not squeezing."""
    rows = [ln.strip().strip("│").rstrip() for ln in text.splitlines() if ln.strip().startswith("│")]
    bad = []
    for i, row in enumerate(rows):
        words = row.split()
        following = rows[i + 1] if i + 1 < len(rows) else ""
        continued = following.startswith(" " * 5) and not following.strip().startswith("[")
        if row.startswith(" " * 5) and len(words) == 1 and continued and not words[0].startswith("["):
            bad.append(row)
    return bad


def test_every_help_reads_at_80_columns(cli):
    from emonas_edge.cli.main import app

    command = typer.main.get_command(app)
    names = [[]] + [[n] for n in command.commands]
    names += [[n, s] for n, c in command.commands.items() for s in getattr(c, "commands", {})]
    for args in names:
        r = cli(*args, "--help", env={"COLUMNS": "80"})
        assert r.returncode == 0, (args, r.stderr)
        lines = r.stdout.splitlines()
        assert max(len(ln) for ln in lines) <= 80, args
        assert "<bool>" not in r.stdout, args
        assert not _squeezed_lines(r.stdout), (args, _squeezed_lines(r.stdout))
    squeezed = "│ --a  x │\n│      word │\n│      more text │"
    assert _squeezed_lines(squeezed) == ["      word"]  # the check itself finds a squeezed column


def test_help_lists_the_commands(cli):
    r = cli("--help")
    assert r.returncode == 0, r.stderr
    flags = cli("models", "--help", env={"COLUMNS": "80"})  # flags take no value: no "<bool>" beside them
    assert "--json " in flags.stdout and "--json        <bool>" not in flags.stdout
    assert "Print JSON" in flags.stdout and cli("models", "--json").returncode == 0
    for command in ("export", "info", "ops", "search"):
        assert command in r.stdout
    r = cli("export", "--help")
    assert r.returncode == 0, r.stderr
    for flag in (
        "--genotype",
        "--weights",
        "--output",
        "--opset",
        "--batch",
        "--simplify",
        "--select",
        "--parity-data",
        "--json",
        "--input-size",
        "--in-channels",
        "--layers",
        "--init-channels",
        "--num-classes",
        "--classes",
        "--task",
        "--name",
    ):
        assert flag in r.stdout, flag
    assert "Traceback" not in r.stdout + r.stderr


def test_ops_lists_every_registered_op(cli):
    r = cli("ops")
    assert r.returncode == 0, r.stderr
    for op in known_ops():
        assert op in r.stdout, op
    assert "sep_conv_3x3" in r.stdout and "dil_conv_3x3" in r.stdout and "skip_connect" in r.stdout


@pytest.mark.slow
def test_models_lists_the_builtins_with_their_recorded_accuracy(cli):
    r = cli("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"emonas-macro", "emonas-macro-fast", "emonas-macro-lite", "emonas-micro"} <= set(rows)
    models_dir = Path(__file__).resolve().parents[1] / "models"
    for name in ("emonas-macro", "emonas-macro-fast", "emonas-macro-lite"):
        report = json.loads((models_dir / f"{name}.publictest.json").read_text())
        assert rows[name]["trained"] is True and rows[name]["publictest_top1"] == report["accuracy"]
    assert rows["emonas-macro"]["test_time_flip"] is True and rows["emonas-macro"]["params"] == 980_767
    assert rows["emonas-macro-lite"]["params"] == 354_223 and rows["emonas-macro-lite"]["test_time_flip"] is False
    assert rows["emonas-micro"]["trained"] is False and rows["emonas-micro"]["publictest_top1"] is None
    # listing reads the shipped exports' metadata and untrained genotypes' meta.params: each equals the network
    for name, row in rows.items():
        assert row["params"] == count_params(create_model(load_genotype(name))), name
    table = cli("models")
    assert table.returncode == 0 and "70.05%" in table.stdout and "67.23%" in table.stdout
    assert "untrained names run random weights" in table.stdout


@pytest.mark.slow
def test_info_builtin_json(cli):
    r = cli("info", "emonas-macro", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    model = create_model(load_genotype("emonas-macro"))  # the built-in's own network, built here
    assert data["name"] == "emonas-macro" and data["kind"] == "builtin"
    assert data["params"] == count_params(model) > 10_000
    assert isinstance(data["macs"], int) and data["macs"] > data["params"]
    assert data["classes"] == list(FER2013_CLASSES)
    assert data["input_spec"]["shape"] == ["batch", 1, 48, 48]
    assert data["input_spec"]["color"] == "gray"
    assert data["op_histogram"] == load_genotype("emonas-macro").genotype.op_histogram()


def test_info_onnx_json_reads_the_metadata(cli, inputs):
    r = cli("info", inputs.onnx, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    manifest = json.loads(inputs.onnx.with_name("tiny.manifest.json").read_text())
    assert data["kind"] == "onnx" and data["name"] == "tiny"
    assert data["classes"] == TINY_GENOTYPE["classes"]
    assert data["params"] == manifest["model"]["params"]
    assert data["input_spec"] == manifest["model"]["input_spec"]
    assert data["trained"] is False
    assert data["onnx"]["sha256"] == manifest["sha256"]
    assert data["onnx"]["inputs"][0]["shape"] == ["batch", 1, 16, 16]


@pytest.mark.slow
def test_info_plot_writes_a_png(cli, tmp_path, inputs):
    png = tmp_path / "cells.png"
    r = cli("info", inputs.tiny, "--plot", png)
    assert r.returncode == 0, r.stderr
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 2000
    # Nothing else (no temporary file) is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.png"]


@pytest.mark.slow
def test_info_plot_rejects_mit(cli, tmp_path, inputs):
    png = tmp_path / "cells.png"
    r = cli("info", inputs.mit, "--plot", png)
    assert "cell network" in assert_one_line_error(r)
    assert not png.exists()


def test_cache_lists_and_clears_only_its_own_entries(cli, tmp_path):
    cache = tmp_path / "cache"
    (cache / "onnx" / "k1").mkdir(parents=True)
    (cache / "onnx" / "k1" / "emonas-macro-lite.onnx").write_bytes(b"x" * 1000)
    (cache / "abc.npz").write_bytes(b"y" * 500)
    (cache / "micro-def.npz").write_bytes(b"z" * 200)
    (cache / "distill-0a1.npz").write_bytes(b"t" * 300)
    (cache / "notes.txt").write_text("not ours")  # a cache folder pointed somewhere shared loses nothing else
    env = {"EMONAS_EDGE_CACHE": str(cache)}
    r = cli("cache", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["entries"]
    assert {(e["kind"], e["bytes"]) for e in rows} == {("onnx", 1000), ("data", 500), ("micro", 200), ("distill", 300)}
    assert next(e for e in rows if e["kind"] == "onnx")["files"] == ["emonas-macro-lite.onnx"]
    r = cli("cache", "clear", "--kind", "data", env=env)
    assert r.returncode == 0 and "removed 1 entries" in r.stdout and not (cache / "abc.npz").exists()
    r = cli("cache", "clear", env=env)
    assert r.returncode == 0 and "removed 3 entries" in r.stdout
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["notes.txt"]
    r = cli("cache", "clear", "--kind", "everything", env=env)
    assert r.returncode == 2 and "unknown cache kind" in r.stderr
