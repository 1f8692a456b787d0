"""The shipped default macro model: the name resolves to trained weights that recognise expressions."""

from pathlib import Path

import pytest

from emonas_edge.api import load_model
from emonas_edge.config import FER2013_CLASSES
from emonas_edge.train.evaluate import evaluate
from emonas_edge.zoo import builtin

SHARED = Path(__file__).resolve().parents[2] / "shared"
PUBLICTEST = SHARED / "datasets" / "fer2013" / "publictest"


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


def test_emonas_macro_recognises_expressions_on_real_faces(tmp_path, monkeypatch):
    if not PUBLICTEST.is_dir():
        pytest.skip(f"FER2013 PublicTest not found at {PUBLICTEST} (../shared absent)")
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(tmp_path))
    r = evaluate("emonas-macro", PUBLICTEST, limit_per_class=30)
    assert r["trained"] is True and r["samples"] == 7 * 30  # first 30 of each class (disgust has 56)
    # chance is 1/7; the model card reports the full PublicTest figure
    assert r["accuracy"] > 0.5, r["accuracy"]
    assert r["per_class"]["happy"]["recall"] > 0.7
