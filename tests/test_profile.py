"""`profile` and `profile-pipeline` on real models and real media (small iteration counts: figures are not asserted)."""

from __future__ import annotations

import csv
import json

import pytest

from emonas_edge.errors import UserError
from emonas_edge.profile.models import profile
from emonas_edge.resolve import model_info


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return {"EMONAS_EDGE_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.slow
def test_profile_json_keys_and_sane_values(cli, tmp_path, cache):
    out = tmp_path / "p.json"
    r = cli(
        "profile",
        "emonas-macro",
        "--json",
        out,
        "--iters",
        "200",
        "--warmup",
        "20",
        "--markdown",
        tmp_path / "p.md",
        "--csv",
        tmp_path / "p.csv",
        "--plot",
        tmp_path / "p.png",
        env=cache,
    )
    assert r.returncode == 0, r.stderr
    p = json.loads(out.read_text())
    assert {"params", "macs", "p50_ms", "p90_ms", "p99_ms", "throughput", "runs", "environment"} <= set(p)
    assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
    info = model_info("emonas-macro")
    assert p["params"] == info["params"] and p["macs"] == info["macs"]
    run = p["runs"][0]
    assert run["iters"] == 200 and run["batch"] == 1 and run["threads"] == 1 and run["backend"] == "onnxruntime"
    assert run["cold_start_ms"]["load"] > 0 and run["cold_start_ms"]["first_inference"] > 0
    assert run["min_ms"] <= run["p50_ms"] <= run["max_ms"]
    assert abs(run["throughput"] - 1000 / run["mean_ms"]) < 0.01 * run["throughput"]
    assert p["environment"]["cpu_count"] >= 1 and "onnxruntime" in p["environment"]["packages"]
    assert "| target |" in (tmp_path / "p.md").read_text()
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 1 and float(rows[0]["p50_ms"]) == pytest.approx(run["p50_ms"])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_profile_grid_over_backends_batches_threads(tiny_genotype_file, monkeypatch, tmp_path):
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report, lat = profile(
        [str(tiny_genotype_file)], backends=("ort", "torch"), batches=(1, 4), threads=(1, 2), warmup=5, iters=30
    )
    runs = report["runs"]
    assert len(runs) == len(lat) == 8
    assert {(r["backend"], r["batch"], r["threads"]) for r in runs} == {
        (b, bs, t) for b in ("onnxruntime", "torch") for bs in (1, 4) for t in (1, 2)
    }
    assert all(len(x) == 30 for x in lat)
    assert all(r["throughput"] > 0 and r["params"] == runs[0]["params"] for r in runs)


def test_profile_grid_skips_torch_at_reduced_precision(tiny_genotype_file, monkeypatch, tmp_path):
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report, lat = profile(
        [str(tiny_genotype_file)], backends=("ort", "torch"), precisions=("fp32", "fp16"), warmup=2, iters=10
    )
    assert {(r["backend"], r["precision"]) for r in report["runs"]} == {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "fp16"),
        ("torch", "fp32"),
    }
    assert [(s["backend"], s["precision"]) for s in report["skipped"]] == [("torch", "fp16")]
    with pytest.raises(UserError, match="fp32 only"):
        profile([str(tiny_genotype_file)], backends=("torch",), precisions=("fp16",), warmup=2, iters=10)


def test_profile_reads_precision_from_the_file_and_memory_per_run(tiny_genotype_file, monkeypatch, tmp_path):

    from emonas_edge.profile.models import peak_rss_mb

    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report, _ = profile([str(tiny_genotype_file)], precisions=("fp16",), warmup=2, iters=10)
    fp16 = report["runs"][0]["artifact"]
    assert fp16.endswith(".onnx") and report["runs"][0]["precision"] == "fp16"
    assert model_info(fp16)["precision"] == "fp16" and model_info(str(tiny_genotype_file))["precision"] == "fp32"
    import mmap

    big = mmap.mmap(-1, 400 * 2**20)  # 400 MB touched, then unmapped (malloc may keep freed heap memory)
    for offset in range(0, len(big), 4096):
        big[offset] = 1
    big.close()
    high = peak_rss_mb()  # the process's running peak now holds those 400 MB
    report, _ = profile([fp16], warmup=2, iters=10)  # the file given directly, no --precision flag
    run = report["runs"][0]
    assert run["precision"] == "fp16", "the label comes from the graph, not the flag's fp32 default"
    if run["peak_rss_scope"] == "this run":  # Linux: each run's own peak, not an earlier row's
        assert run["peak_rss_mb"] < high - 200


@pytest.mark.slow
def test_profile_bad_input(cli, tmp_path, tiny_genotype_file, cache):
    r = cli("profile", "no-such-model", env=cache)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = cli("profile", "emonas-macro", "--backend", "trt", env=cache)
    assert r.returncode == 2 and "engine" in r.stderr
    r = cli("profile", "emonas-macro", "--batch", "0", env=cache)
    assert r.returncode == 2
    r = cli("export", "--genotype", tiny_genotype_file, "--batch", "1", "--output", tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("profile", tmp_path / "tiny.onnx", "--batch", "4", env=cache)
    assert r.returncode == 2 and "fixed batch of 1" in r.stderr


@pytest.mark.slow
def test_profile_pipeline_stage_table(cli, tmp_path, cache, shared):
    out = tmp_path / "pp.json"
    r = cli(
        "profile-pipeline", "--source", shared / "media" / "single_face.mp4", "--frames", "60", "--json", out, env=cache
    )
    assert r.returncode == 0, r.stderr
    for stage in ("decode", "detect", "align", "track", "macro"):
        assert stage in r.stdout
    p = json.loads(out.read_text())
    assert p["frames"] == 60 and p["frames_with_faces"] >= 57 and p["fps"] > 0 and p["decode_fps"] > p["fps"]
    for k, v in p["stages"].items():
        assert v["p50_ms"] <= v["p90_ms"] <= v["p99_ms"] <= v["max_ms"], k
    # the ceiling with detection on every frame, and each stage timed alone beside its in-pipeline figure
    assert p["decode_fps"] > p["detect_fps"] > 0 and p["detect_ratio"] == pytest.approx(
        p["fps"] / p["detect_fps"], 1e-3
    )
    assert all(p["stages"][k]["alone_p50_ms"] > 0 for k in ("detect", "align", "macro"))
    assert p["settings"]["threads"]["onnxruntime"] >= 1 and "alone p50" in r.stdout and "threads: OpenCV" in r.stdout
    assert "add up past 100%" in " ".join(r.stdout.split())


def test_export_cache_returns_the_fp32_export_beside_derived_precisions(tiny_genotype_file, monkeypatch, tmp_path):
    from emonas_edge.runtime.compiled import cached_onnx

    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    first = cached_onnx(tiny_genotype_file)
    (first.parent / "tiny.int8.onnx").write_bytes(b"derived")  # sorts before tiny.onnx
    assert cached_onnx(tiny_genotype_file) == first
