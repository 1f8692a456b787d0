"""Training, metrics, checkpoints, evaluation (PyTorch vs ONNX Runtime), the train/evaluate CLI, and LOSO.

The network is a tiny cell genotype (8 channels, 3 cells, stride-2 stem) and the data a few
dozen real FER2013 images per class from ``../shared`` (tests needing it skip when it is absent),
so the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emonas_edge.checkpoint import load_checkpoint, read_checkpoint
from emonas_edge.config import FER2013_CLASSES, MEGC_CLASSES, config_from_dict
from emonas_edge.data.datasets import ArrayDataset, load_image_folder
from emonas_edge.data.preprocess import Preprocessor
from emonas_edge.errors import UserError
from emonas_edge.metrics import classification_report, confusion_matrix
from emonas_edge.nn import create_model
from emonas_edge.runtime import load_backend
from emonas_edge.train.evaluate import evaluate, predict_logits
from emonas_edge.train.loso import run_loso
from emonas_edge.train.trainer import TrainSettings, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY = {
    "name": "tiny",
    "task": "macro",
    "family": "cell",
    "normal": [["conv_3x3", 0], ["skip_connect", 1]],
    "normal_concat": [2],
    "reduce": [["max_pool_3x3", 0], ["conv_3x3", 1]],
    "reduce_concat": [2],
    "network": {"in_channels": 1, "input_size": 48, "init_channels": 8, "layers": 3, "stem_stride": 2},
}


def tiny_config(**top):
    return config_from_dict({**TINY, **top})


def fresh_model(config, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(config)


def quiet(msg: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Own decode cache per test; torch's global thread count restored (train() sets it)."""
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fer(shared) -> Path:
    """FER2013 as class folders: ``fer / "train"``, ``fer / "publictest"``."""
    return shared / "datasets" / "fer2013"


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_confusion_matrix_rows_are_truth_columns_predictions():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([1, 0, 2, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]


def test_classification_report_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["samples"] == 6 and r["classes"] == ["a", "b", "c"]
    pc = r["per_class"]
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["uf1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["uar"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    json.dumps(r)  # plain Python types only


def test_classes_absent_from_the_data_do_not_count_in_uf1_uar():
    y_true = np.array([0, 0, 2, 2])
    y_pred = np.array([0, 2, 2, 2])
    r = classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    # a: P 1, R 1/2, F1 2/3; c: P 2/3, R 1, F1 4/5; b and d: never true, never predicted
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["uf1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert r["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["accuracy"] == pytest.approx(0.75)


def test_uar_differs_from_accuracy_on_imbalanced_data():
    # 9 of class 0 and 1 of class 1, everything predicted 0: accuracy 0.9, UAR 0.5.
    y_true = np.array([0] * 9 + [1])
    y_pred = np.zeros(10, np.int64)
    r = classification_report(y_true, y_pred, ["x", "y"])
    assert r["accuracy"] == pytest.approx(0.9)
    assert r["uar"] == pytest.approx(0.5)
    assert r["uf1"] == pytest.approx((2 * 0.9 * 1.0 / 1.9 + 0.0) / 2)


def test_perfect_and_empty_reports():
    y = np.array([2, 0, 1, 1])
    r = classification_report(y, y, ["a", "b", "c"])
    assert r["accuracy"] == r["uf1"] == r["uar"] == 1.0
    empty = classification_report(np.array([], np.int64), np.array([], np.int64), ["a", "b"])
    assert empty["accuracy"] == 0.0 and empty["uf1"] == 0.0 and empty["samples"] == 0


# ---------------------------------------------------------------------------------------------
# Training on real FER2013 subsets
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_subsets(tmp_path_factory, fer):
    """30 train images per class and 10 public-test images per class (decoded once per module)."""
    train_root, test_root = fer / "train", fer / "publictest"
    old = os.environ.get("EMONAS_EDGE_CACHE")
    os.environ["EMONAS_EDGE_CACHE"] = str(tmp_path_factory.mktemp("fer-cache"))
    try:
        config = tiny_config()
        tr = load_image_folder(train_root, config, limit_per_class=30)
        te = load_image_folder(test_root, config, limit_per_class=10)
    finally:
        if old is None:
            os.environ.pop("EMONAS_EDGE_CACHE", None)
        else:
            os.environ["EMONAS_EDGE_CACHE"] = old
    return tr, te


def test_a_few_epochs_reduce_the_training_loss(fer_subsets, tmp_path):
    tr, _ = fer_subsets
    config = tiny_config()
    settings = TrainSettings(
        epochs=6,
        batch=32,
        optimizer="adamw",
        lr=5e-3,
        augment=False,
        label_smoothing=0.0,
        warmup_epochs=0.0,
        threads=1,
        seed=0,
    )
    summary = train(config, fresh_model(config), tr, None, tmp_path / "run", settings, log=quiet)
    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[0] < 2.3  # started near chance (ln 7 = 1.95), not diverged
    # ~0.08 lower in practice; 0.03 leaves room for thread-order noise
    assert losses[-1] < losses[0] - 0.03, losses
    assert min(losses[-2:]) < min(losses[:2]), losses


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _resume_settings(epochs: int, **kw) -> TrainSettings:
    # augmentation on: its randomness must also be re-seeded per epoch for resume to match
    return TrainSettings(epochs=epochs, batch=16, lr=0.05, max_steps=3, threads=1, seed=3, **kw)


def test_resume_takes_the_same_next_step_as_an_uninterrupted_run(fer_subsets, tmp_path):
    tr, _ = fer_subsets
    config = tiny_config()
    a, b = tmp_path / "A", tmp_path / "B"
    train(config, fresh_model(config), tr, None, a, _resume_settings(2), log=quiet)
    train(config, fresh_model(config), tr, None, b, _resume_settings(1), log=quiet)
    assert [h["epoch"] for h in _history(b)] == [1]
    # resumed onto a differently initialised network: the checkpoint's weights must win
    summary = train(config, fresh_model(config, seed=99), tr, None, b, _resume_settings(2), resume=True, log=quiet)
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in hb] == [1, 2]
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert hb[0]["train_loss"] == ha[0]["train_loss"]
    assert hb[1]["train_loss"] == pytest.approx(ha[1]["train_loss"], abs=1e-6, rel=0)
    assert hb[1]["train_accuracy"] == ha[1]["train_accuracy"]
    assert hb[1]["lr"] == pytest.approx(ha[1]["lr"], abs=1e-12)
    _same_weights(a / "last.pt", b / "last.pt")
    assert read_checkpoint(b / "last.pt")["train"]["epoch"] == 2


class _Killed(Exception):
    pass


def test_run_interrupted_after_an_epoch_resumes_exactly(fer_subsets, tmp_path):
    """A 3-epoch run killed after epoch 1 and resumed (same --epochs) ends where an uninterrupted one does."""
    tr, te = fer_subsets
    config = tiny_config()
    a, b = tmp_path / "A", tmp_path / "B"
    settings = _resume_settings(3, warmup_epochs=0.5)
    train(config, fresh_model(config), tr, te, a, settings, log=quiet)

    def die_after_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise _Killed(msg)

    with pytest.raises(_Killed):
        train(config, fresh_model(config), tr, te, b, settings, log=die_after_first_epoch)
    assert read_checkpoint(b / "last.pt")["train"]["epoch"] == 1
    train(config, fresh_model(config, seed=7), tr, te, b, settings, resume=True, log=quiet)
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in hb] == [1, 2, 3]
    for ra, rb in zip(ha, hb, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-6, rel=0)
        assert rb["val"] == pytest.approx(ra["val"], abs=1e-9)
    _same_weights(a / "last.pt", b / "last.pt")
    _same_weights(a / "best.pt", b / "best.pt")
    assert json.loads((b / "summary.json").read_text())["best"] == json.loads((a / "summary.json").read_text())["best"]


def test_resume_without_a_checkpoint_is_an_error(fer_subsets, tmp_path):
    tr, _ = fer_subsets
    config = tiny_config()
    with pytest.raises(UserError, match="no checkpoint"):
        train(config, fresh_model(config), tr, None, tmp_path / "empty", _resume_settings(1), resume=True, log=quiet)


def test_training_data_with_other_classes_is_an_error(tmp_path):
    config = tiny_config()
    ds = ArrayDataset(np.zeros((4, 48, 48), np.uint8), np.zeros(4, np.int64), ("a", "b"), "synthetic")
    with pytest.raises(UserError, match="differ from the model"):
        train(config, fresh_model(config), ds, None, tmp_path / "r", _resume_settings(1), log=quiet)


@pytest.mark.parametrize(
    "bad",
    [
        dict(optimizer="lamb"),
        dict(epochs=0),
        dict(batch=0),
        dict(mix="mosaic"),
        dict(mix="mixup", mix_alpha=0.0),
        dict(mix_p=1.5),
        dict(lr=float("nan")),
        dict(lr=-1.0),
        dict(lr=float("inf")),
        dict(ema=2.0),
        dict(ema=float("nan")),
        dict(label_smoothing=2.0),
        dict(weight_decay=-1e-4),
        dict(eval_batch=0),
        dict(distill_temperature=float("nan")),
    ],
)
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError, match="|".join(k.replace("_", "[ -]") for k in bad)):
        TrainSettings(**bad).resolved()


def test_a_new_run_never_writes_over_another_run(fer_subsets, tmp_path):
    tr, _ = fer_subsets
    config = tiny_config()
    run = tmp_path / "run"
    train(config, fresh_model(config), tr, None, run, _resume_settings(1), log=quiet)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="already holds a training run"):
        train(config, fresh_model(config), tr, None, run, _resume_settings(1), log=quiet)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resuming_on_other_data_is_refused(fer_subsets, tmp_path):
    tr, te = fer_subsets
    config = tiny_config()
    run = tmp_path / "run"
    train(config, fresh_model(config), tr, None, run, _resume_settings(1), log=quiet)
    with pytest.raises(UserError, match="not the data this run started with"):
        train(config, fresh_model(config), te, None, run, _resume_settings(2), resume=True, log=quiet)
    assert read_checkpoint(run / "last.pt")["train"]["epoch"] == 1


def test_a_loss_that_becomes_nan_stops_training_and_saves_nothing_as_trained(fer_subsets, tmp_path):
    from emonas_edge.errors import CheckFailed

    tr, _ = fer_subsets
    config = tiny_config()
    run = tmp_path / "run"
    settings = TrainSettings(epochs=1, batch=16, lr=1e30, warmup_epochs=0, max_steps=6, threads=1, augment=False)
    with pytest.raises(CheckFailed, match="training loss became"):
        train(config, fresh_model(config), tr, None, run, settings, log=quiet)
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


# ---------------------------------------------------------------------------------------------
# A trained run shared by the checkpoint / evaluation / export tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(fer_subsets, tmp_path_factory):
    tr, te = fer_subsets
    config = tiny_config()
    out = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    try:
        settings = TrainSettings(epochs=3, batch=32, optimizer="adamw", lr=5e-3, augment=False, threads=1, seed=1)
        summary = train(config, fresh_model(config), tr, te, out, settings, log=quiet)
    finally:
        torch.set_num_threads(threads)
    return out, summary


# ---------------------------------------------------------------------------------------------
# Distillation
# ---------------------------------------------------------------------------------------------


def _targets(teachers, ds, temperature=4.0):
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.train.common import dataset_images
    from emonas_edge.train.distill import teacher_targets

    pre = Preprocessor(tiny_config())
    images = dataset_images(ds, "cpu")
    return images, teacher_targets(
        teachers, images, torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift), temperature
    )


def test_teacher_targets_are_mirror_invariant_distributions(trained_run, fer_subsets):
    out, _ = trained_run
    tr, _ = fer_subsets
    _, teacher, _ = load_checkpoint(out / "best.pt")
    teacher.eval()
    images, t = _targets([teacher], tr)
    assert t.shape == (len(tr), 7)
    assert torch.allclose(t.sum(1), torch.ones(len(tr)), atol=1e-5)
    mirrored = ArrayDataset(np.ascontiguousarray(tr.images[:, :, ::-1]), tr.labels, tr.classes, "mirrored")
    _, tm = _targets([teacher], mirrored)
    assert torch.allclose(t, tm, atol=1e-5), "a flipped view must get the same target"
    # not uniform, and a lower temperature makes it sharper
    assert float(t.max(1).values.mean()) > 1 / 7
    _, t1 = _targets([teacher], tr, temperature=1.0)
    assert float(t1.max(1).values.mean()) > float(t.max(1).values.mean())


def test_an_ensemble_of_teachers_averages_their_targets(trained_run, fer_subsets):
    out, _ = trained_run
    tr, _ = fer_subsets
    _, a, _ = load_checkpoint(out / "best.pt")
    b = fresh_model(tiny_config(), seed=5).eval()
    _, ta = _targets([a.eval()], tr)
    _, tb = _targets([b], tr)
    _, tab = _targets([a, b], tr)
    assert torch.allclose(tab, (ta + tb) / 2, atol=1e-6)
    assert not torch.allclose(ta, tb, atol=1e-3)


def _kl_to_targets(model, images, targets, temperature=4.0) -> float:
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.train.trainer import training_batch

    pre = Preprocessor(tiny_config())
    model.eval()
    with torch.inference_mode():
        x = training_batch(
            images,
            torch.arange(len(images)),
            torch.from_numpy(pre.unit_scale),
            torch.from_numpy(pre.shift),
            None,
            channels_last=False,
        )
        logp = torch.log_softmax(model(x) / temperature, 1)
    return float(torch.nn.functional.kl_div(logp, targets, reduction="batchmean"))


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_distillation_pulls_the_student_towards_the_teacher(trained_run, fer_subsets, tmp_path, mode):
    out, _ = trained_run
    tr, _ = fer_subsets
    _, teacher, _ = load_checkpoint(out / "best.pt")
    images, targets = _targets([teacher.eval()], tr)
    config = tiny_config()
    student = fresh_model(config, seed=11)
    before = _kl_to_targets(student, images, targets)
    # alpha 1: the labels play no part, only the teacher does
    settings = TrainSettings(
        epochs=5,
        batch=32,
        optimizer="adamw",
        lr=5e-3,
        augment=False,
        warmup_epochs=0.0,
        threads=1,
        seed=0,
        teachers=(str(out / "best.pt"),),
        distill=mode,
        distill_alpha=1.0,
    )
    summary = train(config, student, tr, None, tmp_path / "run", settings, log=quiet)
    _, trained, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    after = _kl_to_targets(trained, images, targets)
    assert after < 0.5 * before, (before, after)
    saved = read_checkpoint(tmp_path / "run" / "last.pt")["config"]["meta"]["training"]["settings"]
    assert list(saved["teachers"]) == [str(out / "best.pt")] and saved["distill"] == mode
    assert len(summary["history"]) == 5


def test_distilled_run_resumes_exactly(trained_run, fer_subsets, tmp_path):
    out, _ = trained_run
    tr, _ = fer_subsets
    config = tiny_config()
    a, b = tmp_path / "A", tmp_path / "B"
    kw = dict(teachers=(str(out / "best.pt"),), distill_alpha=0.7)
    train(config, fresh_model(config), tr, None, a, _resume_settings(2, **kw), log=quiet)
    train(config, fresh_model(config), tr, None, b, _resume_settings(1, **kw), log=quiet)
    train(config, fresh_model(config, seed=99), tr, None, b, _resume_settings(2, **kw), resume=True, log=quiet)
    ha, hb = _history(a), _history(b)
    assert hb[1]["train_loss"] == pytest.approx(ha[1]["train_loss"], abs=1e-6, rel=0)
    _same_weights(a / "last.pt", b / "last.pt")


def test_offline_targets_are_computed_once_for_the_same_teachers_and_images(
    trained_run, fer_subsets, tmp_path, monkeypatch
):
    """A second run (an ablation twin, a resumed session) takes the targets from the cache and trains exactly
    as the first; a damaged cache file is recomputed, and other images are never served stale targets."""
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path / "cache"))
    out, _ = trained_run
    tr, _ = fer_subsets
    config = tiny_config()
    kw = dict(teachers=(str(out / "best.pt"),), distill_alpha=0.7)

    def run(name, data=tr):
        logs: list[str] = []
        train(config, fresh_model(config), data, None, tmp_path / name, _resume_settings(1, **kw), log=logs.append)
        return next(m for m in logs if m.startswith("teacher targets"))

    assert "with mirrors" in run("A")
    (cached,) = (tmp_path / "cache").glob("distill-*.npz")
    assert "from the cache" in run("B")
    _same_weights(tmp_path / "A" / "last.pt", tmp_path / "B" / "last.pt")
    cached.write_bytes(b"not an npz")
    assert "with mirrors" in run("C")
    _same_weights(tmp_path / "A" / "last.pt", tmp_path / "C" / "last.pt")
    flipped = dataclasses.replace(tr, images=np.ascontiguousarray(tr.images[:, :, ::-1]))
    assert "with mirrors" in run("D", flipped)  # other images: computed, not served from the first entry
    assert len(list((tmp_path / "cache").glob("distill-*.npz"))) == 2


def test_mixed_distilled_run_resumes_exactly_and_differs_from_an_unmixed_one(trained_run, fer_subsets, tmp_path):
    out, _ = trained_run
    tr, _ = fer_subsets
    config = tiny_config()
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    kw = dict(teachers=(str(out / "best.pt"),), mix="cutmix", mix_p=1.0)
    train(config, fresh_model(config), tr, None, a, _resume_settings(2, **kw), log=quiet)
    train(config, fresh_model(config), tr, None, b, _resume_settings(1, **kw), log=quiet)
    train(config, fresh_model(config, seed=99), tr, None, b, _resume_settings(2, **kw), resume=True, log=quiet)
    ha, hb = _history(a), _history(b)
    assert all(np.isfinite(h["train_loss"]) for h in ha)
    assert hb[1]["train_loss"] == pytest.approx(ha[1]["train_loss"], abs=1e-6, rel=0)
    _same_weights(a / "last.pt", b / "last.pt")
    train(config, fresh_model(config), tr, None, c, _resume_settings(1, teachers=kw["teachers"]), log=quiet)
    assert _history(c)[0]["train_loss"] != ha[0]["train_loss"]  # mixing really changed the inputs
    assert read_checkpoint(a / "last.pt")["config"]["meta"]["training"]["settings"]["mix"] == "cutmix"


def test_resuming_with_another_teacher_is_refused(trained_run, fer_subsets, tmp_path):
    out, _ = trained_run
    tr, _ = fer_subsets
    config = tiny_config()
    run = tmp_path / "run"
    train(config, fresh_model(config), tr, None, run, _resume_settings(1, teachers=(str(out / "best.pt"),)), log=quiet)
    assert len(read_checkpoint(run / "last.pt")["train"]["teachers"]) == 1
    for teachers in (("emonas-macro",), (str(out / "best.pt"), "emonas-macro"), ()):
        with pytest.raises(UserError, match="not the ones this run started with"):
            train(
                config,
                fresh_model(config),
                tr,
                None,
                run,
                _resume_settings(2, teachers=teachers),
                resume=True,
                log=quiet,
            )
    # the same weights under another file name are the same teacher
    copy = tmp_path / "copy.pt"
    copy.write_bytes((out / "best.pt").read_bytes())
    summary = train(
        config, fresh_model(config), tr, None, run, _resume_settings(2, teachers=(str(copy),)), resume=True, log=quiet
    )
    assert len(summary["history"]) == 2


def test_a_trained_builtin_name_can_teach(fer_subsets, tmp_path):
    tr, _ = fer_subsets
    config = tiny_config()
    summary = train(
        config,
        fresh_model(config),
        tr,
        None,
        tmp_path / "r",
        _resume_settings(1, teachers=("emonas-macro",)),
        log=quiet,
    )
    assert len(summary["history"]) == 1 and np.isfinite(summary["history"][0]["train_loss"])


def test_bad_teachers_are_user_errors(trained_run, fer_subsets, tmp_path):
    from emonas_edge.checkpoint import save_checkpoint

    out, _ = trained_run
    tr, _ = fer_subsets
    config = tiny_config()
    untrained = save_checkpoint(tmp_path / "untrained.pt", fresh_model(config), config)
    other = config_from_dict({**TINY, "classes": ["a", "b", "c"]})
    other_classes = save_checkpoint(tmp_path / "other.pt", fresh_model(other), other.replace(trained=True))
    for path, msg in (
        (untrained, "untrained"),
        (other_classes, "other classes"),
        (tmp_path / "missing.pt", "missing.pt"),
    ):
        with pytest.raises(UserError, match=msg):
            train(
                config,
                fresh_model(config),
                tr,
                None,
                tmp_path / "r",
                _resume_settings(1, teachers=(str(path),)),
                log=quiet,
            )
    with pytest.raises(UserError, match="offline or online"):
        TrainSettings(distill="sometimes").resolved()
    with pytest.raises(UserError, match="alpha"):
        TrainSettings(distill_alpha=1.5).resolved()


@pytest.fixture(scope="module")
def eval_folder(fer, tmp_path_factory):
    """A few real public-test images per class, copied into a class-folder tree."""
    src = fer / "publictest"
    dst = tmp_path_factory.mktemp("evaldata")
    for cls in FER2013_CLASSES:
        (dst / cls).mkdir()
        for f in sorted((src / cls).iterdir())[:6]:
            (dst / cls / f.name).write_bytes(f.read_bytes())
    return dst


def test_checkpoints_hold_what_resuming_and_deploying_need(trained_run):
    out, summary = trained_run
    for name in ("last.pt", "best.pt", "history.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["format"] == "emonas-checkpoint/1"
    assert last["train"]["epoch"] == 3
    assert last["train"]["optimizer"]["state"], "optimizer moments must be saved for resuming"
    assert len(last["train"]["history"]) == 3
    assert last["config"]["trained"] is True
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["config"]["trained"] is True
    assert "optimizer" not in best["train"]
    best_epoch = summary["best"]["epoch"]
    assert best["train"]["epoch"] == best_epoch
    vals = [h["val"]["accuracy"] for h in summary["history"]]
    assert summary["best"]["accuracy"] == max(vals)
    assert best_epoch == 1 + vals.index(max(vals))  # the first epoch reaching the best accuracy
    assert best["config"]["meta"]["training"]["epochs_done"] == best_epoch
    config, model, _ = load_checkpoint(out / "best.pt")
    assert config.trained and config.classes == FER2013_CLASSES
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best"] == summary["best"] and len(saved["history"]) == 3


def test_best_checkpoint_reproduces_its_validation_accuracy(trained_run, fer_subsets):
    out, summary = trained_run
    _, te = fer_subsets
    backend = load_backend(out / "best.pt")
    pred = predict_logits(backend, te).argmax(1)
    acc = float((pred == te.labels).mean())
    assert acc == pytest.approx(summary["best"]["accuracy"], abs=1e-9)


@pytest.fixture(scope="module")
def exported(trained_run, eval_folder, tmp_path_factory):
    from emonas_edge.export.onnx import export_onnx

    out, _ = trained_run
    config, model, _ = load_checkpoint(out / "best.pt")
    result = export_onnx(
        config, model, tmp_path_factory.mktemp("export"), parity_data=eval_folder, weights=out / "best.pt"
    )
    assert result.parity.passed
    return result.path


def test_onnx_evaluation_equals_checkpoint_evaluation(trained_run, exported, eval_folder, tmp_path):
    out, _ = trained_run
    pt = evaluate(out / "best.pt", eval_folder, json_path=tmp_path / "pt.json")
    ox = evaluate(exported, eval_folder, json_path=tmp_path / "onnx.json")
    assert pt["backend"] == "torch" and ox["backend"] == "onnxruntime"
    assert pt["trained"] is True and ox["trained"] is True
    assert pt["samples"] == ox["samples"] == 42
    assert ox["confusion_matrix"] == pt["confusion_matrix"]
    for key in ("accuracy", "uf1", "uar", "per_class"):
        assert ox[key] == pt[key], key
    # and sample by sample
    ds = load_image_folder(eval_folder, load_backend(exported).config)
    lt, lo = predict_logits(load_backend(out / "best.pt"), ds), predict_logits(load_backend(exported), ds)
    np.testing.assert_allclose(lo, lt, atol=1e-4, rtol=1e-4)
    assert np.array_equal(lo.argmax(1), lt.argmax(1))
    written = json.loads((tmp_path / "onnx.json").read_text())
    assert written["backend"] == "onnxruntime" and written["accuracy"] == ox["accuracy"]


@pytest.mark.slow
def test_kept_epochs_are_each_epochs_evaluated_weights_scored_with_the_models_flip(fer_subsets, eval_folder, tmp_path):
    """--keep-epochs: epochs/e<N>.pt holds what epoch N scored (EMA weights; a flip model scored with its flip),
    and benchmarks/flip_by_epoch.py reads those files and reproduces the trainer's with-flip figures."""
    tr, _ = fer_subsets
    config = config_from_dict({**TINY, "network": {**TINY["network"], "test_time_flip": True}})
    val = load_image_folder(eval_folder, config)
    out = tmp_path / "run"
    settings = TrainSettings(
        epochs=2, batch=32, optimizer="adamw", lr=5e-3, augment=False, threads=1, seed=1, ema=0.9, keep_epochs=True
    )
    summary = train(config, fresh_model(config), tr, val, out, settings, log=quiet)
    assert sorted(p.name for p in (out / "epochs").glob("*.pt")) == ["e1.pt", "e2.pt"]
    for h in summary["history"]:
        kept = out / "epochs" / f"e{h['epoch']}.pt"
        payload = read_checkpoint(kept)
        assert payload["config"]["network"]["test_time_flip"] is True and payload["train"]["epoch"] == h["epoch"]
        assert evaluate(kept, eval_folder)["accuracy"] == h["val"]["accuracy"]
    _same_weights(out / "best.pt", out / "epochs" / f"e{summary['best']['epoch']}.pt")
    # the kept weights are the EMA ones, not the raw weights of last.pt
    raw, ema2 = read_checkpoint(out / "last.pt")["state_dict"], read_checkpoint(out / "epochs" / "e2.pt")["state_dict"]
    assert any(not torch.equal(raw[k], ema2[k]) for k in raw if raw[k].is_floating_point())

    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "benchmarks" / "flip_by_epoch.py"),
            str(out),
            "--data",
            str(eval_folder),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("e")]
    assert [ln.split(":")[0] for ln in lines] == ["e1", "e2"]
    n = len(val)
    for ln, h in zip(lines, summary["history"], strict=True):
        with_flip = int(ln.split("with flip ")[1].split()[0])
        assert with_flip / n == pytest.approx(h["val"]["accuracy"], abs=1e-12), ln

    # benchmarks/ensemble_tta.py on the same files: one view, with flip, and the two epochs averaged
    kept = [out / "epochs" / "e1.pt", out / "epochs" / "e2.pt"]
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble_tta.py"),
            *map(str, kept),
            "--data",
            str(eval_folder),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    x = torch.from_numpy(Preprocessor(config).normalize(val.images))
    total = 0
    per_model = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(out))]
    assert len(per_model) == 2, proc.stdout
    for f, h, ln in zip(kept, summary["history"], per_model, strict=True):
        _, model, _ = load_checkpoint(f)
        model.test_time_flip = False
        with torch.inference_mode():
            p = torch.softmax(model(x), 1)
        total = total + p
        one_view = float((p.argmax(1).numpy() == val.labels).mean())
        assert f"top-1 {one_view:.4f}, with flip TTA {h['val']['accuracy']:.4f}" in ln, ln
    ensemble = float((total.argmax(1).numpy() == val.labels).mean())
    assert f"ensemble of 2: top-1 {ensemble:.4f}" in proc.stdout, proc.stdout


def test_evaluate_json_accuracy_is_a_fraction_and_report_has_a_png(trained_run, eval_folder, tmp_path):
    out, _ = trained_run
    r = evaluate(out / "best.pt", eval_folder, json_path=tmp_path / "r.json", report_dir=tmp_path / "report")
    data = json.loads((tmp_path / "r.json").read_text())
    assert 0.0 <= data["accuracy"] <= 1.0 and isinstance(data["accuracy"], float)
    assert 0.0 <= data["uf1"] <= 1.0 and 0.0 <= data["uar"] <= 1.0
    cm = np.array(data["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == data["samples"] == 42
    assert data["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert json.loads((tmp_path / "report" / "report.json").read_text())["accuracy"] == r["accuracy"]
    png = (tmp_path / "report" / "confusion_matrix.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000


def test_evaluate_limit_per_class(trained_run, eval_folder):
    out, _ = trained_run
    r = evaluate(out / "best.pt", eval_folder, limit_per_class=2)
    assert r["samples"] == 14
    assert all(m["support"] == 2 for m in r["per_class"].values())


# ---------------------------------------------------------------------------------------------
# The console script
# ---------------------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict:
    """Wide lines (one-line errors stay one line), a decode cache of the test's own, one thread."""
    return {"COLUMNS": "200", "EMONAS_EDGE_CACHE": str(tmp_path / "cli-cache"), "OMP_NUM_THREADS": "1"}


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def tiny_file(tmp_path) -> Path:
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY), encoding="utf-8")
    return p


@pytest.mark.slow
def test_cli_train_end_to_end(fer, cli, tmp_path, tiny_file):
    data = fer / "train"
    out = tmp_path / "run"
    proc = cli(
        "train",
        "--model",
        tiny_file,
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        1,
        "--max-steps",
        2,
        "--limit-per-class",
        10,
        "--batch",
        16,
        "--threads",
        1,
        "--keep-epochs",
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("last.pt", "best.pt", "summary.json", "history.jsonl", "epochs/e1.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and len(summary["history"]) == 1
    last = read_checkpoint(out / "last.pt")
    assert last["train"]["epoch"] == 1 and last["config"]["trained"] is True
    assert last["config"]["meta"]["training"]["settings"]["max_steps"] == 2
    assert "train: 70 images" in proc.stdout
    assert any(tmp_path.joinpath("cli-cache").glob("*.npz")), "the decode cache goes to $EMONAS_EDGE_CACHE"


def test_a_provider_runs_onnx_runtime_there_or_is_refused(tmp_path, monkeypatch):
    """A provider names an ONNX Runtime one: a built-in never falls back to PyTorch on the CPU without a word."""
    import onnxruntime as ort

    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    from emonas_edge.runtime.ort_backend import OrtBackend

    backend = load_backend("emonas-macro-lite", provider="cpu", threads=1)
    assert isinstance(backend, OrtBackend) and backend.providers == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="cuda.*not available"):
            load_backend("emonas-macro-lite", provider="cuda", threads=1)


def test_cli_evaluate_with_a_class_the_model_lacks(cli, tmp_path, tiny_file):
    data = tmp_path / "data"
    for cls in ("happy", "contempt"):
        (data / cls).mkdir(parents=True)
        cv2.imwrite(str(data / cls / "a.png"), np.full((48, 48), 120, np.uint8))
    proc = cli("evaluate", "--model", tiny_file, "--data", data, cwd=tmp_path, env=cli_env(tmp_path))
    assert_one_line_error(proc, "contempt")


def test_cli_resume_with_another_model_is_refused(fer, cli, tmp_path, tiny_file):
    out = tmp_path / "run"
    args = ["--data", fer / "train", "--out", out, "--max-steps", 1, "--limit-per-class", 5, "--batch", 8]
    args += ["--threads", 1, "--epochs", 2]
    proc = cli("train", "--model", tiny_file, *args[:-1], 1, cwd=tmp_path, env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "network": {**TINY["network"], "init_channels": 12}}), encoding="utf-8")
    proc = cli("train", "--model", other, *args, "--resume", cwd=tmp_path, env=cli_env(tmp_path))
    assert_one_line_error(proc, "not the architecture")
    proc = cli("train", "--model", tiny_file, *args, cwd=tmp_path, env=cli_env(tmp_path))
    assert_one_line_error(proc, "already holds a training run")


def test_cli_train_with_missing_data_folder(cli, tmp_path, tiny_file):
    proc = cli(
        "train",
        "--model",
        tiny_file,
        "--data",
        tmp_path / "no-such-folder",
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert_one_line_error(proc, "no-such-folder")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_evaluate_untrained_genotype_warns(fer, cli, tmp_path):
    src = fer / "publictest"
    data = tmp_path / "data"
    for cls in ("happy", "sad"):
        (data / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:3]:
            (data / cls / f.name).write_bytes(f.read_bytes())
    # the genotype file, not the built-in name: the name resolves to the shipped trained weights
    genotype = Path(__file__).resolve().parents[1] / "models" / "emonas-macro.json"
    proc = cli(
        "evaluate",
        "--model",
        genotype,
        "--data",
        data,
        "--json",
        tmp_path / "r.json",
        "--report",
        tmp_path / "rep",
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "untrained" in proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["trained"] is False and r["samples"] == 6 and 0.0 <= r["accuracy"] <= 1.0
    assert (tmp_path / "rep" / "confusion_matrix.png").read_bytes()[:8] == PNG_SIGNATURE


# ---------------------------------------------------------------------------------------------
# Leave-one-subject-out
# ---------------------------------------------------------------------------------------------


def _write_micro(root: Path) -> Path:
    """Three subjects, three clips each (one per MEGC class), frames with a moving square."""
    rows = []
    for s in range(3):
        for c, label in enumerate(("happiness", "disgust", "surprise")):
            rng = np.random.default_rng(10 * s + c)
            base = rng.integers(0, 100, (32, 32), dtype=np.uint8)
            folder = root / f"s{s}" / f"clip{c}"
            folder.mkdir(parents=True)
            for k in range(4):
                f = base.copy()
                f[8:14, 2 + 4 * k + 2 * c : 8 + 4 * k + 2 * c] = 230
                cv2.imwrite(str(folder / f"frame{k + 1:03d}.png"), f)
            rows.append(f"s{s},clip{c},1,2,4,{label}")
    ann = root.parent / "ann.csv"
    ann.write_text("subject,clip,onset,apex,offset,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return ann


def test_loso_three_subjects(tmp_path):
    from emonas_edge.data.micro import load_micro_dataset

    config = tiny_config(task="micro")
    assert config.classes == MEGC_CLASSES
    root = tmp_path / "frames"
    ann = _write_micro(root)
    ds, subjects = load_micro_dataset(root, ann, config)
    assert len(ds) == 9
    settings = TrainSettings(epochs=1, max_steps=1, batch=4, threads=1, augment=False)
    summary = run_loso(config, ds, subjects, tmp_path / "loso", settings, log=quiet)
    saved = json.loads((tmp_path / "loso" / "loso.json").read_text())
    assert saved["protocol"] == "loso"
    assert [f["subject"] for f in saved["folds"]] == ["s0", "s1", "s2"]
    assert [f["test_clips"] for f in saved["folds"]] == [3, 3, 3]
    overall = saved["overall"]
    assert overall["samples"] == 9
    assert 0.0 <= overall["uf1"] <= 1.0 and 0.0 <= overall["uar"] <= 1.0
    assert np.array(overall["confusion_matrix"]).sum(1).tolist() == [3, 3, 3]  # every clip tested once
    assert summary["overall"]["uf1"] == overall["uf1"]
    for s in ("s0", "s1", "s2"):
        assert (tmp_path / "loso" / f"fold-{s}" / "last.pt").is_file()
        # each fold trained on the other two subjects only
        meta = read_checkpoint(tmp_path / "loso" / f"fold-{s}" / "last.pt")["config"]["meta"]["training"]
        assert meta["epochs_done"] == 1


@pytest.mark.slow
def test_torchrun_distributed_data_parallel(fer, tmp_path, tiny_file):
    """Two CPU processes (gloo) train one model: rank 0 alone writes checkpoints, and the
    global batch (2 x 16) sets the default learning rate."""
    genotype = tiny_file
    out = tmp_path / "ddp"
    env = {**os.environ, "EMONAS_EDGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "emonas_edge.cli.main",
            "train",
            "--model",
            str(genotype),
            "--data",
            str(fer / "train"),
            "--limit-per-class",
            "6",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--max-steps",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    payload = read_checkpoint(out / "last.pt")
    assert payload["train"]["epoch"] == 1
    assert payload["train"]["history"][0]["lr"] == pytest.approx(0.1 * (2 * 16) / 128)  # scaled by the global batch
    assert proc.stdout.count("epoch 1/1") == 1  # only rank 0 reports


@pytest.mark.slow
def test_cli_train_a_trained_name_fine_tunes_unless_scratch(fer, cli, tmp_path):
    """`--model emonas-macro` means the shipped weights; --scratch keeps only the architecture."""
    from emonas_edge.resolve import load_model

    _, shipped, _ = load_model("emonas-macro")
    ref = shipped.state_dict()
    distance = {}
    for flag in ((), ("--scratch",)):
        out = tmp_path / ("scratch" if flag else "tune")
        proc = cli(
            "train",
            "--model",
            "emonas-macro",
            *flag,
            "--data",
            fer / "train",
            "--out",
            out,
            "--epochs",
            1,
            "--max-steps",
            1,
            "--limit-per-class",
            4,
            "--batch",
            16,
            "--threads",
            1,
            cwd=tmp_path,
            env=cli_env(tmp_path),
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            "random weights (--scratch)" if flag else "fine-tuning the trained weights of emonas-macro"
        ) in proc.stdout
        saved = read_checkpoint(out / "last.pt")
        # no longer the built-in: its own name, so exporting it cannot overwrite the built-in's file
        assert saved["config"]["name"] == ("emonas-macro-scratch" if flag else "emonas-macro-ft")
        # fine-tuning starts from 3% of the from-scratch learning rate (sgd: 0.1 x batch 16 / 128)
        recorded = saved["config"]["meta"]["training"]["settings"]
        assert recorded["fine_tune"] is not bool(flag)
        assert recorded["lr"] == pytest.approx(0.0125 if flag else 0.0125 * 0.03)
        weights = saved["state_dict"]
        distance[bool(flag)] = max(
            float((weights[k].float() - ref[k].float()).abs().max()) for k in ref if k.endswith("weight")
        )
    assert distance[False] < 0.05 < distance[True], distance


def test_a_resumed_fine_tune_keeps_its_learning_rate():
    """A resumed run's config comes from last.pt (trained=False there): the settings it recorded say whether it
    started from trained weights, so its default learning rate does not jump to the from-scratch one."""
    from emonas_edge.train.resume import fine_tuning
    from emonas_edge.train.settings import FINE_TUNE_LR, TrainSettings

    recorded = tiny_config(meta={"training": {"settings": {"fine_tune": True}}})
    assert fine_tuning(recorded, resume=True) and not fine_tuning(tiny_config(), resume=True)
    assert fine_tuning(tiny_config(trained=True), resume=False) and not fine_tuning(tiny_config(), resume=False)
    base = TrainSettings().resolved().lr
    assert TrainSettings(fine_tune=True).resolved().lr == pytest.approx(base * FINE_TUNE_LR)
    assert TrainSettings(fine_tune=True, lr=0.05).resolved().lr == 0.05  # given explicitly: as given
