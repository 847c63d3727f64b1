"""A model exported by `convkit export`, run with onnxruntime alone: no torch is imported here,
so predicting from an .onnx file works where only numpy and onnxruntime are installed.

The file's graph takes uint8 images (N, C, H, W) exactly as the dataset stores them and gives
softmax probabilities (N, classes); the metadata written beside the graph (classes, input
shape, preprocessing, provenance) is read and checked when the file is opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from convkit.errors import ConvkitError

INSTALL = "pip install 'convkit[export]'"
# metadata_props keys every convkit export writes; a file without them was not made by convkit
REQUIRED = ("convkit_version", "classes", "input_shape", "preprocessing")
BATCH = 256  # images per onnxruntime call: bounds memory for large inputs


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConvkitError(
            f"running an ONNX model needs onnxruntime, which is not installed; install it "
            f"with: {INSTALL}"
        ) from None
    return onnxruntime


class OnnxClassifier:
    """An exported classifier: `.classes`, `.image_shape` (C, H, W), `.metadata`, and
    `.probabilities(uint8 images)`. Opening a file that is not ONNX, or not a convkit export,
    is a ConvkitError that names the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.session = _open_session(self.path)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED if k not in self.metadata]
        if missing:
            what = "not exported by convkit" if "convkit_version" in missing else "damaged"
            raise ConvkitError(
                f"{self.path}: {what}: its metadata lacks {', '.join(missing)}; export the run "
                f"again with `convkit export RUN`"
            )
        self.classes: tuple[str, ...] = tuple(self._json("classes", list))
        self.image_shape: tuple[int, int, int] = tuple(self._json("input_shape", list))
        self.preprocessing: dict[str, Any] = self._json("preprocessing", dict)
        self.input_name, self.output_name = self._check_signature()

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.path)!r})"

    @property
    def model_name(self) -> str | None:
        """The registered model the run trained (None for an export of a bare model)."""
        return self.metadata.get("model")

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("dataset")

    @property
    def fit(self) -> str:
        """How an image of another shape meets the input (convkit.data.images.FITS); files
        exported before convkit recorded it stretched every image."""
        return json.loads(self.metadata.get("conversion", "{}")).get("fit", "stretch")

    @property
    def epoch(self) -> int | None:
        """The epoch whose weights were exported."""
        return json.loads(self.metadata.get("epoch", "null"))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W), as the dataset stores them -> float32 (N, classes)."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            got = (
                f"{images.dtype} {images.shape}"
                if isinstance(images, np.ndarray)
                else type(images).__name__
            )
            raise ConvkitError(f"expected a uint8 numpy array (N, C, H, W), received {got}")
        if images.shape[1:] != self.image_shape:
            raise ConvkitError(
                f"{self.path} takes images (N, {', '.join(map(str, self.image_shape))}), "
                f"received {images.shape}"
            )
        images = np.ascontiguousarray(images)
        out = [
            self.session.run([self.output_name], {self.input_name: images[i : i + BATCH]})[0]
            for i in range(0, len(images), BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def _json(self, key: str, kind: type) -> Any:
        try:
            value = json.loads(self.metadata[key])
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, kind):
            raise ConvkitError(
                f"{self.path}: damaged metadata: {key} should hold a JSON {kind.__name__}, "
                f"found {self.metadata[key][:60]!r}; export the run again"
            )
        return value

    def _check_signature(self) -> tuple[str, str]:
        """(input name, output name), checked against the metadata: one uint8 input
        (batch, C, H, W), one output (batch, classes)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        ok = len(inputs) == 1 and len(outputs) == 1 and inputs[0].type == "tensor(uint8)"
        ok = ok and tuple(inputs[0].shape[1:]) == self.image_shape
        if not ok or outputs[0].shape[1:] != [len(self.classes)]:
            found = [(i.name, i.type, i.shape) for i in inputs]
            raise ConvkitError(
                f"{self.path}: its graph does not match its metadata: expected one uint8 input "
                f"(N, {', '.join(map(str, self.image_shape))}) and {len(self.classes)} class "
                f"probabilities out, found inputs {found}"
            )
        return inputs[0].name, outputs[0].name


def _open_session(path: Path):
    ort = _onnxruntime()
    if not path.is_file():
        raise ConvkitError(f"{path} {'is not a file' if path.exists() else 'does not exist'}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisation
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvkitError(
            f"{path}: not an ONNX model onnxruntime can load ({first[:200]}); export a run "
            f"with `convkit export RUN`"
        ) from None
