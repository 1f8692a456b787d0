"""A live view of a running pipeline in any browser (``run --serve``), for devices with no display.

Python's own ``http.server`` (threaded) rather than a web framework: three read-only routes and a
page need no more, and the runtime install gains no dependency. The pipeline only hands each frame to a
:class:`LiveHub`, which keeps the newest one: viewers *pull* (the page asks for the next frame when it has
drawn the last; the event stream sends the newest result when it can), so a slow or stalled browser skips
frames instead of queueing them, and nothing waits on it but its own thread. JPEG encoding happens on a
viewer's thread, once per frame whoever asks first (OpenCV releases the GIL there), and only while
someone watches.

Routes: ``/`` the page, ``/frame.jpg?after=N`` the first frame newer than N (long poll), ``/events``
the per-frame results as server-sent events (the rows the JSONL holds). Nothing of the file system
is reachable. Off loopback a token guards every route (``?token=``, which the page carries on).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..errors import UserError

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

    Viewers get at most ``max_fps`` pictures and results a second, whatever the pipeline runs at: a JPEG
    is encoded at most that often (once for all viewers) and each result is serialised once, so twenty
    viewers cost about what one does, and a browser needs no more than its display shows."""

    def __init__(self, max_fps: float = 15.0):
        self._cond = threading.Condition()
        self.period = 1.0 / max_fps
        self.seq = 0
        self._image: np.ndarray | None = None
        self._jpeg: tuple[int, bytes, float] | None = None  # (seq, bytes, when encoded)
        self._row: tuple[int, bytes] | None = None  # (seq, the event's JSON), serialised on first ask
        self._row_obj: dict | None = None
        self.viewers = 0
        self.closed = False

    def publish(self, image: np.ndarray | None, row: dict) -> None:
        watched = self.viewers > 0
        with self._cond:
            self.seq += 1
            # the renderer may reuse its buffer: a viewer's thread encodes later, so keep a copy (only if watched)
            self._image = image.copy() if watched and image is not None else None
            self._row_obj = row
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_newer(self, seq: int, timeout: float = WAIT_S) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq or self.closed, timeout)
            return self.seq

    def jpeg(self, after: int = 0) -> tuple[int, bytes] | None:
        """The newest picture newer than ``after``, encoded at most once per period for everyone."""
        with self._cond:
            cached = self._jpeg
        now = time.monotonic()
        if cached is not None and cached[0] > after and now - cached[2] < self.period:
            return cached[0], cached[1]
        if cached is not None and now - cached[2] < self.period:  # this viewer has it: pace to the next one
            time.sleep(self.period - (now - cached[2]))
        with self._cond:
            seq, image, cached = self.seq, self._image, self._jpeg
            if cached is not None and cached[0] > after and time.monotonic() - cached[2] < self.period:
                return cached[0], cached[1]  # another viewer encoded it meanwhile
        if image is None:
            return None
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        with self._cond:
            if self._jpeg is None or self._jpeg[0] < seq:
                self._jpeg = (seq, buf.tobytes(), time.monotonic())
            return self._jpeg[0], self._jpeg[1]

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
        routes = {"/": self._page, "/frame.jpg": self._frame, "/events": self._events}
        route = routes.get(url.path)
        if route is None:
            return self._send(404, "text/plain", b"not found\n")
        hub = self.server.hub
        hub.watching(+1)
        try:
            route(query)
        except (OSError, ValueError):  # the viewer went away or stalled past the timeout: drop it
            self.close_connection = True
        finally:
            hub.watching(-1)

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
        seq = hub.wait_newer(after)
        got = hub.jpeg(after)
        if got is None and not hub.closed:  # the newest was published before anyone watched: take the next
            hub.wait_newer(seq)
            got = hub.jpeg(after)
        if hub.closed and (got is None or got[0] <= after):
            return self._send(410, "text/plain", b"the run has ended\n")
        if got is None:  # no frame yet: the page asks again
            return self._send(204, "image/jpeg", b"", {"X-Seq": str(hub.seq)})
        self._send(200, "image/jpeg", got[1], {"X-Seq": str(got[0])})

    def _events(self, query) -> None:
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seen = 0
        while not hub.closed and not self.server.stopping:
            sent = time.monotonic()
            seq = hub.wait_newer(seen)
            if seq == seen:
                self.wfile.write(b": idle\n\n")  # a comment line: finds dead viewers, keeps proxies open
            else:
                seen, event = hub.event()
                self.wfile.write(event)
            self.wfile.flush()
            time.sleep(max(0.0, hub.period - (time.monotonic() - sent)))  # the newest, at most max_fps a second


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

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Ends every viewer's stream and frees the port (bound at construction, served from ``start``)."""
        self.stopping = True
        self.hub.close()
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


PAGE = """<!doctype html>
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
const q = token ? "&token=" + encodeURIComponent(token) : "";
const video = document.getElementById("video"), ctx = video.getContext("2d");
const faces = document.getElementById("faces"), status = document.getElementById("status");
let seq = 0, drawn = 0, rows = 0, t0 = performance.now();
async function pull() {  // ask for the next frame only after drawing the last: a slow viewer skips frames
  for (;;) {
    try {
      const r = await fetch("/frame.jpg?after=" + seq + q, {cache: "no-store"});
      if (r.status === 200) {
        seq = Number(r.headers.get("X-Seq"));
        const bmp = await createImageBitmap(await r.blob());
        if (video.width !== bmp.width) { video.width = bmp.width; video.height = bmp.height; }
        ctx.drawImage(bmp, 0, 0); drawn++; video.dataset.frames = drawn;
      } else if (r.status === 204) { await new Promise(r => setTimeout(r, 100)); }
      else { status.textContent = r.status === 410 ? "the run has ended" : "stopped (" + r.status + ")"; return; }
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
pull();
</script></body></html>
"""
