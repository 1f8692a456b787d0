"""Reference networks re-implemented for same-machine, same-runtime comparisons.

``MiniXception`` is the model the `fer` package ships (Arriaga et al., 2017, "Real-time
convolutional neural networks for emotion and gender classification"): 64x64 gray input,
~58k parameters. Timing it in ONNX Runtime beside our model removes runtime differences
(fer runs it through TFLite) from the comparison.
"""

from __future__ import annotations

import torch
from torch import nn


class _SepConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False)
        )


class _Module(nn.Module):
    def __init__(self, c_in: int, c: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=2, bias=False), nn.BatchNorm2d(c))
        self.main = nn.Sequential(
            _SepConv(c_in, c),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            _SepConv(c, c),
            nn.BatchNorm2d(c),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward(self, x):
        return self.main(x) + self.residual(x)


class MiniXception(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(_Module(8, 16), _Module(16, 32), _Module(32, 64), _Module(64, 128))
        self.head = nn.Conv2d(128, num_classes, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.head(self.blocks(self.stem(x)))).flatten(1)


def minixception_onnx(path) -> tuple:
    """``(path, one 1x1x64x64 input)``: mini-Xception exported and simplified as our models are, and the
    bundled real face prepared the way `fer` feeds it (gray 64x64, scaled to [-1, 1])."""
    from pathlib import Path

    import cv2
    import onnx
    import onnxsim

    from emonas_edge.export.onnx import torch_to_onnx
    from emonas_edge.export.parity import ASSETS

    path = Path(path)
    torch_to_onnx(MiniXception().eval(), (1, 64, 64), path, 18, None)
    simplified, _ = onnxsim.simplify(onnx.load(str(path)))
    onnx.save(simplified, str(path))
    face = cv2.imread(str(ASSETS / "astronaut_face.png"))
    gray64 = cv2.resize(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
    return path, ((gray64.astype("float32") / 255.0 - 0.5) / 0.5)[None, None]


def session(path, threads: int):
    """A plain ONNX Runtime CPU session for files without emonas-edge metadata (the baseline)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def minixception_runner(folder, threads: int = 1):
    """A zero-argument function running one batch-1 mini-Xception inference (fp32, as fer runs it),
    the baseline every latency table times its rows against; its ONNX file goes into ``folder``."""
    from pathlib import Path

    path, x = minixception_onnx(Path(folder) / "minixception.onnx")
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})
