"""`--save-video` writes what a browser plays (H.264 MP4, VP9 WebM) where PyAV is installed, says so where it
is not, and headless Chromium really plays the files (the pipeline's real output on a real clip)."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import cv2
import numpy as np
import pytest
from browser import Browser, chromium

from emonas_edge.errors import UserError
from emonas_edge.pipeline.video import VideoEncoder, has_pyav

needs_pyav = pytest.mark.skipif(not has_pyav(), reason="PyAV is not installed (pip install 'emonas-edge[video]')")


def _frames(path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    n, size = 0, None
    while True:
        ok, image = cap.read()
        if not ok:
            break
        n, size = n + 1, image.shape[:2]
    cap.release()
    return n, size


@pytest.fixture(scope="module")
def saved(cli, shared, tmp_path_factory):
    """The pipeline's annotated video of the real single-face clip, as MP4 and WebM."""
    out = tmp_path_factory.mktemp("video")
    files = {}
    for ext in ("mp4", "webm"):
        summary = out / f"{ext}.json"
        path = out / f"annotated.{ext}"
        clip = shared / "media" / "single_face.mp4"
        r = cli("run", "--source", clip, "--save-video", path, "--summary-json", summary)
        assert r.returncode == 0, r.stderr
        files[ext] = (path, json.loads(summary.read_text()))
    return files


@needs_pyav
def test_saved_video_is_h264_or_vp9_with_every_frame(saved):
    for ext, codec in (("mp4", "h264"), ("webm", "vp9")):
        path, summary = saved[ext]
        assert summary["video_codec"] == codec and not summary["warnings"]
        import av

        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.name == codec
        assert _frames(path) == (summary["frames"], (360, 640))


def test_without_pyav_the_codec_is_named_and_the_file_still_written(tmp_path, monkeypatch):
    import emonas_edge.pipeline.video as video

    monkeypatch.setattr(video, "has_pyav", lambda: False)
    enc = VideoEncoder(tmp_path / "x.mp4", 30.0)
    for i in range(5):
        enc.write(np.full((64, 96, 3), 40 * i, np.uint8))
    enc.close()
    assert enc.codec == "mp4v" and not enc.browser_playable and "emonas-edge[video]" in enc.note
    assert _frames(tmp_path / "x.mp4") == (5, (64, 96))
    with pytest.raises(UserError, match="unsupported video extension"):
        VideoEncoder(tmp_path / "x.gif", 30.0)


@needs_pyav
def test_odd_sized_frames_are_trimmed_to_even_for_420(tmp_path):
    enc = VideoEncoder(tmp_path / "odd.mp4", 25.0)
    for _ in range(3):
        enc.write(np.zeros((101, 151, 3), np.uint8))
    enc.close()
    assert _frames(tmp_path / "odd.mp4") == (3, (100, 150))


@needs_pyav
@pytest.mark.slow
def test_a_real_browser_plays_the_saved_videos(saved, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    folder = saved["mp4"][0].parent
    (folder / "play.html").write_text(
        "<!doctype html><body>"
        + "".join(f'<video id="{e}" src="annotated.{e}" muted autoplay playsinline></video>' for e in ("mp4", "webm"))
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(exe, tmp_path / "profile")
    try:
        browser.open(f"http://127.0.0.1:{server.server_address[1]}/play.html")
        for ext in ("mp4", "webm"):
            v = f"document.getElementById('{ext}')"
            played = browser.wait_for(f"{v}.error === null && {v}.currentTime > 0.3 && {v}.videoWidth", timeout=30)
            assert played == 640, browser.js(f"{v}.error && {v}.error.message")
    finally:
        browser.close()
        server.shutdown()
