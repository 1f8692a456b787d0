"""Detection every k-th frame with optical flow in between, on real faces: boxes stay on the face, quality
matches detection on every frame, a lost face brings detection forward, many faces keep their own tracks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from emonas_edge.errors import UserError
from emonas_edge.faces.detect import create_detector
from emonas_edge.faces.flow import FaceFlow
from emonas_edge.pipeline import PipelineSettings, build_pipeline, run
from emonas_edge.pipeline.loop import AUTO_DETECT_EVERY, parse_detect_every
from emonas_edge.pipeline.sources import Frame, Source, VideoFileSource
from emonas_edge.profile.cadence import compare_cadence
from emonas_edge.profile.clips import grid_clip


@pytest.fixture(scope="module")
def media(shared):
    return shared / "media"


def test_detect_every_takes_a_number_or_auto():
    assert parse_detect_every("auto") == "auto" and parse_detect_every(" 3 ") == 3
    for bad, msg in (("0", "at least 1"), ("often", "whole number >= 1 or 'auto'")):
        with pytest.raises(UserError, match=msg):
            parse_detect_every(bad)
    assert PipelineSettings().detect_interval == AUTO_DETECT_EVERY  # the default for video and cameras
    assert PipelineSettings(track=False).detect_interval == 1  # unrelated photos: every one is detected


def test_flow_moves_the_box_with_the_face(media):
    """A real face shifted by a known amount: the box and eyes follow it to within a pixel."""
    image = cv2.imread(str(media / "single_face.jpg"))
    (det,) = create_detector("mediapipe-full").detect(image)
    flow = FaceFlow()
    flow.reset(image, [det])
    shifted = cv2.warpAffine(image, np.float32([[1, 0, 6], [0, 1, -4]]), image.shape[1::-1])
    (moved,) = flow.step(shifted)
    assert np.abs(moved.box - (det.box + [6, -4, 6, -4])).max() < 1.0
    assert np.abs(moved.eyes - (det.eyes + [6, -4])).max() < 1.0 and flow.confident
    blank = np.full_like(image, 127)
    assert flow.step(blank) == [] and not flow.confident  # nothing to follow: lost, detect next


@pytest.mark.slow
def test_flow_between_detections_keeps_the_box_on_the_face(media):
    """Against detection on every frame: with a detection only every 10th frame the boxes overlap (IoU >= 0.8)
    on >= 95% of frames, and the default cadence agrees on boxes, aligned crops and labels on >= 98%."""
    clip = media / "single_face.mp4"
    sparse = compare_cadence(clip, every=10)
    assert sparse["boxes"] >= 0.95 and sparse["median_iou"] >= 0.9, sparse
    auto = compare_cadence(clip, every="auto")
    assert auto["agree"] >= 0.98, auto


class Spliced(Source):
    """The single-face clip, then the clip without faces: the face vanishes between two frames."""

    kind = "video"

    def __init__(self, media):
        self.parts = [media / "single_face.mp4", media / "no_face.mp4"]

    def __iter__(self):
        i = 0
        for part in self.parts:
            with VideoFileSource(part) as src:
                for f in src:
                    yield Frame(i, i / 30.0, cv2.resize(f.image, (640, 360)))
                    i += 1


def test_a_lost_face_brings_the_next_detection_forward(media, tmp_path):
    n_face = VideoFileSource(media / "single_face.mp4").frame_count
    out = tmp_path / "r.jsonl"
    settings = PipelineSettings(detect_every=50)  # no scheduled detection near the cut
    run(Spliced(media), jsonl=out, macro="emonas-macro-lite", micro=None, settings=settings)
    faces = [len(json.loads(line)["faces"]) for line in out.read_text().splitlines()]
    assert all(faces[:n_face]) and not any(faces[n_face + 2 :]), faces[n_face - 3 : n_face + 6]


@pytest.mark.slow
def test_many_faces_keep_one_track_each(media, tmp_path):
    clip = grid_clip(media, tmp_path / "four.mp4", faces=4, frames=60)
    out = tmp_path / "r.jsonl"
    built = build_pipeline("emonas-macro-lite", None, detector="mediapipe-full", settings=PipelineSettings())
    try:
        summary = run(clip, built, jsonl=out)
    finally:
        built.pipeline.detector.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 60 and all(len(r["faces"]) == 4 for r in rows)
    assert summary.tracks == 4  # no face lost and found again under a new id
    first = {f["track"]: f["box"] for f in rows[0]["faces"]}
    for r in rows[1:]:  # each id stays in its own tile of the 3x3 grid
        for f in r["faces"]:
            tile = lambda b: (int((b[0] + b[2]) / 2 // 426), int((b[1] + b[3]) / 2 // 240))  # noqa: E731
            assert tile(f["box"]) == tile(first[f["track"]])
