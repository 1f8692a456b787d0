"""The one preprocessing: image(s) -> the network's input tensor, driven by the model config.

Training, evaluation, export parity/calibration and the real-time pipeline all call this, so
a model always sees at deployment exactly what it saw in training. Images are OpenCV arrays:
``HxW`` gray or ``HxWx3`` BGR, uint8.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import ModelConfig


class Preprocessor:
    def __init__(self, config: ModelConfig):
        self.size = config.input_size
        self.gray = config.preprocess.grayscale
        c = config.in_channels
        mean = np.asarray(config.preprocess.mean, np.float32).reshape(c, 1, 1)
        std = np.asarray(config.preprocess.std, np.float32).reshape(c, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + shift, computed once
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (-mean / std).astype(np.float32)
        # the same for pixels already in [0, 1] (training augments in that range)
        self.unit_scale = (1.0 / std).astype(np.float32)
        self.channels = c

    def to_model_pixels(self, image: np.ndarray) -> np.ndarray:
        """Colour-convert and resize to the model's size; uint8 HxW or HxWx3 (RGB)."""
        img = image
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if self.gray:
            if img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        if (h, w) != (self.size, self.size):
            interp = cv2.INTER_AREA if h > self.size or w > self.size else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.size, self.size), interpolation=interp)
        return img

    def normalize(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 model-size pixels (N,H,W) or (N,H,W,3) -> float32 NCHW."""
        if pixels.ndim == 3:
            pixels = pixels[:, None]
        else:
            pixels = pixels.transpose(0, 3, 1, 2)
        if out is None:
            out = np.empty(pixels.shape, np.float32)
        np.multiply(pixels, self.scale, out=out, dtype=np.float32)
        out += self.shift
        return out

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        return self.normalize(np.stack([self.to_model_pixels(i) for i in images]))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def read_image(path) -> np.ndarray | None:
    """BGR or gray uint8 (16-bit images are scaled down, alpha dropped), or None if unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_ANYCOLOR)
