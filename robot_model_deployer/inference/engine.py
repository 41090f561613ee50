"""An ONNX Runtime session wrapped with the bundle's pre- and post-processing."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import onnxruntime as ort

from robot_model_deployer.bundle.loader import BundleDir
from robot_model_deployer.bundle.manifest import DetectionFormat, Manifest, Task, TensorType
from robot_model_deployer.inference.dense import DENSE_TASKS, decode_dense
from robot_model_deployer.inference.detection import Candidates, decode_detections, output_order, select
from robot_model_deployer.inference.layout_check import LayoutMismatch, check_dense_layout
from robot_model_deployer.inference.layouts import ORIG_TARGET_SIZES, Guess, detection_mismatch, guess_layout
from robot_model_deployer.inference.postprocess import OutputSpecError, Prediction, classify, label_for
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor

_ORT_TYPES = {TensorType.FLOAT32: "tensor(float)", TensorType.FLOAT16: "tensor(float16)",
              TensorType.UINT8: "tensor(uint8)"}
_SIZE_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class ModelLoadError(ValueError):
    """The model file cannot be served as the manifest describes it.

    ``section``: the manifest section that is wrong (``input``, ``detection``, ``classification``, ``labels``).
    """

    def __init__(self, message: str, section: str = "input") -> None:
        super().__init__(message)
        self.section = section


class OutputLayoutError(ModelLoadError):
    """The model's outputs do not fit the declared layout; the message names the manifest field to fix."""


# The manifest section (and its field naming an output) that each non-detection task reads its outputs by.
OUTPUT_FIELDS = {Task.CLASSIFICATION: ("classification", "output_name"),
                  Task.SEGMENTATION: ("segmentation", "output_name"),
                  Task.INSTANCE_SEGMENTATION: ("instances", "protos_output"),
                  Task.POSE: ("pose", "")}


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
        self._extra_feeds = self._size_feed()
        self._order_error: OutputSpecError | None = None
        try:
            self._outputs = self._output_names()
        except OutputSpecError as exc:
            # Raised after one run, unless the layout check explains it better (e.g. "looks like YOLOv8").
            self._outputs, self._order_error = [o.name for o in self.session.get_outputs()], exc
        self._preprocess = Preprocessor(manifest.input)
        self.layout_guess: Guess | None = None
        """The layout the outputs look like (set by warm_up), for advice when values are wrong."""
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

    @property
    def extra_feeds(self) -> dict[str, np.ndarray]:
        """Inputs fed beside the image on every run (RT-DETR's orig_target_sizes), for callers that run the
        session themselves (calibration, benchmarks)."""
        return dict(self._extra_feeds)

    def feeds(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Every input of one run on a preprocessed image tensor."""
        return {self._input: tensor, **self._extra_feeds}

    def infer(self, image: np.ndarray, pixel_format: PixelFormat = PixelFormat.RGB8) -> Prediction:
        """Pre-process, run and post-process one HxW(xC) uint8 image."""
        start = time.perf_counter()
        tensor, transform = self._preprocess(image, pixel_format)
        outputs = self._run(tensor)
        if self.manifest.task is Task.CLASSIFICATION:
            top = classify(outputs[0], self.manifest.classification, self.labels)
            return Prediction(top.class_ids, top.scores, top.labels, inference_ms=_ms_since(start))
        if self.manifest.task in DENSE_TASKS:
            dense = decode_dense(outputs, self.manifest, self.labels, transform, image.shape[1], image.shape[0])
            return dataclasses.replace(dense, inference_ms=_ms_since(start))
        kept = select(self._decode(outputs), self.manifest.detection)
        boxes = transform.boxes_to_image(kept.boxes, image.shape[1], image.shape[0])
        # A box wholly in the letterbox padding (or off the crop) clips to nothing: not a detection in the image.
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        class_ids, scores, boxes = kept.class_ids[inside], kept.scores[inside], boxes[inside]
        labels = tuple(label_for(int(i), self.labels) for i in class_ids)
        return Prediction(class_ids, scores, labels, boxes, inference_ms=_ms_since(start))

    def candidates(self, image: np.ndarray, pixel_format: PixelFormat = PixelFormat.RGB8) -> Candidates:
        """A detector's decoded candidates before threshold and NMS, in input pixels (for the model check)."""
        return self._decode(self._run(self._preprocess(image, pixel_format)[0]))

    def outputs(self, image: np.ndarray, pixel_format: PixelFormat = PixelFormat.RGB8) -> list[np.ndarray]:
        """One image's raw model outputs, in the order the decoders read them (for the model check)."""
        return self._run(self._preprocess(image, pixel_format)[0])

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._outputs, self.feeds(tensor))

    def _decode(self, outputs: Sequence[np.ndarray]) -> Candidates:
        spec = self.manifest.input
        return decode_detections(outputs, self.manifest.detection, spec.width, spec.height)

    def warm_up(self, runs: int = 3) -> None:
        """Run a few grey frames so the first real frame is not slow; checks the outputs too."""
        spec = self.manifest.input
        frame = np.full((spec.height, spec.width, 3), 127, dtype=np.uint8)
        try:
            self._check_layout(self._run(self._preprocess(frame, PixelFormat.RGB8)[0]))
            for _ in range(max(1, runs)):
                self.infer(frame)
        except LayoutMismatch as exc:
            raise OutputLayoutError(f"{self.model_path.name}: {exc}",
                                    OUTPUT_FIELDS[self.manifest.task][0]) from None
        except OutputSpecError as exc:
            raise ModelLoadError(f"{self.model_path.name}: {exc}", exc.section) from None
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{self.model_path.name} failed on a test frame: {first_line(exc)}") from None

    def _check_layout(self, outputs: Sequence[np.ndarray]) -> None:
        """Refuse outputs that do not fit the declared layout (or the labels), naming the likely fix."""
        spec = self.manifest.input
        inputs = [i.name for i in self.session.get_inputs()]
        shapes = [(name, tuple(np.shape(o))) for name, o in zip(self._outputs, outputs)]
        classes = len(self.labels) if self.labels else None
        self.layout_guess = guess_layout(inputs, shapes, spec.width, spec.height, classes)
        if self.manifest.task in DENSE_TASKS:
            check_dense_layout(self.manifest, outputs, self.labels)
            return
        if self.manifest.task is Task.DETECTION:
            mismatch = detection_mismatch(self.manifest.detection, inputs, shapes, spec.width, spec.height,
                                          classes, self.manifest.labels)
            if mismatch is not None:
                raise OutputSpecError(mismatch.message, mismatch.section)
            if self._order_error is not None:
                raise self._order_error
            return
        try:
            classify(outputs[0], self.manifest.classification, ())
        except OutputSpecError as exc:
            guess = self.layout_guess
            advice = f"; {guess.advice(Task.CLASSIFICATION)}" if guess else ""
            raise OutputSpecError(f"{exc}{advice}", exc.section) from None
        count = int(np.size(outputs[0]))
        if classes is not None and count != classes:
            raise OutputSpecError(f"model scores {count} classes but the labels file {self.manifest.labels} "
                                  f"lists {classes}; fix the labels file (one class per line)", "labels")

    def _check_input(self) -> str:
        spec = self.manifest.input
        inputs = self.session.get_inputs()
        if self.manifest.task is Task.DETECTION and self.manifest.detection.format is DetectionFormat.RTDETR:
            inputs = [i for i in inputs if i.name != ORIG_TARGET_SIZES]
        if spec.name:
            matching = [i for i in inputs if i.name == spec.name]
            if not matching:
                raise ModelLoadError(f"model has no input named '{spec.name}' "
                                     f"(it has {', '.join(i.name for i in inputs)})")
            model_input = matching[0]
        elif len(inputs) == 1:
            model_input = inputs[0]
        elif any(i.name == ORIG_TARGET_SIZES for i in inputs):
            task = "" if self.manifest.task is Task.DETECTION else "set task: detection and "
            raise ModelLoadError(f"model takes {', '.join(i.name for i in inputs)}, like an RT-DETR / D-FINE "
                                 f"export: {task}set detection.format: rtdetr", "detection")
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

    def _size_feed(self) -> dict[str, np.ndarray]:
        """RT-DETR's orig_target_sizes ([w, h]): the input size, so boxes come in input pixels like every layout's."""
        if self.manifest.task is not Task.DETECTION or self.manifest.detection.format is not DetectionFormat.RTDETR:
            return {}
        sizes = [i for i in self.session.get_inputs() if i.name == ORIG_TARGET_SIZES]
        if not sizes:
            return {}
        dtype = _SIZE_TYPES.get(sizes[0].type)
        if dtype is None:
            raise ModelLoadError(f"model input {ORIG_TARGET_SIZES} is {sizes[0].type}; detection.format rtdetr feeds "
                                 "int64, int32 or float [1, 2] ([w, h])", "detection")
        spec = self.manifest.input
        return {ORIG_TARGET_SIZES: np.array([[spec.width, spec.height]], dtype=dtype)}

    def _output_names(self) -> list[str]:
        names = [o.name for o in self.session.get_outputs()]
        task = self.manifest.task
        if task is Task.DETECTION:
            return output_order(self.manifest.detection, names)
        section, field = OUTPUT_FIELDS[task]
        output = getattr(getattr(self.manifest, section), field) if field else ""
        if output and output not in names:
            raise ModelLoadError(f"model has no output named '{output}' ({section}.{field}; it has "
                                 f"{', '.join(names)})", section)
        others = [n for n in names if n != output]
        if task is Task.INSTANCE_SEGMENTATION and output:
            return others[:1] + [output] + others[1:]  # the protos go second, after the detections
        return ([output] if output else []) + others


def cpu_session_options(threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """ONNX Runtime options for serving: ``threads`` per inference (0: the runtime decides), and whether the
    thread pool spins between runs. Spinning saves about 1 ms per EfficientNet-Lite0 frame when the process has
    the CPU to itself, and burns about a core at 30 Hz that the camera, the shadow and DDS then lack
    (bench/bench_perception_latency.py, bench/bench_swap.py)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (runtimes raise pages), or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
