"""One interface to run any artifact: load it, read its input spec and labels, run a batch.

Evaluation, the pipeline, profiling and comparison go through :func:`load_backend`; nothing
else opens a model file, so a checkpoint, an ONNX file (fp32 or quantized) and later a TensorRT
engine are scored and used identically.
"""

from .backend import Backend
from .loader import load_backend

__all__ = ["Backend", "load_backend"]
