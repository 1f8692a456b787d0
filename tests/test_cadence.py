"""The pipeline's cadences on real faces. Detection every k-th frame with optical flow in between: boxes stay on
the face, quality matches detection on every frame, a lost face brings detection forward, a flow that keeps
agreeing with the detections stretches the interval, many faces keep their own tracks. The macro model every
few frames per face (sooner when the face changes): the reported labels match classifying every frame."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from emonas_edge.errors import UserError
from emonas_edge.faces.detect import FaceDetector, create_detector
from emonas_edge.faces.flow import FaceFlow
from emonas_edge.pipeline import PipelineSettings, build_pipeline, run
from emonas_edge.pipeline.loop import (
    AUTO_DETECT_EVERY,
    AUTO_DETECT_MAX,
    AUTO_MACRO_EVERY,
    SURE_MACRO_EVERY,
    Pipeline,
    parse_detect_every,
    parse_macro_every,
)
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


def test_macro_every_takes_a_number_or_auto():
    assert parse_macro_every("AUTO") == "auto" and parse_macro_every("2") == 2
    for bad, msg in (("0", "--macro-every must be at least 1"), ("x", "--macro-every must be a whole number")):
        with pytest.raises(UserError, match=msg):
            parse_macro_every(bad)
    with pytest.raises(UserError, match="--macro-every must be at least 1"):
        PipelineSettings(macro_every=0).check()


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
    sparse = compare_cadence(clip, every=10, macro_every=1)
    assert sparse["boxes"] >= 0.95 and sparse["median_iou"] >= 0.9, sparse
    auto = compare_cadence(clip, every="auto")  # both cadences as run has them, against neither
    assert auto["agree"] >= 0.98, auto
    assert auto["macro_classified"] <= 0.5, auto  # ...and the macro cadence saved at least half the model's runs


class Counting(FaceDetector):
    """The real MediaPipe detector, counting its calls."""

    name = "mediapipe"

    def __init__(self):
        super().__init__()
        self.inner, self.calls = create_detector("mediapipe"), 0

    def detect(self, frame):
        self.calls += 1
        return self.inner.detect(frame)


@pytest.fixture(scope="module")
def lite():
    built = build_pipeline("emonas-macro-lite", None)
    yield built.pipeline.macro
    built.pipeline.detector.close()


def _detections(clip, macro, every) -> int:
    det = Counting()
    p = Pipeline(det, macro, None, PipelineSettings(detect_every=every))
    try:
        with VideoFileSource(clip) as src:
            for n, frame in enumerate(src):
                p.detect(frame, n)
    finally:
        det.inner.close()
    return det.calls


def test_a_flow_that_keeps_agreeing_stretches_the_detection_interval(media, lite):
    """On the real clip the flow follows the face between detections, so auto detects on fewer frames than a fixed
    every-5th: from the first scheduled detection that finds the face where the flow had it, every 10th."""
    clip = media / "single_face.mp4"
    n = VideoFileSource(clip).frame_count
    fixed, auto = _detections(clip, lite, AUTO_DETECT_EVERY), _detections(clip, lite, "auto")
    assert fixed == -(-n // AUTO_DETECT_EVERY)
    assert -(-n // AUTO_DETECT_MAX) <= auto < fixed, (auto, fixed)


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


def _faces(p: Pipeline, images) -> list[bool]:
    """Whether the macro model ran on the face of each frame."""
    out = []
    for n, image in enumerate(images):
        r = p.process(Frame(n, n / 30.0, image))
        (face,) = r.faces
        assert face.macro is not None and face.macro_raw is not None
        out.append(face.macro_fresh)
    return out


def test_the_macro_model_runs_on_schedule_and_when_the_face_changes(media, lite):
    """A still face is classified on its first frame, then every AUTO_MACRO_EVERY-th frame (every
    SURE_MACRO_EVERY-th once its label is clear); the frame after a visible change is classified at once, and in
    between each frame keeps the last classified probabilities. --macro-every k: every k-th frame, whatever
    changes."""
    image = cv2.imread(str(media / "single_face.jpg"))
    brighter = cv2.convertScaleAbs(image, alpha=1.0, beta=12)  # the whole face 12 gray levels up: a change
    settings = PipelineSettings(detect_every=1, spotting=False)
    p = Pipeline(create_detector("mediapipe"), lite, None, settings)
    try:
        still = _faces(p, [image] * 12)
        first = p.tracker.tracks[0].state
        k = SURE_MACRO_EVERY if np.ptp(np.sort(first["macro"])[-2:]) > 0.2 else AUTO_MACRO_EVERY
        assert still == [i % k == 0 for i in range(12)], (still, k)
        changed = _faces(p, [brighter, brighter])
        assert changed == [True, False]
        fixed = Pipeline(p.detector, lite, None, PipelineSettings(detect_every=1, spotting=False, macro_every=2))
        assert _faces(fixed, [image, brighter, image, image, brighter]) == [True, False, True, False, True]
    finally:
        p.detector.close()
