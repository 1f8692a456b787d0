"""The real-time pipeline on real media: MediaPipe / Haar detection, alignment, tracking, buffers, outputs, faults."""

from __future__ import annotations

import csv
import gc
import json
import math
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from emonas_edge.data.dynamic_image import dynamic_image
from emonas_edge.errors import UserError
from emonas_edge.faces.align import EYE_DIST, EYE_MID, Aligner, similarity
from emonas_edge.faces.detect import Detection, HaarDetector, MediaPipeDetector, create_detector, plausible_face
from emonas_edge.pipeline import PipelineSettings, build_pipeline, run
from emonas_edge.pipeline.buffers import FrameRing
from emonas_edge.pipeline.sources import LiveSource, SourceLost, VideoFileSource, open_source
from emonas_edge.pipeline.track import Tracker
from emonas_edge.resolve import load_genotype


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """One ONNX export cache for the whole session (the first run exports, the rest reuse)."""
    import os

    d = tmp_path_factory.mktemp("emonas-cache")
    old = os.environ.get("EMONAS_EDGE_CACHE")
    os.environ["EMONAS_EDGE_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("EMONAS_EDGE_CACHE", None)
    else:
        os.environ["EMONAS_EDGE_CACHE"] = old


@pytest.fixture
def media(shared) -> Path:
    return shared / "media"


@pytest.fixture(scope="module")
def built():
    """Default pipeline (MediaPipe, emonas-macro, emonas-micro); untrained heads allowed so it runs either way."""
    b = build_pipeline("emonas-macro", "emonas-micro", allow_untrained=True)
    yield b
    b.pipeline.detector.close()


def fresh(built_obj, **settings):
    """The same loaded models and detector with new per-run state (tracker, buffers)."""
    from emonas_edge.pipeline import LoadedPipeline
    from emonas_edge.pipeline.loop import Pipeline

    p = built_obj.pipeline
    return LoadedPipeline(Pipeline(p.detector, p.macro, p.micro, PipelineSettings(**settings)))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_schema(line: dict, macro_classes, micro_classes) -> None:
    assert set(line) <= {"file", "frame", "time", "faces", "faces_dropped"}
    assert isinstance(line["frame"], int) and line["frame"] >= 0
    assert isinstance(line["time"], float) and math.isfinite(line["time"]) and line["time"] >= 0
    assert isinstance(line["faces"], list)
    for f in line["faces"]:
        assert set(f) >= {"track", "box", "score", "landmarks", "macro", "macro_raw", "macro_new", "micro", "micro_new"}
        assert isinstance(f["track"], int) and f["track"] >= 1
        x1, y1, x2, y2 = f["box"]
        assert x2 > x1 and y2 > y1
        assert 0.0 <= f["score"] <= 1.0
        for key, classes in (("macro", macro_classes), ("macro_raw", macro_classes), ("micro", micro_classes)):
            if f[key] is not None:
                assert list(f[key]) == list(classes)
                assert abs(sum(f[key].values()) - 1.0) < 1e-3
                assert all(0.0 <= v <= 1.0 for v in f[key].values())


# --- detection ---------------------------------------------------------------------------------


def test_blazeface_model_is_bundled_and_loads():
    from emonas_edge.faces.detect import BLAZEFACE_MODEL

    assert BLAZEFACE_MODEL.is_file() and BLAZEFACE_MODEL.stat().st_size == 229_714
    with create_detector("auto") as det:
        assert isinstance(det, MediaPipeDetector)


def test_detectors_find_the_face_and_mediapipe_gives_eyes(media):
    img = cv2.imread(str(media / "single_face.jpg"))
    with MediaPipeDetector() as mp_det, HaarDetector() as haar:
        for det, has_eyes in ((mp_det, True), (haar, False)):
            faces = det.detect(img)
            assert len(faces) == 1, det.name
            (x1, y1, x2, y2) = faces[0].box
            assert 120 < x1 < x2 < 480 and 120 < y1 < y2 < 480
            assert (faces[0].eyes is not None) == has_eyes
        eyes = mp_det.detect(img)[0].eyes
        assert eyes[0][0] < eyes[1][0]  # subject's right eye is on the image's left


def test_full_range_model_is_bundled_and_finds_small_faces(media):
    """Group photo shrunk to half size (faces ~50 px in a 1000 px frame): full-range BlazeFace
    still finds them with eyes; short-range (the faster default) does not, which is why both ship."""
    from emonas_edge.faces.detect import BLAZEFACE_FULL_MODEL

    assert BLAZEFACE_FULL_MODEL.is_file() and BLAZEFACE_FULL_MODEL.stat().st_size == 676_746
    img = cv2.imread(str(media / "multi_face.jpg"))
    h, w = img.shape[:2]
    far = np.full_like(img, 127)
    far[: h // 2, : w // 2] = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    with create_detector("mediapipe-full") as full, create_detector("mediapipe") as short:
        assert (full.name, short.name) == ("mediapipe-full", "mediapipe")
        assert len(full.detect(img)) == 5
        small = full.detect(far)
        assert len(small) >= 4 and all(d.eyes is not None and d.box[2] <= w // 2 + 2 for d in small)
        assert len(short.detect(far)) < len(small)


def test_full_range_finds_no_face_in_the_no_face_clip(media):
    """Full-range fires on the clip's skin-coloured lettering far more than short-range (70 of 95
    frames here); the keypoint-layout check is what keeps those out."""
    cap = cv2.VideoCapture(str(media / "no_face.mp4"))
    frames = with_face = 0
    with create_detector("mediapipe-full") as det:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames += 1
            with_face += bool(det.detect(img))
        assert frames > 50 and with_face <= 0.02 * frames and det.rejected > 0


def test_multi_face_image_gives_at_least_four_faces(media):
    with create_detector() as det:
        assert len(det.detect(cv2.imread(str(media / "multi_face.jpg")))) >= 4


def test_landmark_check_rejects_a_non_face_layout():
    box = np.array([0, 0, 100, 100], np.float32)
    face = np.array([[30, 40], [70, 40], [50, 62], [50, 80]], np.float32)
    assert plausible_face(box, face)
    squashed = face.copy()
    squashed[1] = [40, 40]  # eyes 10 px apart in a 100 px box
    assert not plausible_face(box, squashed)
    rolled = face.copy()
    rolled[1] = [50, 75]  # eye line at 60 degrees
    assert not plausible_face(box, rolled)
    mouth_above_nose = face.copy()
    mouth_above_nose[3] = [50, 50]
    assert not plausible_face(box, mouth_above_nose)


def test_bad_detector_settings_are_user_errors():
    with pytest.raises(UserError, match="unknown face detector"):
        create_detector("yolo")
    with pytest.raises(UserError, match="min-confidence"):
        create_detector("haar", min_confidence=1.5)


# --- alignment ---------------------------------------------------------------------------------


def test_alignment_gives_each_models_exact_input_spec(media):
    img = cv2.imread(str(media / "obama.jpg"))
    with MediaPipeDetector() as det:
        faces = det.detect(img)
    macro, micro = load_genotype("emonas-macro"), load_genotype("emonas-micro")
    a = Aligner(macro).align(img, faces)
    assert a.shape == (1, 48, 48) and a.dtype == np.uint8
    b = Aligner(micro).align(img, faces)
    assert b.shape == (1, micro.input_size, micro.input_size, 3) and b.dtype == np.uint8
    # the eyes land on the template measured on FER2013
    m = similarity(faces[0], 48)
    eyes = np.c_[faces[0].eyes, np.ones(2)] @ m.T
    np.testing.assert_allclose(eyes.mean(axis=0), [EYE_MID[0] * 48, EYE_MID[1] * 48], atol=1e-3)
    assert abs(np.linalg.norm(eyes[1] - eyes[0]) - EYE_DIST * 48) < 1e-3
    assert abs(eyes[1][1] - eyes[0][1]) < 1e-3  # level


def test_alignment_levels_a_rolled_face():
    # synthetic keypoints rolled by 30 degrees: the aligned eye line must be horizontal
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    eyes = np.array([[100 - 20 * c, 100 - 20 * s], [100 + 20 * c, 100 + 20 * s]], np.float32)
    m = similarity(Detection(np.array([60, 60, 140, 140], np.float32), 0.9, eyes), 64)
    out = np.c_[eyes, np.ones(2)] @ m.T
    assert abs(out[0][1] - out[1][1]) < 1e-3 and out[1][0] > out[0][0]


# --- tracking and buffers ----------------------------------------------------------------------


def _det(x, y, s=50):
    return Detection(np.array([x, y, x + s, y + s], np.float32), 0.9)


def test_tracker_keeps_ids_and_evicts():
    t = Tracker(max_age=2)
    a, b = t.update([_det(0, 0), _det(200, 0)])
    assert (a.id, b.id) == (1, 2)
    a2, b2 = t.update([_det(205, 3), _det(4, 2)])  # order swapped, small motion
    assert (a2.id, b2.id) == (2, 1)
    fast = t.update([_det(30, 0)])[0]  # moved 26 px: boxes still overlap enough or centres are close
    assert fast.id == 1
    for _ in range(3):
        t.update([])
    assert t.tracks == [] and t.evicted == 2
    assert t.update([_det(0, 0)])[0].id == 3  # ids are never reused


def test_ring_buffer_dynamic_image_equals_the_training_function():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (23, 16, 16, 3), dtype=np.uint8)
    ring = FrameRing(window=10, stride=4, crop_shape=(16, 16, 3))
    emitted = []
    for i, c in enumerate(crops):
        if ring.push(c):
            emitted.append(i)
            np.testing.assert_array_equal(ring.frames(), crops[i - 9 : i + 1])
            np.testing.assert_array_equal(ring.dynamic_image(), dynamic_image(crops[i - 9 : i + 1]))
    assert emitted == [9, 13, 17, 21]


def test_bad_buffer_settings_are_user_errors():
    with pytest.raises(UserError, match="micro-window"):
        FrameRing(1, 1, (4, 4))
    with pytest.raises(UserError, match="detect-every"):
        PipelineSettings(detect_every=0).check()


# --- the pipeline on real media ----------------------------------------------------------------


def test_single_face_video_one_track_jsonl_schema(media, built, tmp_path):
    out = tmp_path / "run.jsonl"
    s = run(media / "single_face.mp4", fresh(built, micro_windows="stride"), jsonl=out, csv=tmp_path / "run.csv")
    lines = read_jsonl(out)
    n = VideoFileSource(media / "single_face.mp4").frame_count
    assert len(lines) == s.frames == n
    assert [ln["frame"] for ln in lines] == list(range(n))
    p = built.pipeline
    for ln in lines:
        check_schema(ln, p.macro.classes, p.micro.classes)
    with_faces = [ln for ln in lines if ln["faces"]]
    assert len(with_faces) >= 0.95 * n
    assert {f["track"] for ln in lines for f in ln["faces"]} == {1}
    # micro windows: first after 16 frames, then every 8; results of an untrained head are marked
    fresh_frames = [ln["frame"] for ln in lines if ln["faces"] and ln["faces"][0]["micro_new"]]
    assert fresh_frames[:2] == [15, 23]
    for ln in lines:
        for f in ln["faces"]:
            if f["micro"] is not None and not p.micro.trained:
                assert "micro" in f["untrained"]
    rows = list(csv.DictReader((tmp_path / "run.csv").open()))
    assert len(rows) == sum(len(ln["faces"]) for ln in lines)
    assert rows[0]["macro_label"] in p.macro.classes


def test_no_face_video_is_empty_frames(media, built, tmp_path):
    out = tmp_path / "nf.jsonl"
    s = run(media / "no_face.mp4", fresh(built), jsonl=out)
    lines = read_jsonl(out)
    assert len(lines) == s.frames > 50
    assert sum(1 for ln in lines if ln["faces"]) <= 0.02 * len(lines)


def test_max_faces_keeps_the_largest(media, built, tmp_path):
    out = tmp_path / "m.jsonl"
    run(media / "multi_face.jpg", fresh(built, max_faces=2), jsonl=out)
    (line,) = read_jsonl(out)
    assert len(line["faces"]) == 2 and line["faces_dropped"] >= 2
    with create_detector() as det:
        areas = sorted((d.area for d in det.detect(cv2.imread(str(media / "multi_face.jpg")))), reverse=True)
    kept = sorted(((f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in line["faces"]), reverse=True)
    np.testing.assert_allclose(kept, areas[:2], rtol=0.02)


def test_evicted_tracks_free_their_buffers(media, built):
    """Face, then no face for longer than max_age: the track and its frame buffer are gone."""
    b = fresh(built, max_age=3, micro_windows="stride")
    p = b.pipeline
    face = cv2.imread(str(media / "single_face.jpg"))
    blank = np.full_like(face, 90)
    from emonas_edge.pipeline.sources import Frame

    for i in range(20):
        p.process(Frame(i, i / 30, face))
    (track,) = p.tracker.tracks
    ring = weakref.ref(track.state["ring"])
    del track
    for i in range(20, 25):
        p.process(Frame(i, i / 30, blank))
    gc.collect()
    assert p.tracker.tracks == [] and p.tracker.evicted == 1
    assert ring() is None


def test_no_track_treats_frames_as_unrelated_photos(media, built):
    """The same face in the same place three times: one track normally, three with track=False."""
    from emonas_edge.pipeline.sources import Frame

    face = cv2.imread(str(media / "single_face.jpg"))
    ids = {}
    for track in (True, False):
        p = fresh(built, track=track, micro_window=2, micro_stride=1, micro_windows="stride").pipeline
        # contrast changes from photo to photo, so probabilities differ and smoothing would show
        results = [
            p.process(Frame(i, float(i), cv2.convertScaleAbs(face, alpha=1.0 - 0.25 * i, beta=20 * i)))
            for i in range(3)
        ]
        faces = [f for r in results for f in r.faces]
        ids[track] = [f.track for f in faces]
        # a two-frame window fills on a track's second frame; unrelated photos never make one
        assert any(f.micro is not None for f in faces) == track
        assert all(np.allclose(f.macro, f.macro_raw) for f in faces) == (not track), "smoothing only along a track"
    assert ids[True] == [1, 1, 1]
    assert ids[False] == [1, 2, 3]
    with pytest.raises(UserError, match="--no-track"):
        PipelineSettings(track=False, detect_every=2).check()


@pytest.mark.slow
def test_a_folder_of_photos_shares_no_tracks_and_names_its_files(cli, media, tmp_path):
    """Four photos of the same face (the worst case for a tracker): each its own track and unsmoothed, every
    row names its file, the unreadable one is counted; --track makes the folder a sequence."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"IMG_{i:04d}.jpg").symlink_to(media / "single_face.jpg")
    (folder / "IMG_0009.jpg").write_bytes(b"not a jpeg")
    ids = {}
    for flag in ("", "--track"):
        out, summary = tmp_path / f"o{flag}.jsonl", tmp_path / f"s{flag}.json"
        args = ["run", "--source", folder, "--micro", "none", "--jsonl", out, "--csv", tmp_path / f"o{flag}.csv"]
        r = cli(*args, "--summary-json", summary, *([flag] if flag else []))
        assert r.returncode == 0, r.stderr
        lines = read_jsonl(out)
        assert [ln["file"] for ln in lines] == [str(folder / f"IMG_{i:04d}.jpg") for i in range(4)]
        faces = [f for ln in lines for f in ln["faces"]]
        ids[flag] = [f["track"] for f in faces]
        if not flag:
            assert all(f["macro"] == f["macro_raw"] for f in faces), "no smoothing across unrelated photos"
        rows = list(csv.DictReader((tmp_path / f"o{flag}.csv").open()))
        assert {row["file"] for row in rows} == {ln["file"] for ln in lines}
        skipped = json.loads(summary.read_text())["skipped_files"]
        assert skipped == {"count": 1, "files": [str(folder / "IMG_0009.jpg")]}
        assert "skipped (unreadable)" in r.stdout
    assert len(set(ids[""])) == 4 and len(set(ids["--track"])) == 1


def test_a_truncated_video_says_decoding_stopped_early(media, tmp_path):
    img = cv2.imread(str(media / "single_face.jpg"))
    full = tmp_path / "full.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 25, (img.shape[1], img.shape[0]))
    for _ in range(40):
        w.write(img)
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the header still announces 40 frames
    for path, expect in ((full, None), (cut, "decoding stopped after")):
        src = open_source(path)
        n = sum(1 for _ in src)
        src.close()
        note = src.stopped_early()
        assert (note is None) if expect is None else (expect in note and f"{n} of the 40 frames" in note), note
    src = open_source(cut)
    next(iter(src))  # a caller that stops early (--max-frames) is not a damaged file
    assert src.stopped_early() is None
    src.close()


def test_untrained_heads_are_off_by_default():
    # emonas-micro ships untrained: on its own it leaves nothing to run, and says why
    with pytest.raises(UserError, match="micro head off: emonas-micro has no trained weights"):
        build_pipeline(None, "emonas-micro")


def test_haar_fallback_runs_the_pipeline(media, tmp_path):
    b = build_pipeline("emonas-macro", None, detector="haar", allow_untrained=True)
    try:
        out = tmp_path / "h.jsonl"
        run(media / "single_face.jpg", b, jsonl=out)
        (line,) = read_jsonl(out)
        assert len(line["faces"]) == 1 and line["faces"][0]["landmarks"] is False
    finally:
        b.pipeline.detector.close()


def test_lost_live_source_keeps_valid_outputs(media, built, tmp_path):
    """A live source whose reads start failing (camera unplugged) ends the run with SourceLost;
    the JSONL and video written so far are complete and valid."""
    cap = cv2.VideoCapture(str(media / "single_face.mp4"))
    src = LiveSource(cap, "test camera", lost_after=0.3)
    jl, vid = tmp_path / "live.jsonl", tmp_path / "live.avi"
    with pytest.raises(SourceLost, match="stopped delivering frames") as e:
        run(src, fresh(built), jsonl=jl, save_video=vid)
    assert e.value.exit_code == 2
    lines = read_jsonl(jl)
    assert len(lines) == e.value.summary.frames >= 1
    cap2 = cv2.VideoCapture(str(vid))
    assert int(cap2.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "no-images", "camera"])
def test_unreadable_sources_are_user_errors(kind, tmp_path):
    if kind == "missing":
        spec = tmp_path / "nope.mp4"
    elif kind == "garbage":
        spec = tmp_path / "bad.mp4"
        spec.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        spec = tmp_path / "empty.mp4"
        spec.write_bytes(b"")
    elif kind == "no-images":
        spec = tmp_path / "folder"
        spec.mkdir()
        (spec / "notes.txt").write_text("x")
    else:
        spec = "63"
    with pytest.raises(UserError):
        open_source(spec)


def test_a_folder_named_like_a_camera_index_is_a_folder(media, tmp_path, monkeypatch):
    folder = tmp_path / "2024"
    folder.mkdir()
    (folder / "face.jpg").symlink_to(media / "single_face.jpg")
    monkeypatch.chdir(tmp_path)
    src = open_source("2024")
    try:
        assert not isinstance(src, LiveSource) and len(list(src)) == 1
    finally:
        src.close()


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_run_single_face(cli, media, tmp_path, _onnx_cache):
    out = tmp_path / "out.jsonl"
    r = cli(
        "run",
        "--source",
        media / "single_face.mp4",
        "--jsonl",
        out,
        "--allow-untrained",
        "--save-video",
        tmp_path / "a.mp4",
        env={"EMONAS_EDGE_CACHE": str(_onnx_cache)},
    )
    assert r.returncode == 0, r.stderr
    lines = read_jsonl(out)
    assert len(lines) == 72 and sum(1 for ln in lines if ln["faces"]) >= 0.95 * 72
    assert "frames with faces" in r.stdout and "detector mediapipe |" in r.stdout
    assert (tmp_path / "a.mp4").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "out.jsonl"]


@pytest.mark.slow
def test_cli_run_photos_take_the_full_range_detector(cli, media, tmp_path, _onnx_cache):
    """auto = short-range for video and cameras (speed), full-range for photos (faces of any size)."""
    out = tmp_path / "g.jsonl"
    r = cli(
        "run",
        "--source",
        media / "multi_face.jpg",
        "--micro",
        "none",
        "--jsonl",
        out,
        env={"EMONAS_EDGE_CACHE": str(_onnx_cache)},
    )
    assert r.returncode == 0, r.stderr
    assert "detector mediapipe-full |" in r.stdout
    (line,) = read_jsonl(out)
    assert len(line["faces"]) == 5 and all(f["landmarks"] for f in line["faces"])
    r = cli(
        "run",
        "--source",
        media / "multi_face.jpg",
        "--micro",
        "none",
        "--detector",
        "mediapipe",
        env={"EMONAS_EDGE_CACHE": str(_onnx_cache)},
    )
    assert r.returncode == 0 and "detector mediapipe |" in r.stdout, r.stderr


@pytest.mark.parametrize("source", ["missing.mp4", "garbage.mp4", "7"])
def test_cli_bad_source_exits_2_one_line_nothing_written(cli, tmp_path, source):
    if source == "garbage.mp4":
        (tmp_path / source).write_bytes(b"\x00not a video" * 100)
    r = cli(
        "run",
        "--source",
        tmp_path / source if source != "7" else source,
        "--jsonl",
        tmp_path / "o.jsonl",
        "--save-video",
        tmp_path / "o.mp4",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.mp4").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_cli_show_without_display_is_a_clear_error(cli, media, tmp_path):
    r = cli("run", "--source", media / "single_face.jpg", "--show", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 2 and "no display" in r.stderr


def test_sample_video_has_a_trackable_face(cli, built, tmp_path):
    clip = tmp_path / "sample.mp4"
    r = cli("sample-video", clip, "--frames", "30")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s.jsonl"
    s = run(clip, fresh(built), jsonl=out)
    assert s.frames == 30 and s.frames_with_faces >= 28 and s.tracks == 1


def test_cli_demo_without_display_is_a_clear_error(cli):
    r = cli("demo", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 2 and "no display" in r.stderr and "Traceback" not in r.stderr


def test_cli_max_frames_and_detect_every(cli, media, tmp_path):
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    r = cli(
        "run",
        "--source",
        media / "single_face.mp4",
        "--max-frames",
        "9",
        "--detect-every",
        "3",
        "--macro-every",
        "1",
        "--jsonl",
        out,
        "--summary-json",
        summary,
        "--allow-untrained",
    )
    assert r.returncode == 0, r.stderr
    lines = read_jsonl(out)
    assert [ln["frame"] for ln in lines] == list(range(9))
    assert all(len(ln["faces"]) == 1 and ln["faces"][0]["track"] == 1 for ln in lines)
    assert all(ln["faces"][0]["macro_new"] for ln in lines)  # --macro-every 1: the model saw every face
    assert json.loads(summary.read_text())["faces_classified"] == 9
    r = cli("run", "--source", media / "single_face.mp4", "--macro-every", "0", "--jsonl", tmp_path / "x.jsonl")
    assert r.returncode == 2 and "--macro-every must be at least 1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
