"""Micro-expression spotting without training: when does a brief, low-intensity facial movement happen?

After the MEGC challenges' training-free feature-difference baseline, made frame-rate aware. Each track's aligned
crops are first registered onto its first crop (sub-pixel phase correlation, median-filtered over time, so the
aligner's jitter and slow head drift go and a brief local movement stays local). Each crop is cut into regions
(brows and eyes, mouth, the rest), each described by a lattice of normalised cell means (robust to light and to
sensor noise), and every frame is compared with the average of the frames ``k`` before and after it (``k`` from
``interval_s`` and the frame rate: the same movement gives the same times at 30 and 60 fps). A micro-expression
is brief, so the frames around it resemble each other and differ from it; a macro expression or a head turn is
sustained, so the frames before and after differ from each other too, and such frames are not reported (the
"return to baseline" test). A frame is an apex where its difference stands out of its surroundings (the MEGC
contrast and threshold) and exceeds a multiple of the track's own noise level (so a still face reports nothing);
onset and offset are where the movement is at least half its apex size.

Not a substitute for SAMM / CAS(ME)^2 results (licence-gated, not here): measured on synthetic injections into
real faces by ``benchmarks/spotting_synthetic.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import UserError

# (top, bottom, left, right) as fractions of an aligned crop (eyes level, as the pipeline's aligner places them)
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "brows_eyes": (0.08, 0.50, 0.08, 0.92),
    "mouth": (0.62, 0.96, 0.22, 0.78),
    "rest": (0.45, 0.66, 0.08, 0.92),
}


@dataclass(frozen=True)
class SpotSettings:
    interval_s: float = 0.2  # head/tail distance: about half a micro-expression's length (they last < 0.5 s)
    p: float = 0.4  # MEGC threshold: mean + p * (max - mean) of the contrasted curve
    noise_k: float = 3.0  # floor: this many times the track's median difference (a still face reports nothing)
    return_ratio: float = 0.5  # brief: head-vs-tail difference below this fraction of the frame's difference
    grid: int = 8  # cells per side of each region's feature lattice

    def frames(self, fps: float) -> int:
        if not fps or not np.isfinite(fps) or fps <= 0:
            raise UserError(f"spotting needs the source's frame rate; got {fps!r}")
        return max(1, int(round(self.interval_s * fps)))


@dataclass(frozen=True)
class MicroEvent:
    region: str
    onset: int  # frame indices within the track's sequence
    apex: int
    offset: int
    onset_s: float
    apex_s: float
    offset_s: float
    strength: float  # the apex's contrasted difference over the threshold (> 1)


def region_features(crop: np.ndarray, grid: int = 8) -> dict[str, np.ndarray]:
    """Per region: its pixels averaged over a ``grid`` x ``grid`` lattice of cells, then normalised to zero mean
    and unit spread (a slow change of light or exposure moves no feature; a brow or lip corner moving a few
    pixels moves the cells along its edge). Cell means average the sensor noise away, which on 48-64 pixel
    face crops drowns texture descriptors such as LBP histograms (measured: LBP differences between
    consecutive noisy frames were as large as a 2-pixel brow raise)."""
    import cv2

    gray = crop if crop.ndim == 2 else crop.mean(axis=2)
    gray = gray.astype(np.float32)
    h, w = gray.shape
    out = {}
    for name, (t, b, left, r) in REGIONS.items():
        cells = cv2.resize(gray[int(t * h) : int(b * h), int(left * w) : int(r * w)], (grid, grid),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        mean, std = cv2.meanStdDev(cells)  # one call for both: this runs per region of every frame of every track
        out[name] = ((cells - float(mean[0, 0])) / max(float(std[0, 0]), 1.0)).ravel()
    return out


def register(crops: np.ndarray, smooth: int = 1) -> np.ndarray:
    """The crops shifted onto the track's first one: the aligner's jitter and the head's slow drift move whole
    crops by fractions of a pixel, as much as a brow raise moves its edge. The shift is measured by sub-pixel
    phase correlation and then median-filtered over ``2 * smooth + 1`` frames (longer than a micro-expression),
    so a brief local movement, which also pulls the correlation peak, is not registered away nor spread over
    the whole face."""
    gray = [(c if c.ndim == 2 else c.mean(axis=2)).astype(np.float32) for c in crops]
    shifts = smoothed_shifts(np.array([shift_to(gray[0], g) for g in gray], np.float32), smooth)
    return np.stack([shifted(g, float(dx), float(dy)) for g, (dx, dy) in zip(gray, shifts, strict=True)])


def smoothed_shifts(shifts: np.ndarray, smooth: int) -> np.ndarray:
    """Each shift replaced by the median of the ``2 * smooth + 1`` around it (ends padded with their own)."""
    if smooth <= 0:
        return shifts
    padded_shifts = np.pad(shifts, ((smooth, smooth), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded_shifts, 2 * smooth + 1, axis=0)
    return np.median(windows, axis=-1)


def smoothed_shift_at(shifts: np.ndarray, at: int, smooth: int) -> np.ndarray:
    """``smoothed_shifts(shifts, smooth)[at]`` without smoothing the rest (the live spotter needs one a frame)."""
    if smooth <= 0:
        return shifts[at]
    lo, hi = at - smooth, at + smooth + 1
    window = shifts[max(lo, 0) : hi]
    if lo < 0 or hi > len(shifts):  # the ends padded with their own, as smoothed_shifts does
        window = np.concatenate(
            [shifts[:1].repeat(max(0, -lo), 0), window, shifts[-1:].repeat(max(0, hi - len(shifts)), 0)]
        )
    return np.sort(window, axis=0)[smooth]  # the median of an odd count (np.median costs ~10x more here)


@lru_cache(maxsize=4)
def _hanning(shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.createHanningWindow(shape[::-1], cv2.CV_32F)


def shift_to(reference: np.ndarray, crop: np.ndarray) -> tuple[float, float]:
    """Sub-pixel shift of ``crop`` against ``reference`` (both float32 gray), by phase correlation (called for every
    frame of every track: the window is made once per crop size)."""
    import cv2

    window = _hanning(reference.shape)
    # copies: OpenCV 4.14's phaseCorrelate applies the window to its inputs in place (measured here)
    (dx, dy), _ = cv2.phaseCorrelate(reference.copy(), crop.copy(), window)
    return float(dx), float(dy)


def shifted(crop: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    m = np.array([[1, 0, -dx], [0, 1, -dy]], np.float32)
    return cv2.warpAffine(crop, m, crop.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference along the last axis (ufuncs, not np.mean: this runs on every live spotting
    window, and np.mean's Python-level wrapper held the GIL longer than the arithmetic)."""
    d = a - b
    return np.sqrt(np.add.reduce(d * d, axis=-1) / d.shape[-1])


def difference_curves(features: np.ndarray, k: int, return_ratio: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(gated, contrast, noise)`` per frame: the frame's difference from the average of the frames ``k`` before
    and after it, kept only where those two agree (it came back: brief); that minus half its neighbours' (a
    peak stands out of its surroundings); and the median raw difference (the track's noise level)."""
    n = len(features)
    gated, contrast = np.zeros(n, np.float32), np.zeros(n, np.float32)
    if n < 2 * k + 1:
        return gated, contrast, 0.0
    mid, head, tail = features[k : n - k], features[: n - 2 * k], features[2 * k :]
    diff = distance(mid, 0.5 * (head + tail))
    brief = distance(head, tail) < return_ratio * diff
    gated[k : n - k] = np.where(brief, diff, 0.0)
    contrast[k : n - k] = gated[k : n - k] - 0.5 * (gated[: n - 2 * k] + gated[2 * k :])
    return gated, np.maximum(contrast, 0.0, out=contrast), _median(diff)


def _median(x: np.ndarray) -> float:
    """``np.median`` of a 1-D array, without its Python-level overhead."""
    s, m = np.sort(x), len(x) // 2
    return float(s[m]) if len(x) % 2 else float((s[m - 1] + s[m]) / 2)


def spot(crops: np.ndarray, fps: float, settings: SpotSettings | None = None, start_s: float = 0.0) -> list[MicroEvent]:
    """Events in one track's aligned crops (``N x H x W`` gray or ``N x H x W x 3``), in apex order."""
    s = settings or SpotSettings()
    k = s.frames(fps)
    if len(crops) < 2 * k + 1:
        return []
    feats = [region_features(c, s.grid) for c in register(crops, smooth=2 * k)]
    return spot_features({r: np.stack([f[r] for f in feats]) for r in REGIONS}, fps, s, start_s)


def spot_features(
    series: dict[str, np.ndarray], fps: float, settings: SpotSettings | None = None, start_s: float = 0.0
) -> list[MicroEvent]:
    """:func:`spot` from per-frame region features already computed (the live pipeline computes each frame's
    once, not once per window). A frame is an apex where its gated difference exceeds ``noise_k`` times the
    track's noise level and the MEGC threshold on the contrasted curve, and stands out of its surroundings."""
    s = settings or SpotSettings()
    k = s.frames(fps)
    events = []
    for region, feats in series.items():
        if len(feats) < 2 * k + 1:
            continue
        gated, contrast, noise = difference_curves(feats, k, s.return_ratio)
        floor = s.noise_k * noise
        megc = float(contrast.mean() + s.p * (contrast.max() - contrast.mean()))
        candidates = (gated > floor) & (contrast > megc) & (contrast > 0)
        for apex in _peaks(np.where(candidates, gated, 0.0), 0.0, k):
            onset, offset = _extent(feats, apex, k)
            times = (start_s + onset / fps, start_s + apex / fps, start_s + offset / fps)
            events.append(MicroEvent(region, onset, apex, offset, *times, float(gated[apex] / max(floor, 1e-9))))
    return sorted(events, key=lambda e: (e.apex, e.region))


def _extent(features: np.ndarray, apex: int, k: int) -> tuple[int, int]:
    """Onset and offset: the frames whose difference from the baseline around the movement (the average of the
    frames ``2k`` before and after the apex, outside any movement shorter than that) is at least half the apex's.
    For a movement that rises and falls smoothly that is its middle two thirds, whatever its length."""
    n = len(features)
    lo, hi = max(apex - 2 * k, 0), min(apex + 2 * k, n - 1)
    profile = distance(features[lo : hi + 1], 0.5 * (features[lo] + features[hi]))
    half, at = 0.5 * profile[apex - lo], apex - lo
    onset = offset = at
    while onset > 0 and profile[onset - 1] >= half:
        onset -= 1
    while offset < len(profile) - 1 and profile[offset + 1] >= half:
        offset += 1
    return lo + onset, lo + offset


def _peaks(curve: np.ndarray, threshold: float, spacing: int) -> list[int]:
    """Local maxima above ``threshold``, strongest first kept, at least ``spacing`` frames apart."""
    above = np.flatnonzero(curve > threshold)
    kept: list[int] = []
    for i in sorted(above, key=lambda j: -curve[j]):
        if all(abs(int(i) - j) >= spacing for j in kept):
            kept.append(int(i))
    return sorted(kept)


def merge_regions(events: list[MicroEvent], spacing: int) -> list[MicroEvent]:
    """One event per movement: regions whose apexes lie within ``spacing`` frames keep the strongest."""
    merged: list[MicroEvent] = []
    for e in sorted(events, key=lambda e: -e.strength):
        if all(abs(e.apex - m.apex) >= spacing for m in merged):
            merged.append(e)
    return sorted(merged, key=lambda e: e.apex)
