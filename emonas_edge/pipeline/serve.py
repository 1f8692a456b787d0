"""A live view of a running pipeline in any browser (``run --serve``), for devices with no display.

Python's own ``http.server`` (threaded) rather than a web framework: four read-only routes and a
page need no more, and the runtime install gains no dependency. The pipeline only hands each frame to a
:class:`LiveHub`, which keeps the newest one: each viewer's thread sends the newest picture when its last
one has gone out and the newest result when it can, so a slow or stalled browser skips frames instead of
queueing them, and nothing waits on it but its own thread. JPEG encoding happens on a viewer's thread,
once per kept picture whoever asks first (OpenCV releases the GIL there), and only while someone watches.

Routes: ``/`` the page, ``/stream.mjpg`` the annotated video as motion JPEG (what the page shows; any
``<img>``, OpenCV or VLC opens it), ``/frame.jpg?after=N`` one picture newer than N (long poll), ``/events``
the per-frame results as server-sent events (the rows the JSONL holds). Nothing of the file system
is reachable. Off loopback a token guards every route (``?token=``, which the page carries on).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..errors import UserError

BOUNDARY = "emonas-frame"
WAIT_S = 5.0  # a long poll or an idle event stream answers at least this often (dead clients surface)
SEND_TIMEOUT_S = 10.0  # a viewer that takes no data for this long is dropped


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int
    token: str | None

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_serve(spec: str, token: str | None = None) -> ServeAddress:
    """``PORT`` (loopback) or ``HOST:PORT``. Off loopback a token is required: the given one or a random one."""
    host, sep, port_text = str(spec).rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UserError(f"--serve {spec!r}: expected PORT or HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise UserError(f"--serve {spec!r}: port must be 0-65535")
    if not host:
        raise UserError(f"--serve {spec!r}: empty host (give 0.0.0.0:{port} to serve on every interface)")
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise UserError("--serve-token must be at least 8 printable characters without spaces")
    if token is None and not _is_loopback(host):
        token = secrets.token_urlsafe(16)
    return ServeAddress(host, port, token)


def _reachable_name() -> str:
    """What another machine would type for this one, when serving on every interface."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


class LiveHub:
    """The newest frame and result, and who is watching. The pipeline's side never blocks.

    Viewers get at most ``max_fps`` pictures and results a second, whatever the pipeline runs at. The
    pipeline's thread pays only for that: it keeps a copy of its picture at most ``max_fps`` times a
    second and only while someone watches (frames in between are skipped, never copied), a viewer's
    thread encodes each kept picture once for all viewers, and each result is serialised once, so twenty
    viewers cost about what one does and an unwatched run pays nothing per frame but a clock read."""

    def __init__(self, max_fps: float = 15.0):
        # Two conditions on one lock: viewers waiting for a picture wake only when one is kept (at most
        # max_fps a second), not on every result; twenty of them woken per frame cost the pipeline ~15%.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # a new result (the event stream)
        self._frames = threading.Condition(lock)  # a newly kept picture
        self.period = 1.0 / max_fps
        self.seq = 0  # results published
        self.frame_seq = 0  # the result number the kept picture belongs to
        self._image: np.ndarray | None = None
        self._kept_at = -1e9  # when the pipeline last kept a picture
        self._jpeg: tuple[int, bytes] | None = None  # (frame_seq, bytes)
        self._row: tuple[int, bytes] | None = None  # (seq, the event's JSON), serialised on first ask
        self._row_obj: dict | None = None
        self.viewers = 0
        self.closed = False

    def wants_image(self) -> bool:
        """Whether the next published picture would be kept: the pipeline draws none otherwise."""
        return self.viewers > 0 and time.monotonic() - self._kept_at >= self.period

    def publish(self, image: np.ndarray | None, row: dict) -> None:
        now = time.monotonic()
        # the renderer reuses its buffer and a viewer's thread encodes later: keep a copy, when one is due
        keep = image is not None and self.viewers > 0 and now - self._kept_at >= self.period
        copy = image.copy() if keep and image is not None else None
        with self._cond:
            self.seq += 1
            if keep:
                self._image, self.frame_seq, self._kept_at = copy, self.seq, now
                self._frames.notify_all()
            self._row_obj = row
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            self._frames.notify_all()

    def wait_newer(self, seq: int, timeout: float = WAIT_S) -> int:
        """Waits for a result newer than ``seq``; returns the newest result number."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq or self.closed, timeout)
            return self.seq

    def wait_frame(self, after: int, timeout: float = WAIT_S) -> int:
        """Waits for a kept picture newer than ``after``; returns the newest picture's number."""
        with self._frames:
            self._frames.wait_for(lambda: self.frame_seq > after or self.closed, timeout)
            return self.frame_seq

    def jpeg(self, after: int = 0) -> tuple[int, bytes] | None:
        """The newest kept picture if newer than ``after``, encoded once for every viewer."""
        with self._cond:
            seq, image, cached = self.frame_seq, self._image, self._jpeg
        if cached is not None and cached[0] == seq:
            return cached if seq > after else None
        if image is None or seq <= after:
            return None
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])  # GIL released meanwhile
        if not ok:
            return None
        with self._cond:
            if self._jpeg is None or self._jpeg[0] < seq:
                self._jpeg = (seq, buf.tobytes())
            return self._jpeg

    def event(self) -> tuple[int, bytes]:
        """The newest result as one server-sent event (serialised once, whoever asks first)."""
        with self._cond:
            if self._row is None or self._row[0] != self.seq:
                body = json.dumps({"seq": self.seq, **(self._row_obj or {})}, separators=(",", ":"))
                self._row = (self.seq, b"data: " + body.encode() + b"\n\n")
            return self._row

    def watching(self, delta: int) -> None:
        with self._cond:
            self.viewers += delta


class _Subscriber:
    def __init__(self, kind: str, sock: socket.socket):
        self.kind, self.sock = kind, sock
        self.pending = memoryview(b"")  # what is left of the part or event being sent
        self.since = time.monotonic()  # when the pending bytes were queued (a stalled viewer is dropped)
        self.done = threading.Event()


class Fanout:
    """One thread sends every picture and result to every streaming viewer, over non-blocking sockets.

    Why one thread and not one per viewer: each Python thread that wakes needs the GIL, and twenty viewer
    threads waking for every picture (each to write its own copy) took the GIL from the pipeline's
    threads often enough to cost it ~10% of its frames on two cores. Here a picture or result is queued
    only to viewers whose previous one has gone out (the newest wins; a slow viewer skips), a viewer
    whose queued bytes make no progress for ``SEND_TIMEOUT_S`` is dropped, and the viewers' own threads
    only wait until their stream ends."""

    def __init__(self, hub: LiveHub):
        self.hub, self.stopping = hub, False
        self._subs: list[_Subscriber] = []
        self._new: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._finished = False
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="emonas-serve-fanout", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stream(self, kind: str, sock: socket.socket) -> None:
        """Hands ``sock`` (its response headers sent) to the fan-out; returns when its stream has ended."""
        sub = _Subscriber(kind, sock)
        with self._lock:
            if self._finished:
                return
            self._new.append(sub)
        sub.done.wait()

    def close(self) -> None:
        """After the hub is closed: what is queued goes out (for up to 2 s), then every stream ends."""
        if not self._thread.is_alive():
            return
        self._thread.join(timeout=2)
        self.stopping = True
        self._thread.join(timeout=5)

    def _run(self) -> None:
        frame_seq = event_seq = 0
        event_at = idle_at = time.monotonic()
        try:
            while not self.stopping:
                if any(s.pending for s in self._subs):
                    self._send(timeout=self.hub.period / 3)
                else:
                    self.hub.wait_frame(frame_seq, timeout=self.hub.period)
                self._admit()
                got = self.hub.jpeg(frame_seq)
                if got is not None:
                    frame_seq = got[0]
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(got[1])}\r\n"
                    self._queue("mjpeg", b"%sX-Seq: %d\r\n\r\n%s\r\n" % (head.encode(), frame_seq, got[1]))
                now = time.monotonic()
                if now - event_at >= self.hub.period and self.hub.seq > event_seq:
                    event_seq, event = self.hub.event()
                    self._queue("events", event)
                    event_at = idle_at = now
                elif now - idle_at >= WAIT_S:  # a comment line: finds dead viewers, keeps proxies open
                    self._queue("events", b": idle\n\n")
                    idle_at = now
                self._send(timeout=0)
                if self.hub.closed and not any(s.pending for s in self._subs) and got is None:
                    break
        finally:
            with self._lock:
                self._finished = True
                for sub in self._subs + self._new:
                    self._drop(sub)

    def _admit(self) -> None:
        with self._lock:
            new, self._new = self._new, []
        for sub in new:
            sub.sock.setblocking(False)
            self._selector.register(sub.sock, selectors.EVENT_WRITE, sub)
            self._subs.append(sub)

    def _queue(self, kind: str, data: bytes) -> None:
        now = time.monotonic()
        for sub in self._subs:
            if sub.kind == kind and not sub.pending:
                sub.pending, sub.since = memoryview(data), now

    def _send(self, timeout: float) -> None:
        ready = {key.data for key, _ in self._selector.select(timeout)} if self._subs else set()
        now = time.monotonic()
        for sub in list(self._subs):
            if not sub.pending:
                continue
            if sub in ready:
                try:
                    sent = sub.sock.send(sub.pending)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:  # the viewer went away
                    self._drop(sub)
                    continue
                sub.pending = sub.pending[sent:]
                if sent:
                    sub.since = now
            if sub.pending and now - sub.since > SEND_TIMEOUT_S:  # stalled: its buffers are full
                self._drop(sub)

    def _drop(self, sub: _Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._selector.unregister(sub.sock)
        sub.done.set()


class _Handler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature; the run's console stays clean
        pass

    def setup(self):
        super().setup()
        self.connection.settimeout(SEND_TIMEOUT_S)

    def do_GET(self):  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self.server.allowed(query.get("token", [""])[0]):
            return self._send(403, "text/plain", b"forbidden: this live view needs its token (?token=...)\n")
        routes = {"/": self._page, "/stream.mjpg": self._stream, "/frame.jpg": self._frame, "/events": self._events}
        route = routes.get(url.path)
        if route is None:
            return self._send(404, "text/plain", b"not found\n")
        pictures = url.path in ("/stream.mjpg", "/frame.jpg")  # the pipeline draws only while these watch
        hub = self.server.hub
        hub.watching(+1 if pictures else 0)
        try:
            route(query)
        except (OSError, ValueError):  # the viewer went away or stalled past the timeout: drop it
            self.close_connection = True
        finally:
            hub.watching(-1 if pictures else 0)

    def _send(self, code: int, ctype: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _page(self, query) -> None:
        self._send(200, "text/html; charset=utf-8", PAGE.encode())

    def _frame(self, query) -> None:
        hub = self.server.hub
        after = int(query.get("after", ["0"])[0] or 0)
        hub.wait_frame(after)  # none newer within WAIT_S (a run not yet watched keeps none): 204, ask again
        got = hub.jpeg(after)
        if hub.closed and got is None:
            return self._send(410, "text/plain", b"the run has ended\n")
        if got is None:
            return self._send(204, "image/jpeg", b"", {"X-Seq": str(hub.frame_seq)})
        self._send(200, "image/jpeg", got[1], {"X-Seq": str(got[0])})

    def _stream(self, query) -> None:
        """Motion JPEG: one response, one picture after another as the pipeline keeps them (the fan-out
        sends each viewer the newest when its last has gone out, so a slow viewer skips pictures). Any
        browser shows it in an ``<img>``, OpenCV and VLC open the URL as a camera, and the page reads it
        with ``fetch`` to count what it draws."""
        self._open_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.server.fanout.stream("mjpeg", self.connection)

    def _events(self, query) -> None:
        """The newest result at most max_fps times a second, as server-sent events."""
        self._open_stream("text/event-stream")
        self.server.fanout.stream("events", self.connection)

    def _open_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


class LiveServer(ThreadingHTTPServer):
    """``with LiveServer(address) as live: ... live.on_frame(result, image)`` during the run."""

    daemon_threads = True  # a viewer's thread never keeps the process alive after the run
    allow_reuse_address = True

    def __init__(self, address: ServeAddress):
        self.address, self.hub, self.stopping = address, LiveHub(), False
        if ":" in address.host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((address.host, address.port), _Handler)
        except OSError as e:
            raise UserError(f"--serve {address.host}:{address.port}: cannot listen ({e.strerror or e})") from None
        self._thread = threading.Thread(target=self.serve_forever, name="emonas-serve", daemon=True)
        self.fanout = Fanout(self.hub)

    def allowed(self, token: str) -> bool:
        return self.address.token is None or hmac.compare_digest(token.encode(), self.address.token.encode())

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = _reachable_name() if host in ("0.0.0.0", "::") else host  # noqa: S104 - only for the printed URL
        shown = f"[{shown}]" if ":" in str(shown) else shown
        token = f"?token={self.address.token}" if self.address.token else ""
        return f"http://{shown}:{port}/{token}"

    def on_frame(self, result, image) -> None:
        self.hub.publish(image, result.to_json())

    def wants_image(self) -> bool:
        return self.hub.wants_image()

    def start(self) -> LiveServer:
        self.fanout.start()
        self._thread.start()
        return self

    def close(self) -> None:
        """Ends every viewer's stream and frees the port (bound at construction, served from ``start``)."""
        self.stopping = True
        self.hub.close()
        self.fanout.close()  # sends what is queued, then ends every stream
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emonas-edge live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
#wrap{display:flex;gap:1rem;flex-wrap:wrap}
canvas{max-width:100%;background:#000;border:1px solid #333}
.face{margin:.4rem 0 .8rem}.bar{display:flex;align-items:center;gap:.4rem;font-size:.85rem}
.bar span:first-child{width:5.5rem}.fill{height:.7rem;background:#4a9}
#status{color:#aaa;font-size:.85rem}
</style></head><body>
<h1>emonas-edge live</h1>
<div id="status">connecting…</div>
<div id="wrap"><canvas id="video" width="640" height="360" data-frames="0"></canvas>
<div id="faces" data-frames="0"></div></div>
<script>
const token = new URLSearchParams(location.search).get("token");
const video = document.getElementById("video"), ctx = video.getContext("2d");
const faces = document.getElementById("faces"), status = document.getElementById("status");
let seq = 0, drawn = 0, rows = 0, t0 = performance.now();
function find(buf, pat, from) {  // index of the byte pattern pat in buf at or after from, -1 if none
  outer: for (let i = from; i + pat.length <= buf.length; i++) {
    for (let k = 0; k < pat.length; k++) if (buf[i + k] !== pat[k]) continue outer;
    return i;
  }
  return -1;
}
async function draw(jpeg) {
  const bmp = await createImageBitmap(new Blob([jpeg], {type: "image/jpeg"}));
  if (video.width !== bmp.width) { video.width = bmp.width; video.height = bmp.height; }
  ctx.drawImage(bmp, 0, 0); drawn++; video.dataset.frames = drawn;
}
async function stream() {  // the motion-JPEG stream, read part by part: the next is read after this one is drawn
  const END = [13, 10, 13, 10];
  for (;;) {
    try {
      const r = await fetch("/stream.mjpg" + (token ? "?token=" + encodeURIComponent(token) : ""), {cache: "no-store"});
      if (r.status !== 200) { status.textContent = "stopped (" + r.status + ")"; return; }
      const reader = r.body.getReader();
      let buf = new Uint8Array(0);
      for (;;) {
        const {value, done} = await reader.read();
        if (done) { status.textContent = "the run has ended"; return; }
        const joined = new Uint8Array(buf.length + value.length); joined.set(buf); joined.set(value, buf.length);
        buf = joined;
        for (;;) {
          const end = find(buf, END, 0);
          if (end < 0) break;
          const head = new TextDecoder().decode(buf.subarray(0, end));
          const len = Number((/content-length: *(\d+)/i.exec(head) || [0, 0])[1]);
          if (buf.length < end + 4 + len) break;
          const jpeg = buf.slice(end + 4, end + 4 + len);
          buf = buf.slice(end + 4 + len);
          seq = Number((/x-seq: *(\d+)/i.exec(head) || [0, seq])[1]);
          await draw(jpeg);
        }
      }
    } catch (e) { status.textContent = "disconnected"; await new Promise(r => setTimeout(r, 1000)); }
  }
}
function show(row) {
  rows++; faces.dataset.frames = rows;
  const fps = rows / ((performance.now() - t0) / 1000);
  status.textContent = "frame " + row.frame + " | " + fps.toFixed(1) + " results/s shown | faces " + row.faces.length;
  faces.replaceChildren(...row.faces.map(f => {
    const div = document.createElement("div"); div.className = "face";
    const probs = f.macro || {}, top = Object.entries(probs).sort((a, b) => b[1] - a[1]);
    div.dataset.label = top.length ? top[0][0] : "";
    const head = document.createElement("b");
    head.textContent = "face " + f.track + ": " + (top.length ? top[0][0] : "no macro result");
    div.append(head);
    for (const [name, p] of top) {
      const bar = document.createElement("div"); bar.className = "bar";
      const label = document.createElement("span"); label.textContent = name;
      const fill = document.createElement("span"); fill.className = "fill"; fill.style.width = (p * 12) + "rem";
      const val = document.createElement("span"); val.textContent = p.toFixed(2);
      bar.append(label, fill, val); div.append(bar);
    }
    return div;
  }));
}
const events = new EventSource("/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
events.onmessage = e => show(JSON.parse(e.data));
events.onerror = () => { status.textContent = "event stream closed"; };
stream();
</script></body></html>
"""
