"""Do the pipeline's cadences keep what doing everything on every frame gives?

Two cadences save work on video: detecting every k-th frame (optical flow in between) and running the macro
model on a face only every few frames or when its crop changed (``--macro-every``). The pipeline runs a clip
twice with the same models: detection and classification on every frame, and the cadences under test. Per
frame it compares each face's box (IoU), its aligned crop (the eyes' positions, in units of the eye distance,
after the similarity transform both runs used) and its macro label (top class of the smoothed probabilities,
what `run` reports). A frame agrees when both runs have the same number of faces and every face agrees on all
three; labels are also counted per face (a frame of nine faces disagrees when any one of them does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..pipeline.track import iou_matrix


def _frames(built, source: Path, every, macro_every) -> tuple[list[list[tuple[np.ndarray, np.ndarray, int]]], float]:
    """Per frame: (box, eye positions, macro top class) of each face, in track order; and the share of faces
    the macro model ran on."""
    import dataclasses

    from ..faces.align import eyes_of
    from ..pipeline.loop import Pipeline
    from ..pipeline.sources import VideoFileSource

    p0 = built.pipeline
    settings = dataclasses.replace(p0.settings, detect_every=every, macro_every=macro_every)
    p = Pipeline(p0.detector, p0.macro, None, settings)
    out = []
    faces = fresh = 0
    with VideoFileSource(source) as src:
        for n, frame in enumerate(src):
            found, ns = p.detect(frame, n)
            r = p.process(frame, found, ns)
            dets = p._select(found)  # the faces in the order the results list them
            faces, fresh = faces + len(r.faces), fresh + sum(f.macro_fresh for f in r.faces)
            out.append(
                [
                    (f.box.copy(), np.stack(eyes_of(d)[:2]), -1 if f.macro is None else int(np.argmax(f.macro)))
                    for f, d in zip(r.faces, dets, strict=True)
                ]
            )
    return out, fresh / max(1, faces)


def compare_cadence(
    source: str | os.PathLike,
    every="auto",
    macro: str = "emonas-macro",
    min_iou: float = 0.8,
    max_eye_shift: float = 0.1,
    macro_every="auto",
    detector: str = "auto",
    max_faces: int = 8,
) -> dict:
    """Agreement of ``--detect-every every --macro-every macro_every`` with detecting and classifying every
    face on every frame, on one clip."""
    from ..pipeline import PipelineSettings, build_pipeline

    path = Path(source)
    if not path.is_file():
        raise UserError(f"{source}: no such clip")
    built = build_pipeline(macro, None, detector=detector, settings=PipelineSettings(max_faces=max_faces))
    try:
        base, _ = _frames(built, path, 1, 1)
        test, classified = _frames(built, path, every, macro_every)
    finally:
        built.pipeline.detector.close()
    agree = box_ok = label_ok = crop_ok = face_labels = n_faces = 0
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
        same = [fa[2] == b[j][2] for fa, j in zip(a, pairs, strict=True)]
        labels, face_labels, n_faces = all(same), face_labels + sum(same), n_faces + len(same)
        box_ok, crop_ok, label_ok = box_ok + boxes, crop_ok + crops, label_ok + labels
        agree += boxes and crops and labels
    n = len(base)
    return {
        "source": str(source),
        "frames": n,
        "detect_every": every,
        "macro_every": macro_every,
        "macro_classified": classified,
        "agree": agree / n if n else 0.0,
        "boxes": box_ok / n if n else 0.0,
        "crops": crop_ok / n if n else 0.0,
        "labels": label_ok / n if n else 0.0,
        "face_labels": face_labels / n_faces if n_faces else 1.0,
        "median_iou": float(np.median(ious)) if ious else None,
        "thresholds": {"min_iou": min_iou, "max_eye_shift": max_eye_shift},
    }
