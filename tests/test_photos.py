"""`run --save`: annotated photos from one photo or a folder, written like every output (all or none, no input
or earlier result overwritten), with each face's bars kept off its neighbours."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from emonas_edge.pipeline.render import BAR_ROW, BAR_W, bar_place


def test_one_photo_and_a_folder_of_photos(cli, shared, tmp_path):
    media = shared / "media"
    out = tmp_path / "two.jpg"
    r = cli("run", "--source", media / "two_people.jpg", "--save", out)
    assert r.returncode == 0, r.stderr
    original, annotated = cv2.imread(str(media / "two_people.jpg")), cv2.imread(str(out))
    assert annotated.shape == original.shape and np.abs(annotated.astype(int) - original).mean() > 0.5
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("obama.jpg", "justin.jpg", "multi_face.jpg"):
        shutil.copy(media / name, photos / name)
    r = cli("run", "--source", photos, "--save", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["justin.jpg", "multi_face.jpg", "obama.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"


def test_save_refuses_what_would_overwrite_or_cannot_be(cli, shared, tmp_path):
    media = shared / "media"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("an earlier result")
    cases = [
        (("--source", media / "single_face.jpg", "--save", media / "single_face.jpg"), "would be overwritten"),
        (("--source", media / "single_face.mp4", "--save", tmp_path / "x.jpg"), "use --save-video"),
    ]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media / "obama.jpg", folder / "obama.jpg")
    cases.append((("--source", folder, "--save", taken), "not an empty folder"))
    for args, fragment in cases:
        r = cli("run", *args)
        assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (taken / "keep.txt").read_text() == "an earlier result" and len(list(taken.iterdir())) == 1


def test_bars_stay_off_the_neighbouring_faces():
    size = (1000, 667)
    faces = [np.array(b, float) for b in ([313, 252, 416, 355], [430, 222, 520, 310], [529, 322, 643, 436])]
    for i, box in enumerate(faces):
        x, y = bar_place(box, [f for j, f in enumerate(faces) if j != i], 7, size)
        block = (x, y, x + BAR_W, y + 7 * BAR_ROW)
        assert 0 <= x <= size[0] - BAR_W and 0 <= y <= size[1] - 7 * BAR_ROW
        for j, other in enumerate(faces):
            if j != i:
                assert min(block[2], other[2]) <= max(block[0], other[0]) or min(block[3], other[3]) <= max(
                    block[1], other[1]
                ), (i, j, block, other)


@pytest.mark.parametrize("edge", ["right", "left"])
def test_bars_move_to_the_free_side(edge):
    box = np.array([400, 100, 500, 200], float)
    neighbour = np.array([510, 100, 610, 200], float) if edge == "right" else np.array([290, 100, 390, 200], float)
    x, _ = bar_place(box, [neighbour], 7, (1000, 600))
    assert (x + BAR_W <= 400) if edge == "right" else (x >= 500)


def test_the_shipped_untrained_micro_head_is_not_announced_on_every_run(cli, shared):
    """The default micro head ships untrained and stays off quietly; asked for by name it says why it is off.
    ``--provider`` takes ONNX Runtime's providers as evaluate and profile do."""
    photo = shared / "media" / "single_face.jpg"
    quiet = cli("run", "--source", photo)
    assert quiet.returncode == 0 and "micro head off" not in quiet.stderr
    asked = cli("run", "--source", photo, "--micro", "emonas-micro")
    assert asked.returncode == 0 and "micro head off: emonas-micro has no trained weights" in asked.stderr
    r = cli("run", "--source", photo, "--provider", "cpu")
    assert r.returncode == 0 and "CPUExecutionProvider" in r.stdout
    r = cli("run", "--source", photo, "--provider", "tensorrt")
    assert r.returncode == 2 and "not available here" in r.stderr and "Traceback" not in r.stderr
