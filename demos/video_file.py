"""A video file through the pipeline with the Python API: per-frame results, plus JSONL and video.

    .venv/bin/python demos/video_file.py VIDEO [OUT_PREFIX]

Without VIDEO it makes the bundled sample clip (public-domain astronaut photo) first.
"""

import sys
from pathlib import Path

from emonas_edge.pipeline import build_pipeline, run
from emonas_edge.pipeline.sample import make_sample_video

video = Path(sys.argv[1]) if len(sys.argv) > 1 else make_sample_video("export/demo/astronaut.mp4")
prefix = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("export/demo") / video.stem

built = build_pipeline()  # defaults: emonas-macro per frame, emonas-micro per window (off while untrained)


def each(result, image):
    for face in result.faces:
        if face.macro is not None and "macro" not in face.untrained:
            label = result.macro_classes[face.macro.argmax()]
            print(f"frame {result.index:4d}  track {face.track}  {label:<8} {face.macro.max():.2f}")


summary = run(video, built, jsonl=f"{prefix}.jsonl", save_video=f"{prefix}-annotated.mp4", on_frame=each)
print(summary.to_json())
