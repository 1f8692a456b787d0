"""`run --serve`: the live view in a browser, on the real pipeline over a real face clip.

The pipeline runs as the console script (``--loop`` keeps the clip playing); viewers are plain HTTP
clients and, where Debian's Chromium is installed (``.ci/run`` installs it), a real headless browser.
Speed with many viewers is a benchmark (``benchmarks/serve_load.py``), not a timed test.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import Browser, chromium
from conftest import REPO, _cli_env

from emonas_edge.errors import UserError
from emonas_edge.pipeline.serve import LiveHub, parse_serve

pytestmark = pytest.mark.slow


def test_serve_addresses_default_to_loopback_and_need_a_token_beyond_it():
    a = parse_serve("8080")
    assert (a.host, a.port, a.token, a.loopback) == ("127.0.0.1", 8080, None, True)
    b = parse_serve("0.0.0.0:9000")
    assert b.host == "0.0.0.0" and not b.loopback and b.token and len(b.token) >= 16
    assert parse_serve("[::1]:80").loopback and parse_serve("localhost:80").token is None
    assert parse_serve("0.0.0.0:1", token="s3cret-token").token == "s3cret-token"
    for bad in ("http", "host:port", "70000", ":80"):
        with pytest.raises(UserError):
            parse_serve(bad)
    with pytest.raises(UserError, match="8 printable"):
        parse_serve("8080", token="short")


class LiveRun:
    """``emonas-edge run --serve`` in the background; ``url`` once it listens; ``stop()`` sends Ctrl-C."""

    def __init__(self, cli_path, clip: Path, tmp: Path, *extra):
        self.jsonl = tmp / "live.jsonl"
        cmd = [str(cli_path), "run", "--source", str(clip), "--loop", "--jsonl", str(self.jsonl), *map(str, extra)]
        env = _cli_env({"PYTHONUNBUFFERED": "1", "COLUMNS": "400"})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.url = ""
        deadline = time.monotonic() + 120
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"live view: (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
            assert time.monotonic() < deadline, "no live view URL printed"
        assert self.url, self.proc.stderr.read() if self.proc.stderr else ""
        self.base = self.url.split("?")[0].rstrip("/")

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture
def live(cli_path, shared, tmp_path):
    runs: list[LiveRun] = []

    def start(*extra) -> LiveRun:
        runs.append(LiveRun(cli_path, shared / "media" / "single_face.mp4", tmp_path, *extra))
        return runs[-1]

    yield start
    for r in runs:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_the_pipeline_keeps_a_picture_only_while_watched_and_at_most_max_fps():
    """The pipeline's thread pays per frame only for what viewers can take: no copy when nobody watches,
    one per period when someone does, and the kept copy is the pipeline's picture of that moment."""
    hub = LiveHub(max_fps=5)
    frame = np.zeros((4, 4, 3), np.uint8)
    for i in range(10):
        frame[:] = i
        hub.publish(frame, {"frame": i})
    assert hub.seq == 10 and hub.frame_seq == 0 and hub.jpeg(0) is None  # unwatched: nothing kept
    hub.watching(+1)
    for i in range(10, 40):
        frame[:] = i
        hub.publish(frame, {"frame": i})
    assert hub.frame_seq == 11  # the first watched frame, then nothing until a period has passed
    seq, jpeg = hub.jpeg(0)
    pixels = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert seq == 11 and abs(int(pixels.mean()) - 10) <= 1  # frame 10's picture, not the reused buffer's now
    assert hub.jpeg(seq) is None  # nothing newer than what this viewer has
    time.sleep(0.21)
    hub.publish(frame, {"frame": 40})
    assert hub.frame_seq == 41 and hub.wait_frame(11, timeout=0) == 41 and hub.jpeg(11)[0] == 41
    assert hub.event()[0] == 41 and b'"frame":40' in hub.event()[1]


def _get(url: str, timeout: float = 15) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _events(url: str, n: int, timeout: float = 30) -> list[dict]:
    rows: list[dict] = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                rows.append(json.loads(line[6:]))
                if len(rows) >= n:
                    break
    return rows


def test_the_live_view_serves_frames_results_and_nothing_else(live):
    run = live("--serve", "0", "--max-frames", "100000")
    status, _, page = _get(run.url)
    assert status == 200 and b"emonas-edge live" in page and b'id="video"' in page
    status, headers, body = _get(run.base + "/frame.jpg?after=0")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)
    seq = int(headers["X-Seq"])
    status, headers, _ = _get(f"{run.base}/frame.jpg?after={seq}")
    assert status == 200 and int(headers["X-Seq"]) > seq  # the long poll waits for a newer frame
    with urllib.request.urlopen(run.base + "/stream.mjpg", timeout=15) as r:  # motion JPEG, part by part
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=emonas-frame"
        seqs = []
        for _ in range(3):
            head = dict(line.decode().strip().split(": ", 1) for line in iter(r.readline, b"\r\n") if b": " in line)
            part = r.read(int(head["Content-Length"]) + 2)
            assert head["Content-Type"] == "image/jpeg" and part[:2] == b"\xff\xd8" and part[-2:] == b"\r\n"
            seqs.append(int(head["X-Seq"]))
    assert seqs == sorted(set(seqs))  # each part a newer picture
    camera = cv2.VideoCapture(run.base + "/stream.mjpg")  # what a robot's code would open
    ok, picture = camera.read()
    camera.release()
    assert ok and picture.shape == (360, 640, 3)
    rows = _events(run.base + "/events", 5)
    assert [r["seq"] for r in rows] == sorted({r["seq"] for r in rows})  # newest first, never repeated
    assert all(len(r["faces"]) == 1 and max(r["faces"][0]["macro"], key=r["faces"][0]["macro"].get) for r in rows)
    for path in ("/etc/passwd", "/../../etc/passwd", "/models", "/frame.jpg/../etc"):
        assert _get(run.base + path)[0] == 404, path
    req = urllib.request.Request(run.base + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 501
    deadline = time.monotonic() + 60
    while _events(run.base + "/events", 1)[0]["frame"] < 80:  # the clip has 72 frames: wait for the replay
        assert time.monotonic() < deadline, "--loop did not replay the clip"
    code, out, err = run.stop()
    assert code == 130 and "interrupted" in err
    lines = run.jsonl.read_text().splitlines()
    assert len(lines) > 80 and json.loads(lines[-1])["frame"] == len(lines) - 1  # one stream across replays


def test_beyond_loopback_every_route_needs_the_token(live):
    run = live("--serve", "0.0.0.0:0", "--serve-token", "s3cret-token", "--micro", "none")
    assert "token=s3cret-token" in run.url
    port = run.base.rsplit(":", 1)[1]
    plain = f"http://127.0.0.1:{port}"
    for path in ("/", "/frame.jpg", "/events"):
        assert _get(plain + path)[0] == 403
        assert _get(plain + path + "?token=wrong-token")[0] == 403
    assert _get(plain + "/?token=s3cret-token")[0] == 200
    assert _get(plain + "/frame.jpg?after=0&token=s3cret-token")[0] == 200
    run.stop()


def test_many_viewers_and_a_stalled_one_never_stop_the_pipeline(live):
    """20 viewers pulling frames and events at once, plus one that connects and never reads: all the others
    keep getting new frames, the run's own outputs stay whole, and the stalled socket does not hold the end."""
    run = live("--serve", "0", "--micro", "none")
    stalled = socket.create_connection(("127.0.0.1", int(run.base.rsplit(":", 1)[1])))
    stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # then never reads: its buffers fill
    counts = [0] * 20
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 6

    def viewer(i: int) -> None:
        seq = 0
        try:
            while time.monotonic() < stop_at:
                status, headers, _ = _get(f"{run.base}/frame.jpg?after={seq}")
                if status == 200:
                    seq = int(headers["X-Seq"])
                    counts[i] += 1
                if i % 4 == 0:
                    _events(run.base + "/events", 2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert min(counts) >= 5, counts  # every viewer saw a moving picture
    t0 = time.monotonic()
    code, out, _ = run.stop()
    stalled.close()
    assert code == 130 and time.monotonic() - t0 < 30
    lines = run.jsonl.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))


def test_loop_and_serve_refuse_what_they_cannot_do(cli, shared, tmp_path):
    r = cli("run", "--source", shared / "media" / "single_face.jpg", "--loop")
    assert r.returncode == 2 and "--loop replays video files" in r.stderr
    r = cli("run", "--source", shared / "media" / "single_face.mp4", "--serve-token", "s3cret-token")
    assert r.returncode == 2 and "give --serve" in r.stderr
    r = cli("run", "--source", shared / "media" / "single_face.mp4", "--serve", "nope:x")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = cli("run", "--source", shared / "media" / "single_face.mp4", "--serve", busy.getsockname()[1])
    assert r.returncode == 2 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_real_browser_shows_the_video_and_the_face_label(live, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    run = live("--serve", "0", "--micro", "none")
    browser = Browser(exe, tmp_path / "profile")
    try:
        browser.open(run.url)
        # the canvas has drawn a moving picture: frames fetched, decoded and painted by the page
        frames = browser.wait_for(
            "Number(document.getElementById('video').dataset.frames) >= 10 && "
            "document.getElementById('video').dataset.frames"
        )
        assert frames, browser.js("document.body.innerText")
        label = browser.wait_for(
            "document.querySelector('#faces .face') && document.querySelector('#faces .face').dataset.label"
        )
        assert label in {"happy", "neutral", "sad", "surprise", "angry", "fear", "disgust"}, label
        bars = browser.js("document.querySelectorAll('#faces .face .bar').length")
        assert bars == 7 and "faces 1" in browser.js("document.getElementById('status').textContent")
        shots = REPO / "export" / "screenshots"  # for humans to look at (export/ is not tracked)
        shots.mkdir(parents=True, exist_ok=True)
        assert browser.screenshot(shots / "live-view.png").stat().st_size > 10_000
    finally:
        browser.close()
    code, _, _ = run.stop()
    assert code == 130
