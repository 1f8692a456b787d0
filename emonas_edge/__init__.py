"""emonas-edge: searched facial-expression networks, made fast and verifiable on edge devices.

The public API mirrors the CLI, one function per command::

    import emonas_edge as ee
    faces = ee.analyze("photo.jpg")                   # boxes, class probabilities, top label per face
    config = ee.load_genotype("emonas-macro")        # built-in name, JSON, DARTS text or checkpoint
    model = ee.create_model(config)
    result = ee.export_onnx(config, model, "export/")
    print(ee.model_info(result.path)["classes"])
"""

__version__ = "0.1.0"

# Lazy attributes: ``import emonas_edge`` (and the runtime pipeline, which runs ONNX Runtime)
# must not pay for importing PyTorch (~300 MB of memory) unless something needs it.
_LAZY = {
    "load_genotype": ".resolve",
    "load_model": ".resolve",
    "model_info": ".resolve",
    "list_models": ".resolve",
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "ModelConfig": ".config",
    "CheckFailed": ".errors",
    "UserError": ".errors",
    "export_onnx": ".export.onnx",
    "export_artifact": ".export.artifact",
    "ArtifactSettings": ".export.artifact",
    "create_model": ".nn",
    "analyze": ".pipeline.analyze",
    "Analyzer": ".pipeline.analyze",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'emonas_edge' has no attribute {name!r}")


__all__ = [
    "__version__",
    "analyze",
    "Analyzer",
    "ModelConfig",
    "load_genotype",
    "load_model",
    "create_model",
    "export_onnx",
    "export_artifact",
    "ArtifactSettings",
    "model_info",
    "list_models",
    "save_checkpoint",
    "load_checkpoint",
    "UserError",
    "CheckFailed",
]
