"""`crop-faces`: real photos through the runtime's detector and aligner into a dataset tree.

Uses the photos in ``../shared/media`` (skipped when that folder is absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emonas_edge.data.datasets import load_dataset
from emonas_edge.errors import UserError
from emonas_edge.faces.align import Aligner
from emonas_edge.faces.detect import create_detector
from emonas_edge.pipeline.crops import crop_faces
from emonas_edge.resolve import load_genotype


@pytest.fixture
def media(shared) -> Path:
    return shared / "media"


def photo_tree(root: Path, media: Path) -> Path:
    """happy/ two single-face photos; neutral/ a two-person photo, a noise image and a broken file."""
    (root / "happy").mkdir(parents=True)
    (root / "neutral").mkdir()
    for name in ("single_face.jpg", "obama.jpg"):
        (root / "happy" / name).write_bytes((media / name).read_bytes())
    (root / "neutral" / "two_people.jpg").write_bytes((media / "two_people.jpg").read_bytes())
    cv2.imwrite(
        str(root / "neutral" / "noise.png"), np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    )
    (root / "neutral" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_crops_mirror_the_tree_and_count_what_was_skipped(tmp_path, media):
    src = photo_tree(tmp_path / "src", media)
    config = load_genotype("emonas-macro")
    r = crop_faces(src, tmp_path / "crops", config)
    assert (r["images"], r["written"], r["no_face"], r["unreadable"], r["several_faces"]) == (5, 3, 1, 1, 1)
    assert r["files"] == {
        "no_face": ["neutral/noise.png"],
        "unreadable": ["neutral/broken.jpg"],
        "several_faces": ["neutral/two_people.jpg"],
    }
    assert r["per_folder"] == {"happy": 2, "neutral": 1}
    assert json.loads((tmp_path / "crops" / "crops.json").read_text()) == r
    assert r["settings"]["detector"] == "mediapipe-full"
    assert hidden(tmp_path) == []

    # the crop is the runtime's: the largest face aligned by the pipeline's own aligner
    img = cv2.imread(str(src / "happy" / "obama.jpg"))
    with create_detector("mediapipe-full") as det:  # what auto means for crop-faces
        face = max(det.detect(img), key=lambda d: d.area)
    expected = Aligner(config).align_one(img, face)
    got = cv2.imread(str(tmp_path / "crops" / "happy" / "obama.png"), cv2.IMREAD_UNCHANGED)
    assert got.shape == (48, 48) and np.array_equal(got, expected)

    # and the tree loads as a labelled dataset with the model's classes
    ds = load_dataset(tmp_path / "crops", config)
    assert len(ds) == 3 and sorted(ds.counts().items()) == sorted(
        {**{c: 0 for c in config.classes}, "happy": 2, "neutral": 1}.items()
    )


def test_same_stem_different_formats_keep_both(tmp_path, media):
    src = tmp_path / "src"
    src.mkdir()
    img = cv2.imread(str(media / "single_face.jpg"))
    cv2.imwrite(str(src / "face.png"), img)
    (src / "face.jpg").write_bytes((media / "single_face.jpg").read_bytes())
    r = crop_faces(src, tmp_path / "crops", load_genotype("emonas-macro"))
    assert r["written"] == 2 and sorted(p.name for p in (tmp_path / "crops").glob("*.png")) == [
        "face.png",
        "face.png.png",
    ]  # face.jpg came first


def test_rgb_crops_at_another_size(tmp_path, media, tiny_genotype, write_json):
    src = photo_tree(tmp_path / "src", media)
    rgb = load_genotype(
        write_json(
            {
                **tiny_genotype,
                "network": {**tiny_genotype["network"], "in_channels": 3},
                "preprocess": {"grayscale": False, "mean": [0.5] * 3, "std": [0.5] * 3},
            }
        )
    )
    crop_faces(src, tmp_path / "crops", rgb, size=96, margin=0.2)
    img = cv2.imread(str(tmp_path / "crops" / "happy" / "single_face.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (96, 96, 3) and img.std(axis=2).mean() > 1  # colour kept


def test_overwrite_replaces_only_when_asked(tmp_path, media):
    src = photo_tree(tmp_path / "src", media)
    out = tmp_path / "crops"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    config = load_genotype("emonas-macro")
    with pytest.raises(UserError, match="already exists; choose another --out or pass --overwrite"):
        crop_faces(src, out, config)
    assert (out / "old.txt").read_text() == "keep me"
    crop_faces(src, out, config, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "crops.json").is_file()
    assert hidden(tmp_path) == []


def test_interrupted_or_faceless_runs_leave_nothing(tmp_path, media):
    src = photo_tree(tmp_path / "src", media)
    config = load_genotype("emonas-macro")

    def stop(i, n):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crop_faces(src, tmp_path / "crops", config, progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    faceless = tmp_path / "faceless"
    faceless.mkdir()
    cv2.imwrite(str(faceless / "noise.png"), np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="no face found in any of 1 images"):
        crop_faces(faceless, tmp_path / "crops", config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faceless", "src"]


def test_cli_crop_faces_and_its_bad_input(media, cli, tmp_path):
    src = photo_tree(tmp_path / "src", media)
    r = cli("crop-faces", "--data", src, "--out", tmp_path / "crops", "--detector", "haar")
    assert r.returncode == 0, r.stderr
    assert "crops written" in r.stdout and (tmp_path / "crops" / "happy").is_dir()
    assert json.loads((tmp_path / "crops" / "crops.json").read_text())["settings"]["detector"] == "haar"
    r = cli("crop-faces", "--data", src, "--out", tmp_path / "crops")
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "image folder not found"),
        ("inside", "must be outside the source folder"),
        ("size", "--size must be from 16 to 1024"),
        ("detector", "unknown face detector 'yolo'"),
        ("empty", "holds no images"),
    ],
)
def test_bad_crop_settings_are_one_line_errors(tmp_path, media, case, message):
    src = photo_tree(tmp_path / "src", media)
    (tmp_path / "empty").mkdir()
    kw = {"size": 8} if case == "size" else {"detector": "yolo"} if case == "detector" else {}
    source = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty"}.get(case, src)
    out = src / "inside" if case == "inside" else tmp_path / "out"
    with pytest.raises(UserError, match=message):
        crop_faces(source, out, load_genotype("emonas-macro"), **kw)
    assert not out.exists() and hidden(tmp_path) == []
