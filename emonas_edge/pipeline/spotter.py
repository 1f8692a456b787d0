"""Micro-expression spotting on the fly: :func:`~emonas_edge.data.spotting.spot` over each track's recent frames.

Spotting a frame needs frames after it: ``2k`` (``k`` = 0.2 s of frames) for its registration (the shift is a
median over time), then ``2k`` for the return-to-baseline test, the contrast and the onset/offset baseline. It
also needs enough before it for the track's noise level (spotted on a short window alone, a movement filled a
third of it and raised its own floor: missed). So each frame is registered and described once, when its shift
is final, and each track keeps the region features of its last ``11k + 1`` frames (2.2 s); every ``k`` frames
the window is spotted and the events whose apex has just got its full context are reported, each frame judged
once. An event is reported 0.8-1.0 s after its apex, with the apex's own frame index and time. The frame rate
comes from the frames' own times (a source that gives none or absurd ones falls back to ``DEFAULT_FPS``, said
in each event).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..data.spotting import (
    REGIONS,
    SpotSettings,
    merge_regions,
    region_features,
    shift_to,
    shifted,
    smoothed_shift_at,
    spot_features,
)

DEFAULT_FPS = 30.0
SPOT_SIZE = 64  # crops spotted at 64x64 gray, whatever the heads' input sizes


def frame_rate(times: list[float]) -> tuple[float, bool]:
    """``(fps, measured)`` from frame times: the median step, if it says 5-240 fps; else the default."""
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    if len(steps) >= 3:
        fps = 1.0 / float(np.median(steps))
        if 5.0 <= fps <= 240.0:
            return fps, True
    return DEFAULT_FPS, False


class StreamSpotter:
    def __init__(self, settings: SpotSettings | None = None):
        self.settings = settings or SpotSettings()

    def push(self, state: dict, crop: np.ndarray, index: int, time: float) -> list[dict]:
        """Add a track's crop of frame ``index``; the events whose apex just became decidable (usually none)."""
        buf = state.get("spot")
        gray = (crop if crop.ndim == 2 else crop.mean(axis=2)).astype(np.float32)
        if buf is None:
            buf = state["spot"] = {
                "ref": gray.copy(),
                "raw": deque(),
                "feats": deque(),
                "since": 0,
                "judged": -1,
                "pushed": 0,
            }
        buf["raw"].append((gray, shift_to(buf["ref"], gray), index, time))
        buf["pushed"] += 1
        if buf["pushed"] <= 32 or buf["pushed"] % 15 == 0:  # settled after a second: re-read twice a second
            fps, measured = frame_rate([r[3] for r in buf["raw"]])
            buf["rate"] = fps, measured, self.settings.frames(fps)
        fps, measured, k = buf["rate"]
        self._describe_final(buf, 2 * k)
        window = 11 * k + 1
        while len(buf["feats"]) > window:
            buf["feats"].popleft()
        buf["since"] += 1
        if len(buf["feats"]) < window or buf["since"] < k:
            return []
        buf["since"] = 0
        return self._judge(buf, fps, measured, k)

    @staticmethod
    def oldest(state: dict) -> int | None:
        """The oldest frame index a future event can still reach back to (its window's first), None before any."""
        feats = state.get("spot", {}).get("feats")
        return feats[0][1] if feats else None

    def _describe_final(self, buf: dict, smooth: int) -> None:
        """The frame whose shift median now has ``smooth`` frames on both sides: registered and described."""
        raw = buf["raw"]
        if len(raw) < smooth + 1:
            return
        at = len(raw) - 1 - smooth
        # the offline spotter's smoothing (the track's first frames padded with its first shift), read at ``at``
        dx, dy = smoothed_shift_at(np.array([r[1] for r in raw], np.float32), at, smooth)
        gray, _, index, time = raw[at]
        feats = region_features(shifted(gray, float(dx), float(dy)), self.settings.grid)
        # the regions side by side in one row: a window is then one stack, not one per region
        buf["feats"].append((np.concatenate([feats[r] for r in REGIONS]), index, time))
        while len(raw) > 2 * smooth + 1:
            raw.popleft()

    def _judge(self, buf: dict, fps: float, measured: bool, k: int) -> list[dict]:
        """Spot the window; keep the apexes with ``2k`` frames after them that no earlier call judged."""
        feats = list(buf["feats"])
        index, times = [f[1] for f in feats], [f[2] for f in feats]
        last = len(feats) - 1 - 2 * k  # the newest position with full context after it
        rows = np.stack([f[0] for f in feats])
        width = rows.shape[1] // len(REGIONS)
        series = {r: rows[:, i * width : (i + 1) * width] for i, r in enumerate(REGIONS)}
        events = merge_regions(spot_features(series, fps, self.settings), spacing=k)
        out = []
        for e in events:
            if index[e.apex] > buf["judged"] and 2 * k <= e.apex <= last:
                out.append(
                    {
                        "region": e.region,
                        "onset_frame": index[e.onset],
                        "apex_frame": index[e.apex],
                        "offset_frame": index[e.offset],
                        "onset": round(times[e.onset], 4),
                        "apex": round(times[e.apex], 4),
                        "offset": round(times[e.offset], 4),
                        "strength": round(e.strength, 3),
                        **({} if measured else {"fps_assumed": DEFAULT_FPS}),
                    }
                )
        buf["judged"] = index[last]
        return out
