"""Everyday faults (issue #30): an output that is an input, two outputs on one file, a folder where a file
goes. Each must fail before any work with one line on stderr, exit 2, no traceback, inputs unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import _cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emonas_edge.errors import UserError
from emonas_edge.fileio import check_output_paths


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_refusal(r, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def test_an_output_that_is_an_input_or_another_output_is_refused(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    with pytest.raises(UserError, match="is the input --source"):
        check_output_paths({"--source": src}, {"--save-video": tmp_path / "." / "in.mp4"})
    with pytest.raises(UserError, match="is the input --source"):
        check_output_paths({"--source": src}, {"--save-video": link})  # the same file under another name
    with pytest.raises(UserError, match="--jsonl and --csv are the same file"):
        check_output_paths({"--source": src}, {"--jsonl": tmp_path / "o", "--csv": tmp_path / "o"})
    with pytest.raises(UserError, match="is a folder"):
        check_output_paths({}, {"--json": tmp_path})
    # camera indices, stream URLs, unset flags and distinct paths pass
    check_output_paths({"--source": "0", "--macro": None}, {"--jsonl": tmp_path / "a", "--csv": None})
    check_output_paths({"--source": "rtsp://cam/1"}, {"--jsonl": tmp_path / "a", "--csv": tmp_path / "b"})


@pytest.mark.parametrize("flags", [("--save-video", "SRC"), ("--jsonl", "OUT", "--csv", "OUT")])
def test_run_never_overwrites_its_source_or_one_output_with_another(cli, shared, tmp_path, flags):
    src = tmp_path / "clip.mp4"
    shutil.copy(shared / "media" / "single_face.mp4", src)
    before = _digest(src)
    args = [str(src) if f == "SRC" else str(tmp_path / "out.x") if f == "OUT" else f for f in flags]
    r = cli("run", "--source", src, *args, "--max-frames", "2")
    _one_line_refusal(r, "would be overwritten" if "SRC" in flags else "same file")
    assert _digest(src) == before and not (tmp_path / "out.x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"], "no partial or hidden files"


def test_evaluate_and_export_never_write_over_their_inputs(cli, tiny_genotype_file, tmp_path):
    before = _digest(tiny_genotype_file)
    r = cli("evaluate", "--model", tiny_genotype_file, "--data", tmp_path, "--json", tiny_genotype_file)
    _one_line_refusal(r, "--json", "--model")
    r = cli("export", "--genotype", tiny_genotype_file, "--output", tmp_path / "out", "--json", tiny_genotype_file)
    _one_line_refusal(r, "--json", "--genotype")
    assert _digest(tiny_genotype_file) == before and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_run_finalises_every_output_and_the_summary(cli_path, shared, tmp_path, sig, code, word):
    """What `docker stop`, systemd and `timeout` send must end a run as Ctrl-C does: valid JSONL, a playable
    video, the summary printed and written, no hidden files."""
    import cv2

    cap, frames = cv2.VideoCapture(str(shared / "media" / "single_face.mp4")), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    long = tmp_path / "long.avi"  # ~10 s of work: the 3 s clip is over before a signal can arrive
    writer = cv2.VideoWriter(str(long), cv2.VideoWriter_fourcc(*"MJPG"), 25, frames[0].shape[1::-1])
    for frame in frames * 12:
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    args = [str(cli_path), "run", "--source", str(long), "--micro", "none"]
    args += ["--jsonl", str(out / "r.jsonl"), "--save-video", str(out / "r.mp4"), "--summary-json", str(out / "s.json")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in out.glob(".r.jsonl*")] if out.exists() else []
        if partial and partial[0].read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and word in stderr, stderr
    lines = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    assert len(lines) >= 5 and [ln["frame"] for ln in lines] == list(range(len(lines)))
    cap = cv2.VideoCapture(str(out / "r.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= len(lines) - 1
    cap.release()
    summary = json.loads((out / "s.json").read_text())
    assert summary["error"] == word and summary["frames"] == len(lines) and "frames" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["r.jsonl", "r.mp4", "s.json"], "no hidden or partial files"


def test_when_one_output_cannot_be_written_none_is_published(cli, tmp_path):
    import cv2
    import numpy as np

    src = tmp_path / "dot.png"
    cv2.imwrite(str(src), np.zeros((1, 1, 3), np.uint8))  # no video writer takes a 1x1 frame
    out = tmp_path / "out"
    r = cli(
        "run",
        "--source",
        src,
        "--micro",
        "none",
        "--jsonl",
        out / "r.jsonl",
        "--csv",
        out / "r.csv",
        "--save-video",
        out / "r.mp4",
    )
    _one_line_refusal(r, "r.mp4", "cannot write")
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], "all outputs or none"


@pytest.mark.slow
def test_sigterm_mid_int8_export_leaves_no_temporary_files(cli_path, shared, tmp_path):
    """The quantiser's scratch folders live in the temp dir; a stopped export must take them along."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    args = [str(cli_path), "export", "--genotype", "emonas-macro-lite", "--output", str(out), "--precision", "int8"]
    args += ["--calib", str(shared / "datasets" / "fer2013" / "train")]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env({"TMPDIR": str(tmp)})
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not any(tmp.glob("emonas-int8-*/pre.onnx")):
        time.sleep(0.05)
    assert proc.poll() is None, "the export ended before quantisation began: " + proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    # (torch's own caches such as torchinductor_<user> may appear there; ours are named emonas-*)
    assert list(tmp.glob("emonas-*")) == [], "scratch folders left in the temp dir"
    assert not out.exists() or all(not p.name.startswith(".") for p in out.iterdir()), "hidden partial files"


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_partial_file(tmp_path):
    import errno

    from emonas_edge.fileio import atomic_outputs, write_json_atomic

    target = tmp_path / "out" / "m.json"
    with pytest.raises(UserError, match=r"m\.json: cannot write \(No space left on device\)"):
        with atomic_outputs(target) as (tmp,):
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises mid-write
    assert list((tmp_path / "out").iterdir()) == []
    write_json_atomic(target, {"ok": 1})  # and the same place works once there is room


def test_a_file_where_a_folder_goes_is_refused_before_any_work(cli, tiny_genotype_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("export", "--genotype", tiny_genotype_file, "--output", tmp_path / "o", "--json", blocker / "m.json")
    _one_line_refusal(r, "is a file, not a folder")
    assert not (tmp_path / "o").exists()
    r = cli("evaluate", "--model", tiny_genotype_file, "--data", tmp_path, "--json", blocker / "sub" / "r.json")
    _one_line_refusal(r, "is a file, not a folder")


def test_a_read_only_folder_is_refused_before_any_work(cli, tiny_genotype_file, tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permission bits do not stop this process from writing")
        r = cli("export", "--genotype", tiny_genotype_file, "--output", tmp_path / "o", "--json", ro / "m.json")
        _one_line_refusal(r, "permission denied")
    finally:
        ro.chmod(0o755)


@pytest.fixture
def tmpfs(tmp_path):
    """A tiny tmpfs (64 KB, or read-only) where this machine lets the test mount one (root), else a skip."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_for_export_and_run(cli, shared, tmpfs):
    full = tmpfs("size=64k")
    r = cli("export", "--genotype", "emonas-macro-lite", "--output", full / "out")
    _one_line_refusal(r, "No space left on device")
    assert "dynamo" not in r.stderr and not [p for p in full.rglob("*") if p.is_file()]
    r = cli(
        "run",
        "--source",
        shared / "media" / "single_face.mp4",
        "--micro",
        "none",
        "--save-video",
        full / "v.mp4",
        "--jsonl",
        full / "r.jsonl",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No space left" in r.stderr, r.stderr
    assert not [p for p in full.rglob("*") if p.is_file()], "all outputs or none, and no partial files"


def test_a_read_only_mount_is_refused_before_any_work(cli, tiny_genotype_file, tmpfs):
    ro = tmpfs("ro,size=64k")
    r = cli("export", "--genotype", tiny_genotype_file, "--output", ro / "out")
    _one_line_refusal(r, "--output", "read-only")
    r = cli("export", "--genotype", tiny_genotype_file, "--output", ro.parent / "o", "--json", ro / "m.json")
    _one_line_refusal(r, "--json", "read-only")
    assert not (ro.parent / "o").exists()


def test_evaluate_bad_numbers_and_a_binary_csv_are_one_line(cli, tiny_genotype_file, tmp_path):
    binary = tmp_path / "data.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    for args, fragment in (
        (["--batch", "0"], "--batch"),
        (["--limit-per-class", "0"], "--limit-per-class"),
    ):
        r = cli("evaluate", "--model", tiny_genotype_file, "--data", tmp_path, *args)
        _one_line_refusal(r, fragment)
    r = cli("evaluate", "--model", "emonas-macro-lite", "--data", binary)
    _one_line_refusal(r, "not a readable text CSV")


# ------------------------------------------------------------ property: any input gives a result or a UserError


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "name",
        "task",
        "family",
        "normal",
        "reduce",
        "normal_concat",
        "reduce_concat",
        "network",
        "classes",
        "preprocess",
        "format",
        "meta",
        "trained",
    ]
)
_near_genotypes = st.dictionaries(_keys, _json, max_size=9)
_ops = st.sampled_from(["conv_3x3", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "none", "x", "", "conv_3x3'"])
_darts = st.builds(
    lambda edges, head, tail: (
        f"{head}Genotype(normal={edges}, normal_concat=[2], reduce={edges}, reduce_concat={tail})"
    ),
    st.lists(st.tuples(_ops, st.integers(-2, 6)), max_size=6),
    st.sampled_from(["", "G = ", "x = 1\n", "import os\n"]),
    st.sampled_from(["[2]", "range(2, 4)", "[]", "[2, 3]", "None"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=_near_genotypes | _json)
def test_any_genotype_json_is_a_config_or_a_user_error(d):
    from emonas_edge.config import config_from_dict

    try:
        config_from_dict(d)
    except UserError:
        pass


@settings(max_examples=150, deadline=None)
@given(text=_darts | st.text(max_size=200))
def test_any_darts_text_is_a_genotype_or_a_user_error(text):
    from emonas_edge.genotype import parse_darts_text

    try:
        parse_darts_text(text)
    except UserError:
        pass


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**9), 10**9)),
    field=st.sampled_from(
        [
            "lr",
            "ema",
            "label_smoothing",
            "weight_decay",
            "warmup_epochs",
            "epochs",
            "batch",
            "distill_temperature",
            "mix_p",
        ]
    ),
)
def test_any_number_in_a_training_setting_is_accepted_or_a_user_error(value, field):
    from emonas_edge.train.settings import TrainSettings

    try:
        resolved = TrainSettings(**{field: value}).resolved()
    except UserError:
        return
    import math

    assert all(math.isfinite(float(v)) for v in (resolved.lr, resolved.ema, resolved.label_smoothing))


def _writers(shared: Path, tiny: Path, target: Path) -> dict[str, list]:
    """Every command that writes, with its output pointed under ``target`` ({T}); {F} FER2013, {M} media."""
    lut = tiny.parent / "lut.json"
    lut.write_text("{}")
    commands = {
        "export": "export --genotype emonas-macro-lite --output {T}",
        "evaluate": "evaluate --model emonas-macro-lite --data {F}/publictest --json {T}/r.json --limit-per-class 2",
        "train": "train --model emonas-macro-lite --data {F}/train --out {T} --epochs 1 --limit-per-class 5",
        "slim": "slim --model emonas-macro-lite --channels 16 --data {F}/train --out {T}/s.pt",
        "compare": "compare emonas-macro-lite emonas-macro-fast --data {F}/publictest --json {T}/c.json",
        "run": "run --source {M}/single_face.jpg --micro none --jsonl {T}/r.jsonl",
        "sample-video": "sample-video {T}/v.mp4",
        "crop-faces": "crop-faces --data {M} --out {T}",
        "profile": "profile emonas-macro-lite --iters 5 --warmup 1 --json {T}/p.json",
        "profile-pipeline": "profile-pipeline --source {M}/single_face.mp4 --frames 5 --json {T}/p.json",
        "search lut": "search lut --out {T}/lut.json",
        "search": f"search --data {{F}}/train --lut {lut} --out {{T}}/best.json",
    }
    where = {"{T}": str(target), "{F}": str(shared / "datasets" / "fer2013"), "{M}": str(shared / "media")}
    out = {}
    for name, line in commands.items():
        for k, v in where.items():
            line = line.replace(k, v)
        out[name] = line.split()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["file in the way", "read-only"])
def test_every_writing_command_refuses_an_unwritable_output_in_one_line(
    cli, shared, tiny_genotype_file, tmp_path, tmpfs, fault
):
    if fault == "file in the way":
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        target = blocker / "out"
    else:
        target = tmpfs("ro,size=64k") / "out"
    for name, args in _writers(shared, tiny_genotype_file, target).items():
        r = cli(*args, timeout=300)
        assert r.returncode == 2, f"{name}: exit {r.returncode}\n{r.stderr[-2000:]}"
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("warning:")]
        assert "Traceback" not in r.stderr and len(lines) == 1, f"{name}:\n{r.stderr[-2000:]}"
    if fault == "file in the way":
        assert blocker.read_text() == "x"


@pytest.mark.slow
def test_sigint_mid_export_leaves_nothing_and_says_so(tmp_path, cli_path, darts_v2_file):
    from test_artifacts import _start_export_and_wait_for_temp, all_names

    out = tmp_path / "out"
    proc = _start_export_and_wait_for_temp(cli_path, darts_v2_file, out, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert all_names(out) == [], "an interrupted export left files behind"
