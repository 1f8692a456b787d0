"""`emonas_edge.analyze` / `Analyzer`: one call from Python, the same faces and labels as `run`."""

from __future__ import annotations

import doctest
import json

import cv2
import numpy as np
import pytest

import emonas_edge as ee
from emonas_edge.errors import UserError
from emonas_edge.pipeline import analyze as analyze_module


@pytest.fixture(scope="module")
def analyzer():
    with ee.Analyzer() as a:
        yield a


def test_analyze_finds_the_faces_run_finds_with_the_same_labels(analyzer, cli, shared, tmp_path):
    photo = shared / "media" / "multi_face.jpg"
    faces = analyzer(photo)
    r = cli("run", "--source", photo, "--jsonl", tmp_path / "r.jsonl")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(faces) == len(row["faces"]) == 5
    for mine, theirs in zip(faces, row["faces"], strict=True):
        assert mine["box"] == theirs["box"] and mine["file"] == str(photo)
        assert mine["label"] == max(theirs["macro"], key=theirs["macro"].get)
        assert mine["macro"] == pytest.approx(theirs["macro"], abs=1e-4)
        assert abs(sum(mine["macro"].values()) - 1) < 1e-3


def test_calls_share_no_state_and_every_image_form_gives_the_same_faces(analyzer, shared):
    a_path, b_path = shared / "media" / "obama.jpg", shared / "media" / "two_people.jpg"
    first = analyzer(a_path)
    other = analyzer(b_path)
    again = analyzer(a_path)
    assert first == again and len(first) == 1 and len(other) == 2  # no track, smoothing or id carried over
    bgr = cv2.imread(str(a_path))
    strip = [{k: v for k, v in f.items() if k != "file"} for f in first]
    assert analyzer(bgr) == strip
    assert analyzer(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), color="rgb") == strip
    pil = pytest.importorskip("PIL.Image")
    assert analyzer(pil.open(a_path)) == strip
    assert [len(x) for x in analyzer.batch([a_path, b_path])] == [1, 2]
    gray = analyzer(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert len(gray) == 1 and gray[0]["label"] in gray[0]["macro"]


def test_analyze_refuses_what_is_not_an_image(analyzer, tmp_path):
    (tmp_path / "x.jpg").write_text("not a picture")
    bad = [tmp_path / "missing.jpg", tmp_path / "x.jpg", np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3)), 42]
    for image in bad:
        with pytest.raises(UserError):
            analyzer(image)
    with pytest.raises(UserError, match="color"):
        ee.Analyzer(color="hsv")


def test_the_docstring_example_runs():
    result = doctest.testmod(analyze_module, raise_on_error=False)
    assert result.attempted >= 3 and result.failed == 0
