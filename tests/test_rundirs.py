"""Numbered run folders: commands given no output path keep their results in runs/<kind>, runs/<kind>2, ...;
explicit paths stay as given; folders never collide, not even between processes started together."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil

import pytest

from emonas_edge.errors import UserError
from emonas_edge.rundirs import RUNS_ENV, latest_run_dir, new_run_dir


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv(RUNS_ENV, str(root))
    return root


def test_numbers_count_up_and_are_never_reused(runs):
    assert [new_run_dir("run").name for _ in range(3)] == ["run", "run2", "run3"]
    (runs / "run2").rmdir()
    (runs / "run4").write_text("a file in the way")
    assert new_run_dir("run").name == "run5"  # one past the highest folder; the file's name is skipped
    assert new_run_dir("train").name == "train"  # each kind counts on its own
    assert latest_run_dir("run") == runs / "run5" and latest_run_dir("export") is None
    (runs / "runaway").mkdir()
    (runs / "run1").mkdir()  # not a name this module makes (run is number 1)
    assert new_run_dir("run").name == "run6" and latest_run_dir("run") == runs / "run6"


def _claim(root: str, queue) -> None:
    os.environ[RUNS_ENV] = root
    queue.put(new_run_dir("run").name)


def test_processes_started_together_get_different_folders(runs):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(runs), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    names = sorted(queue.get(timeout=5) for _ in procs)
    assert len(set(names)) == 8, names


def test_an_unusable_root_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("a file where the runs folder goes")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    with pytest.raises(UserError, match="cannot make a run folder under"):
        new_run_dir("run")


def test_run_without_outputs_keeps_results_in_numbered_folders(cli, shared, tmp_path):
    runs = tmp_path / "runs"
    env = {RUNS_ENV: str(runs), "COLUMNS": "250"}
    photo = shared / "media" / "two_people.jpg"
    first = cli("run", "--source", photo, env=env)
    assert first.returncode == 0, first.stderr
    assert f"results in {runs / 'run'}" in first.stdout
    assert sorted(p.name for p in (runs / "run").iterdir()) == ["results.jsonl", "summary.json", "two_people.jpg"]
    frame = json.loads((runs / "run" / "results.jsonl").read_text().splitlines()[0])
    assert len(frame["faces"]) == 2
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("obama.jpg", "justin.jpg"):
        shutil.copy(shared / "media" / name, folder / name)
    second = cli("run", "--source", folder, env=env)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (runs / "run2" / "annotated").iterdir()) == ["justin.jpg", "obama.jpg"]
    clip = cli("run", "--source", shared / "media" / "single_face.mp4", "--max-frames", 5, env=env)
    assert clip.returncode == 0, clip.stderr
    assert sorted(p.name for p in (runs / "run3").iterdir()) == ["results.jsonl", "summary.json"]
    explicit = cli("run", "--source", photo, "--jsonl", tmp_path / "mine.jsonl", env=env)
    assert explicit.returncode == 0 and (tmp_path / "mine.jsonl").is_file() and not (runs / "run4").exists()
    bad = cli("run", "--source", tmp_path / "missing.jpg", env=env)
    assert bad.returncode == 2 and not (runs / "run4").exists()  # a failed start claims no folder


def test_export_and_profile_without_outputs_use_numbered_folders(cli, tiny_genotype_file, tmp_path):
    runs = tmp_path / "runs"
    env = {RUNS_ENV: str(runs), "COLUMNS": "250"}
    for expected in ("export", "export2"):
        r = cli("export", "--genotype", tiny_genotype_file, env=env)
        assert r.returncode == 0, r.stderr
        assert (runs / expected / "tiny.onnx").is_file() and (runs / expected / "tiny.manifest.json").is_file()
    bad = cli("export", "--genotype", tmp_path / "missing.json", env=env)
    assert bad.returncode == 2 and not (runs / "export3").exists()
    r = cli("profile", runs / "export" / "tiny.onnx", "--warmup", 2, "--iters", 20, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((runs / "profile" / "profile.json").read_text())["p50_ms"] > 0
    assert (runs / "profile" / "profile.md").is_file()


@pytest.mark.slow
def test_train_without_out_numbers_its_runs_and_resumes_the_latest(cli, shared, tmp_path, tiny_genotype):
    fer_tiny = {**tiny_genotype, "name": "fer-tiny", "network": {**tiny_genotype["network"], "num_classes": 7}}
    del fer_tiny["classes"]  # FER2013's seven, by default
    genotype = tmp_path / "fer-tiny.json"
    genotype.write_text(json.dumps(fer_tiny), encoding="utf-8")
    runs = tmp_path / "runs"
    env = {RUNS_ENV: str(runs), "COLUMNS": "250", "EMONAS_EDGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    data = shared / "datasets" / "fer2013" / "train"
    base = ("train", "--model", genotype, "--data", data, "--limit-per-class", 3, "--batch", 8)
    for expected in ("train", "train2"):
        r = cli(*base, "--epochs", 1, "--max-steps", 1, "--threads", 1, env=env)
        assert r.returncode == 0, r.stderr
        assert f"run folder: {runs / expected}" in r.stdout and (runs / expected / "last.pt").is_file()
    r = cli(*base, "--epochs", 2, "--max-steps", 1, "--threads", 1, "--resume", env=env)
    assert r.returncode == 0, r.stderr
    assert f"resuming {runs / 'train2'}" in r.stdout
    assert len((runs / "train2" / "history.jsonl").read_text().splitlines()) == 2
    bad = cli(*base, "--data", tmp_path / "missing", env=env)
    assert bad.returncode == 2 and not (runs / "train3").exists()
