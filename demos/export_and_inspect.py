"""The Python API in a few lines: genotype -> network -> verified ONNX -> ONNX Runtime.

    .venv/bin/python demos/export_and_inspect.py [GENOTYPE]

``export_artifact`` is what ``emonas-edge export`` runs; ``ArtifactSettings`` holds its options
(precision, calibration, accuracy gate, TensorRT engine), e.g. ``precision="fp16"``.

GENOTYPE is a built-in name (default emonas-macro), a genotype JSON or a DARTS text file.
"""

import json
import sys

import cv2
import onnxruntime as ort

import emonas_edge as ee
from emonas_edge.data.preprocess import Preprocessor

config, model, weights = ee.load_model(sys.argv[1] if len(sys.argv) > 1 else "emonas-macro")
result = ee.export_artifact(config, model, ee.ArtifactSettings(output="export/demo-api"), weights=weights).onnx
print(f"{result.path}: parity max |diff| {result.parity.max_abs_diff:.2e}, passed={result.parity.passed}")

session = ort.InferenceSession(str(result.path))
meta = session.get_modelmeta().custom_metadata_map
classes, trained = json.loads(meta["classes"]), meta["trained"] == "true"
face = cv2.imread("emonas_edge/assets/astronaut_face.png")
logits = session.run(None, {"input": Preprocessor(config)([face])})[0][0]
if trained:
    print("prediction:", classes[int(logits.argmax())])
else:
    print("untrained model (random weights): logits", logits.round(3), "are not a prediction")
