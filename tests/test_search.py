"""The hardware-aware search: latency table, expected latency, search runs, resume, bad input.

Tables here time a tiny space (4 ops, widths 8/12, depths 1/2) with few iterations: the tests
check the machinery (a table is a real ONNX Runtime measurement, the expectation is exact, a
search derives a network export accepts), not the figures, which `benchmarks/` measures.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emonas_edge.config import config_from_dict
from emonas_edge.errors import UserError
from emonas_edge.search.arch import ArchParams, ExpectedLatency
from emonas_edge.search.engine import SearchSettings, split_held_out
from emonas_edge.search.lut import LutSettings, build_lut, load_lut, lut_from_dict, save_lut
from emonas_edge.search.run import SearchJob, run_search
from emonas_edge.search.space import SearchSpace, genotype_of

OPS = ("conv_3x3", "skip_connect", "max_pool_3x3", "sep_conv_3x3")


def tiny_space(**kw) -> SearchSpace:
    return SearchSpace(**{"ops": OPS, "widths": (8, 12), "depths": (1, 2), "nodes": 1, **kw})


@pytest.fixture(scope="module")
def lut_file(tmp_path_factory) -> Path:
    table = build_lut(tiny_space(), LutSettings(iters=20, warmup=3, calibration_networks=3))
    return save_lut(table, tmp_path_factory.mktemp("lut") / "lut.json")


@pytest.fixture(scope="module")
def fer_small(tmp_path_factory, shared) -> Path:
    """12 real FER2013 training faces per class, linked (never copied) from ../shared."""
    src = shared / "datasets" / "fer2013" / "train"
    root = tmp_path_factory.mktemp("fer")
    for cls in sorted(p.name for p in src.iterdir()):
        (root / cls).mkdir()
        for f in sorted((src / cls).iterdir())[:12]:
            (root / cls / f.name).symlink_to(f)
    return root


def quick(**kw) -> SearchSettings:
    return SearchSettings(**{"epochs": 1, "batch": 16, "max_steps": 2, "eval_limit": 32, "threads": 1, **kw})


# --------------------------------------------------------------------------- latency table


def test_lut_round_trips_and_records_what_it_measured(lut_file):
    table = load_lut(lut_file)
    again = lut_from_dict(json.loads(Path(lut_file).read_text()), "again")
    assert again.blocks == table.blocks and (again.a, again.b) == (table.a, table.b)
    d = json.loads(Path(lut_file).read_text())
    assert d["backend"] == "ort" and d["threads"] == 1 and d["precision"] == "fp32"
    assert d["space"]["input_size"] == 48 and d["space"]["in_channels"] == 1
    assert d["device"]["cpu"] and d["device"]["packages"]["onnxruntime"]
    assert len(d["fit"]["networks"]) == 3 and all(v >= 0 for v in table.blocks.values())
    # every block of every network of the space has an entry: a prediction never misses a key
    sp = table.space
    for w, dpt in itertools.product(sp.widths, sp.depths):
        assert (
            table.predict_ms(
                sp.config(
                    genotype_of([("sep_conv_3x3", 0), ("max_pool_3x3", 1)], [("conv_3x3", 1), ("skip_connect", 0)], 1),
                    w,
                    dpt,
                )
            )
            > 0
        )


def test_table_fit_never_predicts_below_zero():
    from emonas_edge.search.lut import _fit

    b, a = _fit(np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.5, 0.7]))  # a clean line keeps its intercept
    assert (b, a) == (pytest.approx(2.0), pytest.approx(0.1))
    b, a = _fit(np.array([0.1, 0.2, 0.3]), np.array([0.05, 0.3, 0.55]))  # a noisy negative intercept: through 0
    assert a == 0.0 and b > 0 and a + b * 0.01 > 0
    b, a = _fit(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.45, 0.4]))  # noise sloping the wrong way
    assert a == 0.0 and b > 0 and a + b * 0.3 > 0
    b, a = _fit(np.array([0.1, 0.2, 0.3]), np.array([-0.2, -0.3, -0.35]))  # nothing positive to scale by
    assert (b, a) == (1.0, 0.0)


def test_lut_for_another_input_spec_backend_or_precision_is_refused(lut_file, tmp_path):
    with pytest.raises(UserError, match="64x64"):
        load_lut(lut_file, input_size=64)
    with pytest.raises(UserError, match="int8"):
        load_lut(lut_file, precision="int8")
    d = json.loads(Path(lut_file).read_text())
    d["backend"] = "tensorrt"
    p = tmp_path / "trt.json"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match="backend"):
        load_lut(p)
    d = json.loads(Path(lut_file).read_text())
    d["device"]["cpu"] = "Some Other CPU"
    p.write_text(json.dumps(d))
    warned = []
    load_lut(p, warn=warned.append)
    assert warned and "Some Other CPU" in warned[0]


def test_expected_latency_of_a_certain_distribution_is_the_network_prediction(lut_file):
    table = load_lut(lut_file)
    sp = table.space
    arch = ArchParams(sp)
    rng = np.random.default_rng(0)
    for trial in range(6):
        with torch.no_grad():
            for p in arch.parameters():
                p.copy_(torch.from_numpy(rng.normal(size=p.shape) * (1e3 if trial < 5 else 1e6)))
            if trial == 5:  # both slots certain of one edge (what a strong penalty learns), and of the runner-up
                arch.alpha[:, :, 1] = arch.alpha[:, :, 0]
                arch.gamma[:, :, 1] = arch.gamma[:, :, 0]
        # the network derivation returns: each node's two most likely different edges (when both slots are
        # certain of one edge, the second is the runner-up edge, however improbable: it is what gets exported)
        genotype, w, d = arch.argmax()
        expected = float(ExpectedLatency(sp, table)(arch).detach())
        assert expected == pytest.approx(table.predict_ms(sp.config(genotype, w, d), drop_dead=False), rel=1e-9)


def test_derivation_under_a_target_takes_the_largest_size_that_meets_it(lut_file):
    from emonas_edge.search.run import derive

    table = load_lut(lut_file)
    sp = table.space
    arch, latency = ArchParams(sp), ExpectedLatency(sp, table)
    genotype, _, _ = arch.argmax()
    costs = sorted(
        (table.predict_ms(sp.config(genotype, w, d)), w, d) for w, d in itertools.product(sp.widths, sp.depths)
    )
    for target in (costs[1][0], (costs[-2][0] + costs[-1][0]) / 2, costs[-1][0] * 2):
        g, w, d, predicted, met = derive(arch, latency, target)
        assert g == genotype and met and predicted <= target
        assert predicted == pytest.approx(max(c for c, _, _ in costs if c <= target))
    g, w, d, predicted, met = derive(arch, latency, costs[0][0] / 2)  # nothing fits: the cheapest, said so
    assert not met and predicted == pytest.approx(costs[0][0])


def test_cells_the_export_drops_are_not_counted(cli, tmp_path):
    """Normal cells reading only s0 skip the cell before them; a cell nobody reads is not in the ONNX."""
    import onnx

    from emonas_edge.search.blocks import cell_places, live_cells, network_blocks

    sp = SearchSpace(ops=("conv_3x3", "max_pool_3x3"), widths=(8,), depths=(2,), nodes=1)
    config = sp.config(genotype_of([("conv_3x3", 0), ("conv_3x3", 0)], [("conv_3x3", 1), ("max_pool_3x3", 1)], 1), 8, 2)
    net = config.network
    live = live_cells(cell_places(net["layers"], 8, 8, 24, 1), config.genotype)
    assert not all(live) and live[-1]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(config.to_dict()))
    r = cli("export", "--genotype", path, "--output", tmp_path / "out", timeout=600)
    assert r.returncode == 0, r.stderr
    convs = sum(n.op_type == "Conv" for n in onnx.load(next((tmp_path / "out").glob("*.onnx"))).graph.node)

    def conv_count(keys):
        return sum({"stem": 1, "pre": 1, "fr": 2}.get(k.split(":")[0], 0) + k.startswith("op:conv_3x3") for k in keys)

    assert conv_count(network_blocks(config)) == convs < conv_count(network_blocks(config, drop_dead=False))


def test_lut_cli_refuses_unknown_precision_and_writes_nothing(cli, tmp_path):
    r = cli("search", "lut", "--out", tmp_path / "l.json", "--precision", "int4")
    assert r.returncode == 2 and "int4" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "l.json").exists()


# --------------------------------------------------------------------------- search


@pytest.mark.slow
def test_one_epoch_derives_a_genotype_that_export_verifies(cli, lut_file, fer_small, tmp_path):
    run = tmp_path / "run"
    r = cli(
        "search",
        "--data",
        fer_small,
        "--lut",
        lut_file,
        "--epochs",
        "1",
        "--batch",
        "16",
        "--max-steps",
        "2",
        "--run-dir",
        run,
        "--out",
        tmp_path / "best.json",
        "--threads",
        "1",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    best = json.loads((tmp_path / "best.json").read_text())
    rec = best["meta"]["search"]
    assert (
        rec["epochs"] == 1
        and rec["lut"]["backend"] == "ort"
        and rec["split"]["architecture"] > 0
        and rec["wall_seconds"] > 0
    )
    assert rec["predicted_ms"] > 0 and rec["architecture_weights"]["normal"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and "expected_ms" in history[0] and "supernet_accuracy" in history[0]
    derived = history[0]["derived"]  # the epoch's log says what the search would return at that point
    assert (derived["width"], derived["depth"]) == (rec["width"], rec["depth"])
    r = cli("export", "--genotype", tmp_path / "best.json", "--output", tmp_path / "exp", timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "exp" / "searched.onnx").is_file() and "pass" in r.stdout


def _brute_force_min(table) -> float:
    sp = table.space
    slots = [(op, j) for op in sp.ops for j in range(2)]
    best = float("inf")
    for normal in itertools.combinations(slots, 2):  # a node's two edges differ (ArchParams.argmax)
        for reduce in itertools.combinations(slots, 2):
            g = genotype_of(list(normal), list(reduce), 1)
            for w, d in itertools.product(sp.widths, sp.depths):
                best = min(best, table.predict_ms(sp.config(g, w, d), drop_dead=False))
    return best


@pytest.fixture(scope="module")
def ranked_lut_file(lut_file, tmp_path_factory) -> Path:
    """The measured table with each block's cost replaced by its rank (1, 2, ... us, in key order), no
    overhead and an identity fit: every cost distinct and positive, and the same on every machine. The
    optimiser tests need that: a table timed beside a training run once priced networks below zero (a
    negative fit), and noisy near-ties made 'the cheapest network' a coin toss."""
    d = json.loads(Path(lut_file).read_text())
    d["blocks"] = {k: 1e-3 * (i + 1) for i, k in enumerate(sorted(d["blocks"]))}
    d["overhead_ms"], d["fit"]["a"], d["fit"]["b"] = 0.0, 0.0, 1.0
    out = tmp_path_factory.mktemp("ranked") / "lut.json"
    out.write_text(json.dumps(d))
    return out


@pytest.mark.slow
def test_huge_latency_weight_derives_the_cheapest_network(ranked_lut_file, fer_small, tmp_path):
    table = load_lut(ranked_lut_file)
    settings = quick(epochs=6, latency_weight=1e3, arch_lr=0.2, max_steps=8)
    best = run_search(
        SearchJob(str(fer_small), str(ranked_lut_file), run_dir=str(tmp_path / "r")), settings, log=lambda m: None
    )
    # the search minimises every cell's cost (its closed form cannot see cells the export drops): compare on that
    derived = table.predict_ms(config_from_dict(best), drop_dead=False)
    assert derived == pytest.approx(_brute_force_min(table), rel=1e-9)


def test_a_search_at_one_size_runs_the_supernet_there_and_derives_it(lut_file, fer_small, tmp_path):
    from emonas_edge.search import engine

    seen = []
    original = engine.Searcher.weight_step

    def spy(self, x, y, sample, lr):
        seen.append((sample.width, sample.depth))
        return original(self, x, y, sample, lr)

    engine.Searcher.weight_step = spy
    try:
        best = run_search(
            SearchJob(str(fer_small), str(lut_file), run_dir=str(tmp_path / "r")),
            quick(epochs=4, search_size=(12, 2)),
            log=lambda m: None,
        )
    finally:
        engine.Searcher.weight_step = original
    assert set(seen) == {(12, 2)} and len(seen) >= 8
    assert (best["meta"]["search"]["width"], best["meta"]["search"]["depth"]) == (12, 2)
    assert best["network"]["init_channels"] == 12 and best["network"]["layers"] == 3 * 2 + 2


def test_partial_channel_edge_runs_its_ops_on_a_part_of_the_channels_and_passes_the_rest():
    from emonas_edge.search.supernet import PartialMix, channel_shuffle

    torch.manual_seed(0)
    ops = [torch.nn.Conv2d(2, 2, 3, padding=1, bias=False), torch.nn.Identity()]
    edge = PartialMix(ops, 4, 1)
    x = torch.randn(3, 8, 6, 6)
    one = edge(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(one, channel_shuffle(torch.cat([ops[0](x[:, :2]), x[:, 2:]], 1), 4))
    half = edge(x, torch.tensor([0.5, 0.5]))
    assert torch.allclose(half, channel_shuffle(torch.cat([0.5 * ops[0](x[:, :2]) + 0.5 * x[:, :2], x[:, 2:]], 1), 4))
    # the bypassed channels are interleaved, not left at the end: the next edge's ops see some of them
    assert not torch.allclose(one[:, 2:], x[:, 2:])


def test_a_pc_darts_architecture_step_reaches_every_op_logit(lut_file, fer_small):
    from emonas_edge.data.datasets import load_dataset
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.search.engine import Searcher
    from emonas_edge.search.run import _data_config

    table = load_lut(lut_file)
    config = _data_config(table.space)
    searcher = Searcher(
        table.space, table, load_dataset(str(fer_small), config), Preprocessor(config), quick(), epochs=1
    )
    x, y = searcher._batch(searcher.part_a, torch.arange(len(searcher.part_a)), 0, None)
    searcher.arch_opt.zero_grad()
    searcher.net(x, searcher.sample(torch.Generator().manual_seed(0), 1.0)).logsumexp(1).mean().backward()
    grad = searcher.arch.alpha.grad
    assert grad is not None and bool((grad != 0).all()), "a mixed edge gives every op of every slot a gradient"


def test_derivation_keeps_a_nodes_two_most_likely_different_edges():
    sp = tiny_space()
    arch = ArchParams(sp)
    conv, skip = sp.ops.index("conv_3x3"), sp.ops.index("skip_connect")
    with torch.no_grad():  # both slots of every node prefer conv_3x3 on input 1, skip_connect on it second
        arch.alpha[..., conv] = 4.0
        arch.alpha[..., skip] = 3.0
        arch.gamma[..., 1] = 4.0
    genotype, _, _ = arch.argmax()
    assert genotype.normal == (("conv_3x3", 1), ("skip_connect", 1)) == genotype.reduce


def test_supernet_accuracy_is_scored_on_batches_of_every_class(lut_file, fer_small, monkeypatch):
    """A folder dataset is sorted by class; batch statistics of a one-class batch erase the class signal."""
    from emonas_edge.data.datasets import load_dataset
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.search import engine
    from emonas_edge.search.run import _data_config

    table = load_lut(lut_file)
    config = _data_config(table.space)
    searcher = engine.Searcher(
        table.space, table, load_dataset(str(fer_small), config), Preprocessor(config), quick(eval_limit=16), epochs=1
    )
    batches = []
    original = engine.training_batch
    monkeypatch.setattr(
        engine, "training_batch", lambda images, idx, *a, **k: (batches.append(idx), original(images, idx, *a, **k))[1]
    )
    accuracy = searcher.evaluate()
    assert 0.0 <= accuracy <= 1.0 and len(batches) == 1 and len(batches[0]) == min(16, len(searcher.part_a))
    labels = searcher.labels[batches[0]].tolist()
    assert len(set(labels)) >= 4 and labels != sorted(labels), "a shuffled subset, not the class-sorted head"


def test_gdas_method_samples_one_op_per_slot_and_derives(lut_file, fer_small, tmp_path):
    best = run_search(
        SearchJob(str(fer_small), str(lut_file), run_dir=str(tmp_path / "r")), quick(method="gdas"), log=lambda m: None
    )
    assert best["meta"]["search"]["settings"]["method"] == "gdas"
    assert config_from_dict(best).genotype.normal


@pytest.mark.slow
def test_interrupted_and_resumed_search_ends_where_an_uninterrupted_one_does(lut_file, fer_small, tmp_path):
    settings = quick(epochs=3, max_steps=3, seed=7)
    job = SearchJob(str(fer_small), str(lut_file), run_dir=str(tmp_path / "a"))
    straight = run_search(job, settings, log=lambda m: None)

    def stop(epoch, step, steps, loss, acc):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(
            SearchJob(str(fer_small), str(lut_file), run_dir=str(tmp_path / "b")),
            settings,
            log=lambda m: None,
            progress=stop,
        )
    resumed = run_search(
        SearchJob(str(fer_small), str(lut_file), resume=str(tmp_path / "b")), SearchSettings(), log=lambda m: None
    )
    for key in ("normal", "reduce", "normal_concat"):
        assert resumed[key] == straight[key]
    assert resumed["network"] == straight["network"]
    a = torch.load(tmp_path / "a" / "search.pt", weights_only=True)["arch"]
    b = torch.load(tmp_path / "b" / "search.pt", weights_only=True)["arch"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_search_on_synthetic_clips(tmp_path):
    from test_datasets import write_clip

    from emonas_edge.config import MEGC_CLASSES

    sp = SearchSpace(
        in_channels=3,
        input_size=32,
        num_classes=3,
        task="micro",
        classes=MEGC_CLASSES,
        ops=("conv_3x3", "skip_connect"),
        widths=(8,),
        depths=(1,),
        nodes=1,
    )
    lut = save_lut(build_lut(sp, LutSettings(iters=10, warmup=2, calibration_networks=0)), tmp_path / "micro_lut.json")
    rows = []
    for k in range(24):
        write_clip(tmp_path / "frames" / f"s{k % 4}" / f"c{k}", 1, 4, seed=k, size=32)
        rows.append(f"s{k % 4},c{k},1,2,4,{MEGC_CLASSES[k % 3]}")
    ann = tmp_path / "ann.csv"
    ann.write_text("subject,clip,onset,apex,offset,label\n" + "\n".join(rows) + "\n")
    best = run_search(
        SearchJob(str(tmp_path / "frames"), str(lut), task="micro", annotations=str(ann), run_dir=str(tmp_path / "r")),
        quick(batch=8),
        log=lambda m: None,
    )
    assert best["task"] == "micro" and best["classes"] == list(MEGC_CLASSES) and best["network"]["in_channels"] == 3
    assert best["meta"]["search"]["images"] == 24


# --------------------------------------------------------------------------- bad input


def _refused(r, run: Path, *words):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr
    assert not run.exists()


@pytest.mark.slow
def test_too_small_dataset_is_refused(cli, lut_file, fer_small, tmp_path):
    small = tmp_path / "small"
    for cls in ("happy", "sad"):
        (small / cls).mkdir(parents=True)
        for f in sorted((fer_small / cls).iterdir())[:3]:
            (small / cls / f.name).symlink_to(f.resolve())
    run = tmp_path / "run"
    _refused(cli("search", "--data", small, "--lut", lut_file, "--run-dir", run), run, "too small")


@pytest.mark.slow
def test_unknown_op_and_op_outside_the_table_are_refused(cli, lut_file, fer_small, tmp_path):
    run = tmp_path / "run"
    _refused(
        cli("search", "--data", fer_small, "--lut", lut_file, "--ops", "conv_3x3,warp_9x9", "--run-dir", run),
        run,
        "warp_9x9",
    )
    _refused(
        cli("search", "--data", fer_small, "--lut", lut_file, "--ops", "conv_3x3,sep_conv_7x7", "--run-dir", run),
        run,
        "sep_conv_7x7",
    )
    _refused(
        cli("search", "--data", fer_small, "--lut", lut_file, "--search-size", "99,1", "--run-dir", run), run, "99,1"
    )
    _refused(
        cli("search", "--data", fer_small, "--lut", lut_file, "--search-size", "12", "--run-dir", run),
        run,
        "WIDTH,DEPTH",
    )
    _refused(cli("search", "--data", fer_small, "--lut", lut_file, "--method", "enas", "--run-dir", run), run, "enas")
    _refused(
        cli("search", "--data", fer_small, "--lut", lut_file, "--partial-channels", "5", "--run-dir", run),
        run,
        "--partial-channels 5",
    )


@pytest.mark.slow
def test_table_for_another_task_or_backend_is_refused(cli, lut_file, fer_small, tmp_path):
    run = tmp_path / "run"
    _refused(
        cli(
            "search",
            "--data",
            fer_small,
            "--lut",
            lut_file,
            "--task",
            "micro",
            "--annotations",
            lut_file,
            "--run-dir",
            run,
        ),
        run,
        "task",
    )
    d = json.loads(Path(lut_file).read_text())
    d["backend"] = "tensorrt"
    other = tmp_path / "trt.json"
    other.write_text(json.dumps(d))
    _refused(cli("search", "--data", fer_small, "--lut", other, "--run-dir", run), run, "backend")


@pytest.mark.slow
def test_budget_below_one_epoch_is_refused(cli, lut_file, fer_small, tmp_path):
    run = tmp_path / "run"
    _refused(
        cli(
            "search",
            "--data",
            fer_small,
            "--lut",
            lut_file,
            "--budget-hours",
            "0.000001",
            "--run-dir",
            run,
            "--out",
            tmp_path / "b.json",
        ),
        run,
        "budget",
    )
    assert not (tmp_path / "b.json").exists()


def test_held_out_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    a, b = split_held_out(labels, 0.2, 0, 4)
    assert not set(a) & set(b) and len(a) + len(b) == 100
    assert list(np.bincount(labels[b])) == [2, 4, 6, 8]


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on CPU is exercised on Linux")
@pytest.mark.slow
def test_search_runs_under_torchrun(lut_file, fer_small, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    code = "import sys; from emonas_edge.cli.main import main; main(sys.argv[1:])"
    script = tmp_path / "entry.py"
    script.write_text(code)
    r = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29631",
            str(script),
            "search",
            "--data",
            str(fer_small),
            "--lut",
            str(lut_file),
            "--epochs",
            "1",
            "--batch",
            "8",
            "--max-steps",
            "2",
            "--threads",
            "1",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["meta"]["search"]["processes"] == 2
