"""The real-time pipeline: source -> detect -> align -> track -> macro / micro -> render and sinks.

``build_pipeline`` and ``run`` (:mod:`.runner`) are what the CLI and the scripts in ``demos/``
call; the per-frame data path is :mod:`.loop`.
"""

from .loop import FrameResult, Pipeline, PipelineSettings, RunSummary
from .runner import LoadedPipeline, RunSettings, build_pipeline, run
from .sources import SourceLost, open_source

__all__ = [
    "build_pipeline",
    "run",
    "LoadedPipeline",
    "RunSettings",
    "Pipeline",
    "PipelineSettings",
    "FrameResult",
    "RunSummary",
    "open_source",
    "SourceLost",
]
