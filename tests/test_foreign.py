"""ONNX files made elsewhere: without emonas-edge metadata they run once their classes (and pixel normalisation)
are named, and score exactly what the same graph scores with its metadata; what cannot work is one line."""

from __future__ import annotations

import json

import onnx
import pytest

from emonas_edge.config import FER2013_CLASSES
from emonas_edge.zoo import builtin

FER = ",".join(FER2013_CLASSES)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """emonas-macro-lite's shipped graph with every metadata entry removed: a file as another tool writes it."""
    proto = onnx.load(str(builtin("emonas-macro-lite").onnx))
    del proto.metadata_props[:]
    path = tmp_path_factory.mktemp("foreign") / "someones-fer.onnx"
    onnx.save(proto, str(path))
    return path


def test_evaluate_a_foreign_file_scores_what_the_same_graph_scores_with_metadata(cli, shared, foreign, tmp_path):
    data = shared / "datasets" / "fer2013" / "publictest"
    common = ("--data", data, "--limit-per-class", 20, "--threads", 1)
    ours = cli("evaluate", "--model", builtin("emonas-macro-lite").onnx, *common, "--json", tmp_path / "a.json")
    assert ours.returncode == 0, ours.stderr
    args = ("--classes", FER, "--input-mean", "0.5", "--input-std", "0.5")
    theirs = cli("evaluate", "--model", foreign, *common, *args, "--json", tmp_path / "b.json")
    assert theirs.returncode == 0, theirs.stderr
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["accuracy"] > 0.5
    wrong = cli("evaluate", "--model", foreign, *common, "--classes", FER, "--json", tmp_path / "c.json")
    assert wrong.returncode == 0  # the same graph fed x/255 instead of its own normalisation: other scores
    assert json.loads((tmp_path / "c.json").read_text())["confusion_matrix"] != a["confusion_matrix"]


def test_run_takes_a_foreign_macro_file_and_labels_faces_as_with_metadata(cli, shared, foreign, tmp_path):
    photo = shared / "media" / "two_people.jpg"
    base = ("run", "--source", photo, "--no-track", "--jsonl")
    ours = cli(*base, tmp_path / "a.jsonl", "--macro", builtin("emonas-macro-lite").onnx)
    theirs = cli(*base, tmp_path / "b.jsonl", "--macro", foreign, "--classes", FER, "--input-mean", "0.5",
                 "--input-std", "0.5")  # fmt: skip
    assert ours.returncode == 0 and theirs.returncode == 0, theirs.stderr
    faces = [json.loads((tmp_path / n).read_text().splitlines()[0])["faces"] for n in ("a.jsonl", "b.jsonl")]
    assert len(faces[0]) == len(faces[1]) == 2
    for a, b in zip(*faces, strict=True):
        assert a["box"] == b["box"] and all(abs(a["macro"][c] - b["macro"][c]) < 1e-4 for c in FER2013_CLASSES)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((), "name its classes with --classes"),
        (("--classes", "a,b,c"), "the graph scores 7 classes, --classes names 3"),
        (("--classes", "a,a"), "two or more distinct names"),
        (("--classes", FER, "--input-std", "0"), "--input-std must be positive"),
        (("--classes", FER, "--input-mean", "x"), "--input-mean takes numbers"),
        (("--classes", FER, "--input-mean", "0.1,0.2"), "2 values for a 1-channel input"),
        (("--input-mean", "0.5"), "give its --classes too"),
    ],
)
def test_what_cannot_describe_the_file_is_one_line(cli, shared, foreign, args, fragment):
    r = cli("evaluate", "--model", foreign, "--data", shared / "datasets/fer2013/publictest", *args,
            env={"COLUMNS": "250"})  # fmt: skip
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model, fragment", [("onnx", "drop --classes"), ("emonas-macro-lite", "is not an .onnx file")])
def test_what_names_its_own_classes_refuses_classes(cli, shared, model, fragment):
    model = builtin("emonas-macro-lite").onnx if model == "onnx" else model
    r = cli("evaluate", "--model", model, "--data", shared / "datasets/fer2013/publictest", "--classes", FER,
            env={"COLUMNS": "250"})  # fmt: skip
    assert r.returncode == 2 and fragment in r.stderr, r.stderr
