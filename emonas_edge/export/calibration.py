"""Calibration samples for INT8: real faces, preprocessed exactly as the model will see them.

Sources users have: a labelled dataset (class folders or FER2013 CSV), a folder of face crops,
or raw frames / videos. Raw frames go through the detector and aligner the pipeline uses
(:mod:`emonas_edge.faces`), so the activation ranges are those of deployment, not of some other
crop. A fixed seed picks the samples; part of them is held back to measure agreement when no
labelled eval set is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..data.preprocess import IMAGE_SUFFIXES, Preprocessor, read_image
from ..errors import UserError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}
CROP_MAX_SIDE = 160  # images no larger than this are taken as face crops; larger ones are searched for faces
FEW_SAMPLES = 300


def _faces_in(frames, config: ModelConfig, limit: int, photos: bool) -> list[np.ndarray]:
    """Faces found the way ``run`` finds them in that kind of source (full-range BlazeFace for photos)."""
    from ..faces.align import Aligner
    from ..faces.detect import create_detector

    out: list[np.ndarray] = []
    aligner = Aligner(config, max_faces=8)
    with create_detector(auto_full_range=photos) as det:
        for img in frames:
            if len(out) >= limit:
                break
            dets = sorted(det.detect(img), key=lambda d: d.area, reverse=True)[:8]
            if dets:
                out.extend(c.copy() for c in aligner.align(img, dets))
    return out


def _video_frames(path: Path, every: int = 5):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"{path}: cannot open as a video")
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield img
            i += 1
    finally:
        cap.release()


def calibration_pixels(
    source: str | os.PathLike, config: ModelConfig, n: int = 512, seed: int = 0
) -> tuple[np.ndarray, str, list[str]]:
    """``(uint8 model-size pixels (N, H, W[, 3]), description, warnings)``."""
    from ..data.datasets import load_dataset

    if n < 1:
        raise UserError(f"--calib-samples must be at least 1, got {n}")
    src = Path(source)
    warnings: list[str] = []
    rng = np.random.default_rng(seed)
    if not src.exists() and not str(source).lower().split(":")[0].endswith(".csv"):
        raise UserError(f"calibration source not found: {source}")
    subdirs = [p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")] if src.is_dir() else []
    if subdirs or str(source).lower().split(":")[0].endswith(".csv"):
        ds = load_dataset(source, config, usage="Training")
        pick = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
        pixels, what = ds.images[pick], f"{len(pick)} of {len(ds)} labelled images from {source} (seed {seed})"
    else:
        pre = Preprocessor(config)
        if src.is_dir():
            files = sorted(
                f for f in src.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
        else:
            files = [src]
        if not files:
            raise UserError(f"{src}: no images or videos to calibrate with")
        files = [files[i] for i in np.sort(rng.permutation(len(files)))] if len(files) > n else files
        crops: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        for f in files:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                crops.extend(_faces_in(_video_frames(f), config, n - len(crops), photos=False))
                continue
            img = read_image(f)
            if img is None:
                warnings.append(f"skipped unreadable {f.name}")
                continue
            if max(img.shape[:2]) <= CROP_MAX_SIDE:
                crops.append(pre.to_model_pixels(img))
            else:
                frames.append(img)
        if frames:
            crops.extend(_faces_in(frames, config, max(0, n - len(crops)), photos=True))
        if not crops:
            raise UserError(
                f"{source}: no usable faces for calibration (no face crops, and no faces detected in the frames)"
            )
        pixels = np.stack(crops[:n])
        what = f"{len(pixels)} face crops from {source}"
    if len(pixels) < FEW_SAMPLES:
        warnings.append(f"only {len(pixels)} calibration samples (a few hundred or more give stable INT8 ranges)")
    return pixels, what, warnings
