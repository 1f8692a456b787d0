"""Dynamic images: a face clip summarised as one image by approximate rank pooling (Bilen et al., CVPR 2016).

The pooled image is ``d = sum_t alpha_t * frame_t`` with
``alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1})`` (``H_t`` the t-th harmonic number, ``H_0 = 0``):
the closed-form first step of ranking frames in time order, so ``d`` encodes how appearance
*changes*, which is what a micro-expression is. The coefficients sum to zero, so a still clip
pools to zero and normalises to a flat image. One implementation serves micro-expression
training (clip datasets) and the real-time pipeline (per-face ring buffers).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def rank_pool_coefficients(T: int) -> np.ndarray:
    """``alpha_1..alpha_T`` (float64, read-only; cached because the pipeline reuses one T)."""
    if T < 1:
        raise ValueError("a clip needs at least one frame")
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, T + 1))])  # H_0..H_T
    t = np.arange(1, T + 1)
    alpha = 2.0 * (T - t + 1) - (T + 1) * (harmonic[T] - harmonic[t - 1])
    alpha.setflags(write=False)
    return alpha


def rank_pool(frames: np.ndarray) -> np.ndarray:
    """Unnormalised dynamic image: frames ``(T, H, W)`` or ``(T, H, W, C)`` -> float32 ``(H, W[, C])``."""
    frames = np.asarray(frames)
    alpha = rank_pool_coefficients(len(frames)).astype(np.float32)
    return np.tensordot(alpha, frames.astype(np.float32, copy=False), axes=1)


def to_uint8(pooled: np.ndarray, eps: float | None = None) -> np.ndarray:
    """Per-channel min-max to 0..255; a channel with no variation (a still clip) becomes flat 128.

    ``eps``: spans at or below it count as no variation (float rounding of a zero-sum pooling).
    """
    x = pooled.astype(np.float32, copy=False)
    axes = (0, 1)
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    span = hi - lo
    flat = span <= (eps if eps is not None else 1e-6 * max(1.0, float(np.abs(x).max())))
    out = np.where(flat, 128.0, (x - lo) / np.where(flat, 1.0, span) * 255.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def dynamic_image(frames: np.ndarray) -> np.ndarray:
    """uint8 dynamic image of a clip (frames oldest first), same layout as one frame."""
    frames = np.asarray(frames)
    # float32 rounding of sum(alpha_t * frame) is ~1e-7 of sum|alpha| * max|frame|; anything that
    # small is no motion, not a signal to stretch to full contrast.
    eps = 1e-5 * float(np.abs(rank_pool_coefficients(len(frames))).sum()) * max(1.0, float(np.abs(frames).max()))
    return to_uint8(rank_pool(frames), eps)


def window_indices(n_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of ``window`` frames every ``stride`` frames (the last one flush with the end)."""
    if window < 2 or stride < 1:
        raise ValueError("window must be >= 2 and stride >= 1")
    if n_frames <= window:
        return [(0, n_frames)] if n_frames >= 2 else []
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return [(s, s + window) for s in starts]


def select_span(
    onset: int, apex: int | None, offset: int, mode: str = "onset-offset", window: int | None = None
) -> tuple[int, int]:
    """Frame-number span ``[first, last]`` of a clip: onset->offset, or ``window`` frames centred on the apex."""
    if onset > offset:
        raise ValueError(f"onset {onset} is after offset {offset}")
    if mode == "onset-offset":
        return onset, offset
    if mode == "apex":
        if apex is None:
            apex = (onset + offset) // 2
        if not onset <= apex <= offset:
            raise ValueError(f"apex {apex} is outside onset..offset {onset}..{offset}")
        half = (window or 11) // 2
        first = max(onset, apex - half)
        last = min(offset, first + 2 * half)
        first = max(onset, last - 2 * half)
        return first, last
    raise ValueError(f"unknown window mode {mode!r} (onset-offset | apex)")
