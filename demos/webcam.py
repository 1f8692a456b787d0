"""Webcam in a few lines of the Python API: faces, tracks and expressions, drawn in a window.

    .venv/bin/python demos/webcam.py [CAMERA_INDEX]

q quits. Needs a display and a camera (``emonas-edge demo`` is the same with pause/snapshot keys).
"""

import sys

import cv2

from emonas_edge.pipeline import build_pipeline, run

built = build_pipeline("emonas-macro", "emonas-micro")  # an untrained head stays off, and says so
print("\n".join(built.notes))


def show(result, image):
    cv2.imshow("emonas-edge", image)
    return cv2.waitKey(1) & 0xFF != ord("q")  # False stops the run


summary = run(sys.argv[1] if len(sys.argv) > 1 else 0, built, on_frame=show)
print(summary.to_json())
