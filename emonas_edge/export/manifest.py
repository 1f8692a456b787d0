"""The manifest written beside every artifact: what it is, its hash, how it was made and on what.

One function builds the part every manifest shares (identity, size, hash, environment, time),
so an fp32 export and a derived fp16/INT8 artifact can be read by the same code.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..environment import environment
from ..fileio import sha256_file

MANIFEST_FORMAT = "emonas-manifest/1"


def make_manifest(file: Path, artifact_name: str, precision: str, model: dict, **fields) -> dict:
    """The manifest of ``file`` (hashed and sized as it is now), published as ``artifact_name``.

    ``file`` is usually the hidden temporary the artifact is written to before the rename;
    ``fields`` are what this kind of artifact adds (parity, calibration, selection, ...).
    """
    return {
        "format": MANIFEST_FORMAT,
        "artifact": artifact_name,
        "sha256": sha256_file(file),
        "bytes": file.stat().st_size,
        "export_format": "onnx",
        "precision": precision,
        "model": model,
        **fields,
        "environment": environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
