"""How many threads each library may use in the pipeline: decided once, from the cores and the stages.

Why one place: OpenCV, FFmpeg's decoder (through OpenCV), ONNX Runtime and PyTorch each size their thread
pools to the whole machine, and the pipeline itself runs two stages at once (decode + detect of the next frames
beside align ... classify of frame n, pipeline/reader.py). Left alone, every library's pool competes with the
other stage for the same cores, and ONNX Runtime's pool spin-waits between kernels, burning the core the other
stage needs. So each stage gets ``cores // stages`` threads per library (one each on two cores), ONNX Runtime
never spins, and `run` and `profile-pipeline` print what was chosen. ``--threads N`` overrides it for every
library.

MediaPipe's Tasks API exposes no thread setting: its detector runs with its own.

The GIL: both stages run Python between native calls, and a thread coming back from one (a decoded frame, a
Lucas-Kanade step) gets the GIL only when the holder releases it or after the switch interval (5 ms by default,
longer than a whole frame's align stage). The reader thread makes about ten such calls a frame, each possibly
waiting out the other stage's Python. The plan lowers the interval, process-wide: to 0.5 ms first (single_face.mp4,
2 cores: the align stage's in-pipeline median fell from 1.8-2.0x to 1.5-1.7x its cost alone, frames/s +5%),
then to 0.05 ms once the reader ran ahead (benchmarks/pipeline_fps.py in four alternating pairs: the ratio to
decoding rose in all four, by 0.002-0.025; 0.02 ms measured the same within noise).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

from .errors import UserError

PIPELINE_STAGES = 2  # decode + detect | align, track, classify, outputs (pipeline/loop.py)


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    cores: int
    opencv: int
    onnxruntime: int  # intra-op threads per session (inter-op: 1)
    torch: int
    spinning: bool  # ONNX Runtime's intra-op pool spin-waiting between kernels
    chosen_by: str
    decode: int = 1  # FFmpeg's threads per opened video (OpenCV's capture; its default is every core)
    mediapipe: str = "its own (not settable)"
    switch_interval_ms: float = 0.05  # Python's GIL switch interval (sys.setswitchinterval)

    def apply(self) -> None:
        """Set OpenCV's pool and, if PyTorch is already loaded, its pool (never imported just for this)."""
        import cv2

        cv2.setNumThreads(self.opencv)
        # read by OpenCV's FFmpeg backend at each capture's opening: later opens (files, streams) take it
        os.environ["OPENCV_FFMPEG_THREADS"] = str(self.decode)
        sys.setswitchinterval(self.switch_interval_ms / 1000)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(self.torch)

    def describe(self) -> str:
        spin = "" if self.spinning else ", no spinning"
        return (
            f"OpenCV {self.opencv}, video decoding {self.decode}, ONNX Runtime {self.onnxruntime}{spin}, "
            f"PyTorch {self.torch}, MediaPipe {self.mediapipe}; "
            f"GIL switch {self.switch_interval_ms:g} ms ({self.chosen_by})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def plan_threads(threads: int | None = None, stages: int = PIPELINE_STAGES, cores: int | None = None) -> ThreadPlan:
    """``threads`` None: ``cores // stages`` per library (at least 1); else exactly ``threads`` each."""
    cores = cores or usable_cores()
    if threads is None:
        n, chosen = max(1, cores // stages), f"auto: {cores} cores, {stages} pipeline stages"
    else:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"--threads must be a whole number >= 1, got {threads!r}")
        n, chosen = threads, f"--threads {threads}"
    return ThreadPlan(cores=cores, opencv=n, onnxruntime=n, torch=n, spinning=False, chosen_by=chosen, decode=n)
