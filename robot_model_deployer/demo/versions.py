"""The four versions of the demo's scenario, built from one real bundle.

- v1: the model as shipped: without its validation set, so the optimize
  stage serves it unchanged and the first deployment is quick;
- v2: a retrained model (every weight moved by 1%), with the validation set:
  the optimize stage builds and gates its variants for this robot (FP32
  only: an INT8 v2 would make the FP32 v4 fail shadow's latency gate, and
  quantizing EfficientNet takes minutes on a busy computer), and shadow
  compares it with v1 on live frames (v3 and v4 skip optimizing as v1 does);
- v3: broken answers: every output times 0, plus one class that the camera
  rarely shows (classification; detection: no boxes at all);
- v4: right answers until the camera goes dark: a Where on the mean of the
  input tensor turns every output into NaN when the model's input is darker
  than that of any frame the demo camera shows. No counter: the scenario covers the lens
  (``dark_frame``) some frames into v4's probation, so shadow sees a healthy
  model and probation a broken one.

Each is a signed bundle .tar; ``acceptance`` overrides shorten shadow and
probation for a demo.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import MANIFEST_NAME, InputSpec, Task
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor

FILE_LIST = "files.json"
VALIDATION_IMAGES = 40  # v2's optimize stage gates on at most this many (the zoo's bundle has 100)


@dataclass(frozen=True)
class Version:
    """One bundle of the scenario and what the scenario expects of it."""

    label: str  # v1 .. v4
    bundle: Path
    version: str
    expected: str  # an outcome as story.classify_outcome words it
    darken_in_probation: bool = False


def dark_threshold(spec: InputSpec, frames: Sequence[np.ndarray]) -> float:
    """Halfway between the darkest camera frame's mean model input and a black frame's (after preprocessing).

    Every frame the camera shows stays above it, a covered lens falls below.
    """
    preprocess = Preprocessor(spec)
    mean = lambda frame: float(preprocess(frame, PixelFormat.RGB8)[0].astype(np.float64).mean())  # noqa: E731
    darkest, black = min(mean(frame) for frame in frames), mean(dark_frame(frames[0]))
    if darkest <= black:
        raise ValueError("a camera frame is as dark as a covered lens, so v4 would fail in shadow; "
                         "show the demo other images (--camera-source)")
    return (darkest + black) / 2.0


def _float_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [o for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]


def _rewire_output(model: onnx.ModelProto, name: str) -> str:
    """Rename the graph's tensor ``name`` to ``<name>_before``; the caller adds a node that makes ``name``."""
    inner = f"{name}_before"
    for node in model.graph.node:
        node.output[:] = [inner if o == name else o for o in node.output]
        node.input[:] = [inner if i == name else i for i in node.input]
    return inner


def _output_width(output: onnx.ValueInfoProto) -> int:
    dims = output.type.tensor_type.shape.dim
    if not dims or not dims[-1].dim_value:
        raise ValueError(f"output {output.name} has no fixed last dimension; cannot build a constant-class model")
    return dims[-1].dim_value


def retrained_model(model: onnx.ModelProto, relative: float = 0.01, seed: int = 1) -> onnx.ModelProto:
    """Every float weight times 1 + relative * N(0, 1): a new training run that agrees almost always."""
    rng = np.random.default_rng(seed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for index, tensor in enumerate(copy.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.size > 1:
            noisy = values * (1.0 + relative * rng.standard_normal(values.shape)).astype(np.float32)
            copy.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    return copy


def constant_class_model(model: onnx.ModelProto, classification: bool) -> onnx.ModelProto:
    """Outputs times 0, plus (classification) a one-hot on the last class: one answer whatever it sees."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    for output in _float_outputs(broken):
        inner = _rewire_output(broken, output.name)
        offset = np.zeros(_output_width(output) if classification else 1, np.float32)
        if classification:
            offset[-1] = 10.0
        broken.graph.initializer.extend([numpy_helper.from_array(np.zeros(1, np.float32), f"{output.name}_zero"),
                                         numpy_helper.from_array(offset, f"{output.name}_offset")])
        broken.graph.node.extend([
            helper.make_node("Mul", [inner, f"{output.name}_zero"], [f"{output.name}_nothing"]),
            helper.make_node("Add", [f"{output.name}_nothing", f"{output.name}_offset"], [output.name])])
    onnx.checker.check_model(broken)
    return broken


def nan_when_dark_model(model: onnx.ModelProto, threshold: float) -> onnx.ModelProto:
    """Every float output NaN when the mean of the first input is below ``threshold``, unchanged otherwise."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    image = broken.graph.input[0].name
    broken.graph.initializer.extend([numpy_helper.from_array(np.array(threshold, np.float32), "dark_threshold"),
                                     numpy_helper.from_array(np.array(np.nan, np.float32), "dark_nan")])
    broken.graph.node.extend([
        helper.make_node("Cast", [image], ["dark_input"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["dark_input"], ["dark_mean"], keepdims=0),
        helper.make_node("Less", ["dark_mean", "dark_threshold"], ["is_dark"])])
    for output in _float_outputs(broken):
        inner = _rewire_output(broken, output.name)
        broken.graph.node.append(helper.make_node("Where", ["is_dark", "dark_nan", inner], [output.name]))
    onnx.checker.check_model(broken)
    return broken


def rebundle(source: Path, work: Path, key: Path, version: str, changes: Mapping[str, Any],
             model: onnx.ModelProto | None = None, note: str = "") -> Path:
    """``source`` as a signed bundle of ``version``, with manifest sections merged from ``changes`` (None: removed)."""
    copy = work / f"{source.name}-{version}"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy)
    (copy / FILE_LIST).unlink(missing_ok=True)  # packing lists the files anew (the model may have changed)
    manifest_path = copy / MANIFEST_NAME
    manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    if model is not None:
        onnx.save(model, str(copy / manifest["model"]))
    manifest["version"] = version
    for section, values in changes.items():
        if values is None:
            manifest.pop(section, None)
        else:
            manifest[section] = {**(manifest.get(section) or {}), **values}
    if note:
        manifest["description"] = f"{manifest.get('description', '')} [demo: {note}]".strip()
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    bundle = work / f"{copy.name}.tar"
    create_bundle(source=copy, output=bundle)
    sign_bundle(bundle=bundle, key=key)
    shutil.rmtree(copy)
    return bundle


def scenario_versions(source: Path, work: Path, key: Path, frames: Sequence[np.ndarray],
                      acceptance: Mapping[str, Any]) -> list[Version]:
    """v1..v4 from the bundle directory ``source`` (see the module docstring); ``frames``: what the camera shows."""
    bundle = load_bundle_dir(source)
    model = onnx.load(str(bundle.model_path))
    classification = bundle.manifest.task is Task.CLASSIFICATION
    threshold = dark_threshold(bundle.manifest.input, frames)
    # Without a validation set the optimize stage serves the model as shipped (seconds instead of a minute).
    as_shipped = {"validation": None, "quantization": {"allowed": False}, "acceptance": dict(acceptance)}
    optimized = {"quantization": {"allowed": False}, "acceptance": dict(acceptance)}
    validation = bundle.manifest.validation
    if not validation.expected and len(validation.images) > VALIDATION_IMAGES:
        # Fewer images to gate on; a set with expected outputs stays whole (they name its images).
        optimized["validation"] = {"images": list(validation.images[:VALIDATION_IMAGES])}
    return [
        Version("v1", rebundle(source, work, key, "1.0.0", as_shipped, note="v1, as shipped"), "1.0.0", "live"),
        Version("v2", rebundle(source, work, key, "1.1.0", optimized, retrained_model(model),
                                note="v2, retrained (weights moved 1%)"), "1.1.0", "live"),
        Version("v3", rebundle(source, work, key, "1.2.0", as_shipped, constant_class_model(model, classification),
                               note="v3, a constant answer"), "1.2.0", "refused in shadow"),
        Version("v4", rebundle(source, work, key, "1.3.0", as_shipped, nan_when_dark_model(model, threshold),
                               note="v4, NaN on dark frames"), "1.3.0", "rolled back in probation",
                darken_in_probation=True),
    ]


def dark_frame(like: np.ndarray) -> np.ndarray:
    """A covered lens: a black frame of the camera's size."""
    return np.zeros_like(like)
