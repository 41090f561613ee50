"""The four versions of the demo's scenario, built from one real bundle.

- v1: the bundle as shipped (FP32 only, so the first deployment is quick);
- v2: the same model re-bundled as a newer version with INT8 allowed: the
  optimize stage quantizes it and keeps INT8 when it passes the gate;
- v3: broken answers: every output times 0, plus one class that the camera
  rarely shows (classification; detection: no boxes at all);
- v4: right answers until the camera goes dark: a Where on the mean of the
  input tensor turns every output into NaN when the image is darker than the
  demo camera's darkest photo. No counter: the scenario covers the lens
  (``dark_frame``) some frames into v4's probation, so shadow sees a healthy
  model and probation a broken one.

Each is a signed bundle .tar; ``acceptance`` overrides shorten shadow and
probation for a demo.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from robot_model_deployer.bundle.manifest import MANIFEST_NAME
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle

FILE_LIST = "files.json"


@dataclass(frozen=True)
class Version:
    """One bundle of the scenario and what the scenario expects of it."""

    label: str  # v1 .. v4
    bundle: Path
    version: str
    expected: str  # an outcome as story.classify_outcome words it
    darken_in_probation: bool = False


def dark_threshold(manifest: Mapping[str, Any], pixel_level: float) -> float:
    """The input tensor's mean for an image whose every pixel is ``pixel_level`` (0..255), after preprocessing."""
    spec = manifest.get("input", {})
    if spec.get("dtype", "float32") == "uint8":
        return pixel_level
    scale = float(spec.get("scale", 1.0))
    mean = np.asarray(spec.get("mean", [0.0, 0.0, 0.0]), np.float64)
    std = np.asarray(spec.get("std", [1.0, 1.0, 1.0]), np.float64)
    return float(np.mean((pixel_level * scale - mean) / std))


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
    """``source`` as a signed bundle of ``version``, with manifest sections merged from ``changes``."""
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
        manifest[section] = {**(manifest.get(section) or {}), **values}
    if note:
        manifest["description"] = f"{manifest.get('description', '')} [demo: {note}]".strip()
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    bundle = work / f"{copy.name}.tar"
    create_bundle(source=copy, output=bundle)
    sign_bundle(bundle=bundle, key=key)
    shutil.rmtree(copy)
    return bundle


def scenario_versions(source: Path, work: Path, key: Path, darkest_pixel_mean: float,
                      acceptance: Mapping[str, Any]) -> list[Version]:
    """v1..v4 from the bundle directory ``source`` (see the module docstring)."""
    manifest = yaml.safe_load((source / MANIFEST_NAME).read_text(encoding="utf-8"))
    model = onnx.load(str(source / manifest["model"]))
    classification = manifest.get("task", "classification") == "classification"
    fp32_only = {"quantization": {"allowed": False}, "acceptance": dict(acceptance)}
    with_int8 = {"quantization": {"allowed": True}, "acceptance": dict(acceptance)}
    # Below half the darkest photo's mean pixel: only a covered lens (the black frame) is that dark.
    threshold = dark_threshold(manifest, max(1.0, darkest_pixel_mean / 2.0))
    return [
        Version("v1", rebundle(source, work, key, "1.0.0", fp32_only, note="v1, FP32"), "1.0.0", "live"),
        Version("v2", rebundle(source, work, key, "1.1.0", with_int8, note="v2, INT8 allowed"), "1.1.0", "live"),
        Version("v3", rebundle(source, work, key, "1.2.0", fp32_only, constant_class_model(model, classification),
                               note="v3, a constant answer"), "1.2.0", "refused in shadow"),
        Version("v4", rebundle(source, work, key, "1.3.0", fp32_only, nan_when_dark_model(model, threshold),
                               note="v4, NaN on dark frames"), "1.3.0", "rolled back in probation",
                darken_in_probation=True),
    ]


def dark_frame(like: np.ndarray) -> np.ndarray:
    """A covered lens: a black frame of the camera's size."""
    return np.zeros_like(like)
