"""The shipped default macro model: the name resolves to trained weights that recognise expressions."""

import json
from pathlib import Path

import pytest
import torch

from emonas_edge.config import FER2013_CLASSES
from emonas_edge.errors import UserError
from emonas_edge.nn import count_params
from emonas_edge.resolve import load_model
from emonas_edge.train.evaluate import evaluate
from emonas_edge.zoo import builtin

ROOT = Path(__file__).resolve().parents[1]


def test_emonas_macro_resolves_to_trained_weights():
    entry = builtin("emonas-macro")
    assert entry.weights is not None, "models/emonas-macro.pt is missing"
    config, model, weights = load_model("emonas-macro")
    assert weights == entry.weights
    assert config.trained is True
    assert config.classes == FER2013_CLASSES and config.input_shape == (1, 48, 48)
    assert config.meta["training"]["train_data"].endswith("fer2013/train")
    # the micro model ships untrained, and says so
    micro, _, micro_weights = load_model("emonas-micro")
    assert micro.trained is False and micro_weights is None


@pytest.fixture
def publictest(shared) -> Path:
    return shared / "datasets" / "fer2013" / "publictest"


def test_emonas_macro_recognises_expressions_on_real_faces(tmp_path, monkeypatch, publictest):
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    r = evaluate("emonas-macro", publictest, limit_per_class=30)
    assert r["trained"] is True and r["samples"] == 7 * 30  # first 30 of each class (disgust has 56)
    # chance is 1/7; the model card reports the full PublicTest figure
    assert r["accuracy"] > 0.5, r["accuracy"]
    assert r["per_class"]["happy"]["recall"] > 0.7


@pytest.mark.slow
def test_emonas_macro_meets_the_issue_target_and_matches_its_report(tmp_path, monkeypatch, publictest):
    """The whole PublicTest (~20 s): the shipped weights give what the card and the committed report say."""
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report = json.loads((ROOT / "models" / "emonas-macro.publictest.json").read_text())
    r = evaluate("emonas-macro", publictest)
    assert r["samples"] == 3589
    assert r["accuracy"] >= 0.70, r["accuracy"]
    assert r["confusion_matrix"] == report["confusion_matrix"]


def test_the_fast_variant_is_the_smaller_trained_model_without_flip():
    macro, big, _ = load_model("emonas-macro")
    fast, small, weights = load_model("emonas-macro-fast")
    assert weights == builtin("emonas-macro-fast").weights and fast.trained is True
    assert macro.network["test_time_flip"] is True and fast.network["test_time_flip"] is False
    assert count_params(big) <= 1_000_000 and count_params(small) < 0.7 * count_params(big)
    assert fast.classes == macro.classes and fast.input_shape == macro.input_shape


@pytest.mark.slow
def test_the_lite_variant_is_emonas_macro_slimmed_and_scores_what_its_card_says(tmp_path, monkeypatch, request):
    macro, big, _ = load_model("emonas-macro")
    lite, small, weights = load_model("emonas-macro-lite")
    assert weights == builtin("emonas-macro-lite").weights and lite.trained is True
    assert lite.network["test_time_flip"] is False and lite.network["init_channels"] == 24
    assert lite.meta["slimmed_from"]["name"] == "emonas-macro" and "epoch 35" in lite.meta["selection"]
    assert count_params(small) < 0.4 * count_params(big)
    assert lite.classes == macro.classes and lite.input_shape == macro.input_shape
    publictest = request.getfixturevalue("publictest")  # skips here (the checks above still ran) without ../shared
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report = json.loads((ROOT / "models" / "emonas-macro-lite.publictest.json").read_text())
    r = evaluate("emonas-macro-lite", publictest)
    assert r["samples"] == 3589 and 0.67 <= r["accuracy"] < 0.70, r["accuracy"]  # the card: 67.23%
    assert r["confusion_matrix"] == report["confusion_matrix"]


def test_the_shipped_weights_run_without_flip_from_a_genotype_that_says_so(tmp_path):
    genotype = json.loads((ROOT / "models" / "emonas-macro.json").read_text())
    genotype["network"]["test_time_flip"] = False
    path = tmp_path / "noflip.json"
    path.write_text(json.dumps(genotype))
    config, plain, _ = load_model(path, weights=ROOT / "models" / "emonas-macro.pt")
    _, flipped, _ = load_model("emonas-macro")
    assert config.network["test_time_flip"] is False and config.trained is True
    x = torch.linspace(-1, 1, 2 * 48 * 48).reshape(2, 1, 48, 48) ** 3  # not mirror-symmetric
    with torch.inference_mode():
        both = (torch.softmax(plain(x), 1) + torch.softmax(plain(x.flip(-1)), 1)) / 2
        torch.testing.assert_close(torch.softmax(flipped(x), 1), both, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(torch.softmax(plain(x), 1), both, atol=1e-4)
    genotype["network"]["init_channels"] = 32  # other weights: still refused
    path.write_text(json.dumps(genotype))
    with pytest.raises(UserError, match="different network"):
        load_model(path, weights=ROOT / "models" / "emonas-macro.pt")


def test_the_mit_builtin_is_a_trained_transformer_beside_the_cell_networks():
    mit, net, weights = load_model("emonas-mit")
    assert weights == builtin("emonas-mit").weights and mit.trained is True and mit.family == "mit"
    assert mit.classes == FER2013_CLASSES and mit.input_shape == (1, 48, 48)
    assert mit.network["dims"] == [16, 32, 64, 128] and mit.network["fusion"] is True
    assert count_params(net) == json.loads((ROOT / "models" / "emonas-mit.json").read_text())["meta"]["params"]
    assert mit.meta["training"]["settings"]["optimizer"] == "adamw" and "PublicTest" in mit.meta["selection"]


@pytest.mark.slow
def test_the_mit_builtin_scores_what_its_card_and_report_say(tmp_path, monkeypatch, publictest):
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    report = json.loads((ROOT / "models" / "emonas-mit.publictest.json").read_text())
    r = evaluate("emonas-mit", publictest)
    assert r["samples"] == 3589 and r["confusion_matrix"] == report["confusion_matrix"]
    card = (ROOT / "models" / "emonas-mit.md").read_text()
    assert f"{100 * r['accuracy']:.2f}%" in card


def test_the_pipeline_runs_the_mit_builtin(cli, shared, tmp_path):
    out = tmp_path / "faces.jsonl"
    r = cli("run", "--source", shared / "media" / "two_people.jpg", "--macro", "emonas-mit", "--jsonl", out)
    assert r.returncode == 0, r.stderr
    faces = json.loads(out.read_text().splitlines()[0])["faces"]
    assert len(faces) == 2 and all(abs(sum(f["macro"].values()) - 1) < 1e-3 for f in faces)
    assert "untrained" not in r.stdout + r.stderr
