"""Does detecting every k-th frame (optical flow in between) keep what detecting every frame gives?

The pipeline runs a clip twice with the same models: detection on every frame, and the cadence under
test. Per frame it compares each face's box (IoU), its aligned crop (the eyes' positions, in units of
the eye distance, after the similarity transform both runs used) and its macro label (top class of the
smoothed probabilities, what `run` reports). A frame agrees when both runs have the same number of faces
and every face agrees on all three.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..pipeline.track import iou_matrix


def _frames(built, source: Path, every) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
    """Per frame: (box, eye positions, macro top class) of each face, in track order."""
    import dataclasses

    from ..faces.align import eyes_of
    from ..pipeline.loop import Pipeline
    from ..pipeline.sources import VideoFileSource

    p0 = built.pipeline
    p = Pipeline(p0.detector, p0.macro, None, dataclasses.replace(p0.settings, detect_every=every))
    out = []
    with VideoFileSource(source) as src:
        for n, frame in enumerate(src):
            found, ns = p.detect(frame, n)
            r = p.process(frame, found, ns)
            dets = p._select(found)  # the faces in the order the results list them
            out.append(
                [
                    (f.box.copy(), np.stack(eyes_of(d)[:2]), -1 if f.macro is None else int(np.argmax(f.macro)))
                    for f, d in zip(r.faces, dets, strict=True)
                ]
            )
    return out


def compare_cadence(
    source: str | os.PathLike,
    every="auto",
    macro: str = "emonas-macro",
    min_iou: float = 0.8,
    max_eye_shift: float = 0.1,
) -> dict:
    """Agreement of ``--detect-every every`` with detection on every frame, on one clip."""
    from ..pipeline import build_pipeline

    path = Path(source)
    if not path.is_file():
        raise UserError(f"{source}: no such clip")
    built = build_pipeline(macro, None)
    try:
        base = _frames(built, path, 1)
        test = _frames(built, path, every)
    finally:
        built.pipeline.detector.close()
    agree = box_ok = label_ok = crop_ok = 0
    ious = []
    for a, b in zip(base, test, strict=True):
        if len(a) != len(b):
            continue
        if not a:
            agree += 1
            box_ok += 1
            label_ok += 1
            crop_ok += 1
            continue
        iou = iou_matrix(np.stack([f[0] for f in a]), np.stack([f[0] for f in b]))
        pairs = iou.argmax(axis=1)  # each every-frame face to its best match under the cadence
        best = iou[np.arange(len(a)), pairs]
        ious.extend(best.tolist())
        boxes = bool((best >= min_iou).all())
        crops = all(
            np.linalg.norm(fa[1] - b[j][1], axis=1).max() <= max_eye_shift * np.linalg.norm(fa[1][1] - fa[1][0])
            for fa, j in zip(a, pairs, strict=True)
        )
        labels = all(fa[2] == b[j][2] for fa, j in zip(a, pairs, strict=True))
        box_ok, crop_ok, label_ok = box_ok + boxes, crop_ok + crops, label_ok + labels
        agree += boxes and crops and labels
    n = len(base)
    return {
        "source": str(source),
        "frames": n,
        "detect_every": every,
        "agree": agree / n if n else 0.0,
        "boxes": box_ok / n if n else 0.0,
        "crops": crop_ok / n if n else 0.0,
        "labels": label_ok / n if n else 0.0,
        "median_iou": float(np.median(ious)) if ious else None,
        "thresholds": {"min_iou": min_iou, "max_eye_shift": max_eye_shift},
    }
