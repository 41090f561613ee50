"""An ONNX Runtime session wrapped with the bundle's pre- and post-processing."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import onnxruntime as ort

from robot_model_deployer.bundle.loader import BundleDir
from robot_model_deployer.bundle.manifest import Manifest, Task, TensorType
from robot_model_deployer.inference.dense import DENSE_TASKS, decode_dense
from robot_model_deployer.inference.layout_check import LayoutMismatch, check_dense_layout
from robot_model_deployer.inference.postprocess import OutputSpecError, Prediction, classify, detect
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor

_ORT_TYPES = {TensorType.FLOAT32: "tensor(float)", TensorType.FLOAT16: "tensor(float16)",
              TensorType.UINT8: "tensor(uint8)"}


class ModelLoadError(ValueError):
    """The model file cannot be served as the manifest describes it."""


class OutputLayoutError(ModelLoadError):
    """The model's outputs do not fit the declared layout; the message names the manifest field to fix."""


class ModelSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the engine uses.

    Another runtime (OpenVINO, see inference/openvino_session.py) serves a
    compiled artifact through the same pre- and post-processing by
    implementing these four methods.
    """

    def get_inputs(self) -> Sequence[Any]: ...

    def get_outputs(self) -> Sequence[Any]: ...

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def get_providers(self) -> list[str]: ...


class InferenceEngine:
    """Runs one model on camera images and returns Predictions.

    Construction loads and checks the model against the manifest and warms it
    up, so a model that cannot serve fails here, never on the first frame.
    ``session`` serves an already-built runtime (e.g. an OpenVINO compiled
    model) instead of creating an ONNX Runtime session from ``model_path``.
    """

    def __init__(self, model_path: str | Path, manifest: Manifest, labels: Sequence[str] = (),
                 providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
                 session_options: ort.SessionOptions | None = None, warmup_runs: int = 3,
                 session: ModelSession | None = None) -> None:
        self.manifest = manifest
        self.labels = tuple(labels)
        self.model_path = Path(model_path)
        if session is not None:
            self.session: ModelSession = session
        else:
            try:
                self.session = ort.InferenceSession(str(self.model_path), sess_options=session_options,
                                                    providers=list(providers))
            except Exception as exc:  # ORT raises several unrelated exception types for bad files.
                raise ModelLoadError(f"{self.model_path.name} is not a model ONNX Runtime can load: "
                                     f"{first_line(exc)}") from None
        self._input = self._check_input()
        self._outputs = self._output_names()
        self._preprocess = Preprocessor(manifest.input)
        self.warm_up(warmup_runs)

    @classmethod
    def from_bundle(cls, bundle: BundleDir, **kwargs: Any) -> "InferenceEngine":
        return cls(bundle.model_path, bundle.manifest, bundle.labels, **kwargs)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def input_name(self) -> str:
        """The model input the preprocessed image is fed to (for benchmarks that skip pre-processing)."""
        return self._input

    def infer(self, image: np.ndarray, pixel_format: PixelFormat = PixelFormat.RGB8) -> Prediction:
        """Pre-process, run and post-process one HxW(xC) uint8 image."""
        start = time.perf_counter()
        tensor, transform = self._preprocess(image, pixel_format)
        outputs = self.session.run(self._outputs, {self._input: tensor})
        spec = self.manifest.input
        if self.manifest.task is Task.CLASSIFICATION:
            top = classify(outputs[0], self.manifest.classification, self.labels)
            return Prediction(top.class_ids, top.scores, top.labels, inference_ms=_ms_since(start))
        if self.manifest.task in DENSE_TASKS:
            dense = decode_dense(outputs, self.manifest, self.labels, transform, image.shape[1], image.shape[0])
            return dataclasses.replace(dense, inference_ms=_ms_since(start))
        boxes, scores, class_ids, labels = detect(outputs, self.manifest.detection, self.labels,
                                                  spec.width, spec.height)
        boxes = transform.boxes_to_image(boxes, image.shape[1], image.shape[0])
        return Prediction(class_ids, scores, labels, boxes, inference_ms=_ms_since(start))

    def warm_up(self, runs: int = 3) -> None:
        """Run a few grey frames so the first real frame is not slow; checks the outputs too."""
        spec = self.manifest.input
        frame = np.full((spec.height, spec.width, 3), 127, dtype=np.uint8)
        try:
            if self.manifest.task in DENSE_TASKS:
                tensor = self._preprocess(frame, PixelFormat.RGB8)[0]
                check_dense_layout(self.manifest, self.session.run(self._outputs, {self._input: tensor}), self.labels)
            for _ in range(max(1, runs)):
                self.infer(frame)
        except LayoutMismatch as exc:
            raise OutputLayoutError(f"{self.model_path.name}: {exc}") from None
        except OutputSpecError as exc:
            raise ModelLoadError(f"{self.model_path.name}: {exc}") from None
        except Exception as exc:
            raise ModelLoadError(f"{self.model_path.name} failed on a test frame: {first_line(exc)}") from None
        if self.manifest.task is Task.CLASSIFICATION and self.labels:
            scores = self.session.run(self._outputs[:1], {self._input: self._preprocess(frame, PixelFormat.RGB8)[0]})
            classes = int(scores[0].size)
            if classes != len(self.labels):
                raise ModelLoadError(f"{self.model_path.name} scores {classes} classes but the labels file "
                                     f"{self.manifest.labels} lists {len(self.labels)}")

    def _check_input(self) -> str:
        spec = self.manifest.input
        inputs = self.session.get_inputs()
        if spec.name:
            matching = [i for i in inputs if i.name == spec.name]
            if not matching:
                raise ModelLoadError(f"model has no input named '{spec.name}' "
                                     f"(it has {', '.join(i.name for i in inputs)})")
            model_input = matching[0]
        elif len(inputs) == 1:
            model_input = inputs[0]
        else:
            raise ModelLoadError(f"model has {len(inputs)} inputs; name the image input in manifest input.name")
        if model_input.type != _ORT_TYPES[spec.dtype]:
            raise ModelLoadError(f"model input '{model_input.name}' is {model_input.type} but the manifest "
                                 f"says input.dtype {spec.dtype.value}")
        expected = spec.shape
        shape = model_input.shape
        if len(shape) != len(expected):
            raise ModelLoadError(f"model input '{model_input.name}' has shape {shape}, the manifest describes "
                                 f"{list(expected)} ({spec.layout.value})")
        for axis, (have, want) in enumerate(zip(shape, expected)):
            if isinstance(have, int) and have > 0 and have != want:
                raise ModelLoadError(f"model input '{model_input.name}' has shape {shape}, the manifest describes "
                                     f"{list(expected)} ({spec.layout.value}): axis {axis} differs")
        return model_input.name

    def _output_names(self) -> list[str]:
        names = [o.name for o in self.session.get_outputs()]
        if self.manifest.task is Task.CLASSIFICATION:
            wanted = [self.manifest.classification.output_name] if self.manifest.classification.output_name else []
        elif self.manifest.task is Task.SEGMENTATION:
            wanted = [self.manifest.segmentation.output_name] if self.manifest.segmentation.output_name else []
        elif self.manifest.task is Task.INSTANCE_SEGMENTATION:
            det, protos = self.manifest.detection, self.manifest.instances.protos_output
            wanted = [n for n in (det.boxes_output, protos) if n]
            if protos and not det.boxes_output:
                # The protos go second; the detections are the other output.
                others = [n for n in names if n != protos]
                wanted = others[:1] + [protos]
        else:
            det = self.manifest.detection
            wanted = [n for n in (det.boxes_output, det.scores_output) if n]
        for name in wanted:
            if name not in names:
                raise ModelLoadError(f"model has no output named '{name}' (it has {', '.join(names)})")
        return wanted + [n for n in names if n not in wanted]


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (runtimes raise pages), or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
