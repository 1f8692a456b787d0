"""Classification metrics used for expressions: accuracy, per-class P/R/F1, UF1 and UAR.

UF1 (unweighted F1, the mean of per-class F1) and UAR (unweighted average recall) are the
MEGC micro-expression metrics; they also expose what accuracy hides on FER2013's imbalanced
classes (disgust is 1.5% of it).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(np.asarray(y_true) * n + np.asarray(y_pred), minlength=n * n).reshape(n, n)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict:
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # classes absent from the data don't drag unweighted means down
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "uf1": float(f1[present].mean()) if present.any() else 0.0,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "samples": total,
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Overlap of two inclusive frame intervals over their union (the MEGC spotting rule's measure)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    union = max(a[1], b[1]) - min(a[0], b[0]) + 1
    return max(inter, 0) / union if union > 0 else 0.0


def spotting_scores(spotted: list[tuple[int, int]], truth: list[tuple[int, int]], iou: float = 0.5) -> dict:
    """MEGC spotting: a spotted interval is a true positive when it overlaps a not yet matched ground-truth
    interval with IoU >= ``iou`` (each truth matched once, best overlaps first); precision, recall and F1 from the
    counts. Counts are returned so scores can be pooled over videos (the challenge pools, then divides)."""
    pairs = sorted(
        ((interval_iou(s, t), i, j) for i, s in enumerate(spotted) for j, t in enumerate(truth)), reverse=True
    )
    used_s: set[int] = set()
    used_t: set[int] = set()
    for overlap, i, j in pairs:
        if overlap >= iou and i not in used_s and j not in used_t:
            used_s.add(i)
            used_t.add(j)
    return f1_from_counts(len(used_s), len(spotted), len(truth))


def f1_from_counts(tp: int, spotted: int, truth: int) -> dict:
    precision = tp / spotted if spotted else 0.0
    recall = tp / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "spotted": spotted, "truth": truth, "precision": precision, "recall": recall, "f1": f1}
