"""Leave-one-subject-out evaluation, the MEGC protocol for micro-expression datasets.

Each subject is held out once; a fresh network is trained on the others. Per-fold figures are
reported, and the overall UF1/UAR are computed on all held-out predictions pooled, as MEGC2019
scores them (per-fold means would over-weight subjects with one or two clips).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..data.datasets import ArrayDataset
from ..data.micro import loso_folds
from ..fileio import write_json_atomic
from ..metrics import classification_report
from ..nn import create_model
from .trainer import TrainSettings, train


def run_loso(
    config: ModelConfig,
    ds: ArrayDataset,
    subjects: list[str],
    out_dir,
    settings: TrainSettings,
    log: Callable[[str], None] = print,
) -> dict:
    from ..data.preprocess import Preprocessor

    out = Path(out_dir)
    pre = Preprocessor(config)
    y_true, y_pred, folds = [], [], []
    for subject, tr, te in loso_folds(subjects):
        torch.manual_seed(settings.seed)
        model = create_model(config)
        fold_dir = out / f"fold-{subject}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        train(config, model, ds.subset(tr), None, fold_dir, copy.copy(settings), log=lambda m: None)
        test = ds.subset(te)
        imgs = torch.from_numpy(test.images)
        imgs = imgs.unsqueeze(1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2).contiguous()
        model.cpu()
        # torch's stubs leave memory_format out of Module.to's overloads; it is documented and works
        model = model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
        with torch.inference_mode():
            p = model(torch.from_numpy(pre.normalize(test.images))).argmax(1).numpy()
        rep = classification_report(test.labels, p, config.classes)
        y_true.append(test.labels)
        y_pred.append(p)
        folds.append(
            {
                "subject": subject,
                "test_clips": int(len(te)),
                "accuracy": rep["accuracy"],
                "uf1": rep["uf1"],
                "uar": rep["uar"],
            }
        )
        log(
            f"fold {subject}: {len(te)} clips, accuracy {rep['accuracy']:.3f} UF1 {rep['uf1']:.3f} UAR {rep['uar']:.3f}"
        )
    overall = classification_report(np.concatenate(y_true), np.concatenate(y_pred), config.classes)
    summary = {"protocol": "loso", "folds": folds, "overall": overall}
    write_json_atomic(out / "loso.json", summary)
    return summary
