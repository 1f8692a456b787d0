from .factory import count_params, create_model
from .ops import OPS, known_ops

__all__ = ["create_model", "count_params", "OPS", "known_ops"]
