"""emonas-edge: searched facial-expression networks, made fast and verifiable on edge devices.

The public API mirrors the CLI, one function per command::

    import emonas_edge as ee
    config = ee.load_genotype("emonas-macro")        # built-in name, JSON, DARTS text or checkpoint
    model = ee.create_model(config)
    result = ee.export_onnx(config, model, "export/")
    print(ee.model_info(result.path)["classes"])
"""

__version__ = "0.1.0"

from .api import load_genotype, load_model, model_info  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .config import ModelConfig  # noqa: E402
from .errors import CheckFailed, UserError  # noqa: E402
from .export.onnx import export_onnx  # noqa: E402
from .nn import create_model  # noqa: E402

__all__ = [
    "__version__",
    "ModelConfig",
    "load_genotype",
    "load_model",
    "create_model",
    "export_onnx",
    "model_info",
    "save_checkpoint",
    "load_checkpoint",
    "UserError",
    "CheckFailed",
]
