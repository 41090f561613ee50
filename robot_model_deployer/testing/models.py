"""Tiny real ONNX models whose right answers are known, and bundles around them.

Used by the tests, the benchmarks and `rmd` examples. The models are small
graphs built with ``onnx.helper``; ONNX Runtime runs them like any other.

- colour classifier: input 1x3xHxW RGB in [0, 1], classes red/green/blue:
  the logit of a class is the mean of that channel minus the mean of the
  others, so a mostly red image is "red".
- colour detector (YOLO layout): the image is cut in cells of ``cell``
  pixels; each cell is one candidate box covering the cell, its objectness
  the brightest channel mean and its class scores the channel means. A
  saturated red square that fills a cell is found as "red" in that cell.
- hostile classifiers: the colour classifier plus work whose result is
  added times zero, so the answers stay right while every run allocates
  gigabytes (``memory_hog_classifier``) or never ends (``spinning_classifier``).
- raising classifier: the colour classifier whose run fails in ONNX Runtime
  on images that are not mostly one colour (``raising_classifier``).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

COLOUR_LABELS = ("red", "green", "blue")
OPSET = 17


def colour_classifier(size: int = 32, scale: float = 10.0, label_shift: int = 0, busy_matmuls: int = 0,
                      busy_width: int = 512, nan_unless: str = "",
                      confuse: tuple[str, str] | None = None) -> onnx.ModelProto:
    """A 3-class classifier by dominant colour; input ``images`` [1, 3, size, size].

    Variants for testing the gates on the same input:
    ``label_shift``: answers the colour ``label_shift`` places further (wrong on purpose);
    ``scale``: how sure it is (0: every class scores the same, so it answers one class whatever it sees);
    ``confuse=(seen, answered)``: answers ``answered`` for images mostly of colour ``seen``, right otherwise;
    ``busy_matmuls``: that many ``busy_width``-square matrix products on the input first (slow, same answer);
    ``nan_unless``: every score is NaN unless the image is mostly that colour.
    """
    # logits = scale * (M @ channel_means), M = 1.5 * I - 0.5 (own minus mean of others).
    mixing = 1.5 * np.eye(3, dtype=np.float32) - 0.5
    if confuse is not None:
        # The answered class's logit also rises with the seen colour, above the seen class's own.
        mixing[COLOUR_LABELS.index(confuse[1]), COLOUR_LABELS.index(confuse[0])] += 2.5
    mixing = np.roll(mixing * scale, label_shift, axis=0)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
        helper.make_node("MatMul", ["means", "mixing"], ["clean_logits"]),
    ]
    initializers = [numpy_helper.from_array(mixing.T.copy(), "mixing")]
    logits = "clean_logits"
    if busy_matmuls:
        # Work that depends on the input (so it cannot be folded away) but adds 0 * result.
        rng = np.random.default_rng(0)
        width = busy_width
        initializers += [numpy_helper.from_array(np.ones((3, width), np.float32), "spread"),
                         numpy_helper.from_array((rng.standard_normal((width, width)) / width).astype(np.float32),
                                                 "busy"),
                         numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
        nodes.append(helper.make_node("MatMul", ["means", "spread"], ["work_0"]))
        for index in range(busy_matmuls):
            nodes.append(helper.make_node("MatMul", [f"work_{index}", "busy"], [f"work_{index + 1}"]))
        nodes += [helper.make_node("ReduceMax", [f"work_{busy_matmuls}"], ["work_sum"], keepdims=1, axes=[1]),
                  helper.make_node("Mul", ["work_sum", "zero"], ["nothing"]),
                  helper.make_node("Add", [logits, "nothing"], ["busy_logits"])]
        logits = "busy_logits"
    if nan_unless:
        # log(mean of that channel - 0.25) * 0 is 0 for that colour and NaN when the channel is dark.
        pick = np.zeros((3, 1), np.float32)
        pick[COLOUR_LABELS.index(nan_unless), 0] = 1.0
        initializers += [numpy_helper.from_array(pick, "pick"),
                         numpy_helper.from_array(np.array([0.25], np.float32), "quarter"),
                         numpy_helper.from_array(np.zeros((1,), np.float32), "nan_zero")]
        nodes += [helper.make_node("MatMul", ["means", "pick"], ["picked"]),
                  helper.make_node("Sub", ["picked", "quarter"], ["margin"]),
                  helper.make_node("Log", ["margin"], ["log_margin"]),
                  helper.make_node("Mul", ["log_margin", "nan_zero"], ["nan_or_zero"]),
                  helper.make_node("Add", [logits, "nan_or_zero"], ["guarded_logits"])]
        logits = "guarded_logits"
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    graph = helper.make_graph(
        nodes, "colour_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        initializers,
    )
    return _model(graph)


def colour_detector(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    """A YOLO-layout detector of coloured cells; output ``detections`` [1, N, 8]."""
    if size % cell:
        raise ValueError("size must be a multiple of cell")
    cells = size // cell
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    geometry = np.stack([(xs + 0.5) * cell, (ys + 0.5) * cell,
                         np.full_like(xs, cell), np.full_like(ys, cell)]).astype(np.float32)[None]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["cell_means"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("ReduceMax", ["cell_means"], ["objectness"], keepdims=1, axes=[1]),
        helper.make_node("Concat", ["geometry", "objectness", "cell_means"], ["grid"], axis=1),
        helper.make_node("Reshape", ["grid", "flat_shape"], ["rows_t"]),
        helper.make_node("Transpose", ["rows_t"], ["detections"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "colour_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, cells * cells, 8])],
        [numpy_helper.from_array(geometry, "geometry"),
         numpy_helper.from_array(np.array([1, 8, cells * cells], dtype=np.int64), "flat_shape")],
    )
    return _model(graph)


def memory_hog_classifier(gigabytes: float = 8.0, size: int = 32) -> onnx.ModelProto:
    """The colour classifier that expands its input to a ``gigabytes``-sized tensor on every run.

    The file stays tiny: the shape is a 4-number initializer and the tensor
    depends on the input, so it exists only at run time and no optimizer can
    fold it away.
    """
    batch = max(1, round(gigabytes * (1 << 30) / (4 * 3 * size * size)))
    shape = numpy_helper.from_array(np.array([batch, 3, size, size], np.int64), "hog_shape")
    return _with_zero_side_work(colour_classifier(size), [helper.make_node("Expand", ["images", "hog_shape"], ["hog"])],
                                [shape], "hog")


def spinning_classifier(size: int = 32, width: int = 64) -> onnx.ModelProto:
    """The colour classifier with a Loop of 2**62 matrix products on its input: it runs, and never ends."""
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(np.ones((3, width), np.float32), "spin_spread"),
                    numpy_helper.from_array((rng.standard_normal((width, width)) / width).astype(np.float32),
                                            "spin_weights"),
                    numpy_helper.from_array(np.array(1 << 62, np.int64), "spin_trips"),
                    numpy_helper.from_array(np.array(True), "spin_go")]
    body = helper.make_graph(
        [helper.make_node("MatMul", ["spin_in", "spin_weights"], ["spin_product"]),
         helper.make_node("Tanh", ["spin_product"], ["spin_out"]),
         helper.make_node("Identity", ["spin_cond_in"], ["spin_cond_out"])],
        "spin_body",
        [helper.make_tensor_value_info("spin_iteration", TensorProto.INT64, []),
         helper.make_tensor_value_info("spin_cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("spin_in", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("spin_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("spin_out", TensorProto.FLOAT, [1, width])],
    )
    nodes = [helper.make_node("MatMul", ["means", "spin_spread"], ["spin_start"]),
             helper.make_node("Loop", ["spin_trips", "spin_go", "spin_start"], ["spin_end"], body=body)]
    return _with_zero_side_work(colour_classifier(size), nodes, initializers, "spin_end")


def raising_classifier(size: int = 32, raise_unless: str = "green") -> onnx.ModelProto:
    """The colour classifier, whose Reshape fails (ONNX Runtime raises) unless the image is mostly ``raise_unless``."""
    model = colour_classifier(size)
    graph = model.graph
    output = graph.node.pop()
    pick = np.zeros((3, 1), np.float32)
    pick[COLOUR_LABELS.index(raise_unless), 0] = 1.0
    graph.initializer.extend([numpy_helper.from_array(pick, "raise_pick"),
                              numpy_helper.from_array(np.array([0.25], np.float32), "raise_quarter"),
                              numpy_helper.from_array(np.array([1, 3], np.int64), "raise_shape")])
    # shape = [1, 3] + [0, dark]: [1, 4] when that channel is dark, which 3 scores cannot fill.
    graph.node.extend([helper.make_node("MatMul", ["means", "raise_pick"], ["raise_picked"]),
                       helper.make_node("Less", ["raise_picked", "raise_quarter"], ["raise_dark"]),
                       helper.make_node("Cast", ["raise_dark"], ["raise_dark_int"], to=TensorProto.INT64),
                       helper.make_node("Reshape", ["raise_dark_int", "raise_one"], ["raise_dark_flat"]),
                       helper.make_node("Concat", ["raise_zero", "raise_dark_flat"], ["raise_extra"], axis=0),
                       helper.make_node("Add", ["raise_shape", "raise_extra"], ["raise_target"]),
                       helper.make_node("Reshape", [output.input[0], "raise_target"], ["raise_logits"])])
    graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "raise_one"),
                              numpy_helper.from_array(np.array([0], np.int64), "raise_zero")])
    output.input[0] = "raise_logits"
    graph.node.append(output)
    return _model(graph)


def _with_zero_side_work(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                         initializers: list[onnx.TensorProto], result: str) -> onnx.ModelProto:
    """``model`` (whose last node is Identity -> its output) plus ``nodes``, their ``result`` added times zero."""
    graph = model.graph
    output = graph.node.pop()
    zero = numpy_helper.from_array(np.zeros((), np.float32), f"{result}_zero")
    graph.node.extend(nodes + [helper.make_node("ReduceMax", [result], [f"{result}_max"], keepdims=0),
                               helper.make_node("Mul", [f"{result}_max", zero.name], [f"{result}_nothing"]),
                               helper.make_node("Add", [output.input[0], f"{result}_nothing"], [f"{result}_logits"])])
    output.input[0] = f"{result}_logits"
    graph.node.append(output)
    graph.initializer.extend(initializers + [zero])
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rmd-testing")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def classifier_manifest(name: str = "colour_classifier", version: str = "1.0.0", size: int = 32) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": name, "version": version, "task": "classification",
        "model": "model.onnx", "labels": "labels.txt",
        "input": {"width": size, "height": size, "resize": "stretch", "color_order": "rgb", "layout": "nchw",
                  "dtype": "float32", "scale": 1.0 / 255.0},
        "classification": {"top_k": 3, "softmax": True},
    }


def detector_manifest(name: str = "colour_detector", version: str = "1.0.0", size: int = 64) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": name, "version": version, "task": "detection",
        "model": "model.onnx", "labels": "labels.txt",
        "input": {"width": size, "height": size, "resize": "letterbox", "color_order": "rgb", "layout": "nchw",
                  "dtype": "float32", "scale": 1.0 / 255.0, "letterbox_fill": 0},
        "detection": {"format": "yolo", "score_threshold": 0.3, "iou_threshold": 0.5},
    }


def write_bundle(directory: str | Path, model: onnx.ModelProto | bytes, manifest: Mapping[str, Any],
                 labels: tuple[str, ...] | None = COLOUR_LABELS,
                 extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write a bundle directory (manifest.yaml, model file, labels, extras)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    model_bytes = model if isinstance(model, bytes) else model.SerializeToString()
    (root / manifest.get("model", "model.onnx")).write_bytes(model_bytes)
    if labels is not None and manifest.get("labels"):
        (root / manifest["labels"]).write_text("\n".join(labels) + "\n", encoding="utf-8")
    for relative, data in (extra_files or {}).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "manifest.yaml").write_text(yaml.safe_dump(dict(manifest), sort_keys=False), encoding="utf-8")
    return root


def solid_image(colour: str, width: int = 64, height: int = 48, background: int = 0) -> np.ndarray:
    """An HxWx3 RGB uint8 image filled with one of COLOUR_LABELS."""
    image = np.full((height, width, 3), background, dtype=np.uint8)
    image[:, :, COLOUR_LABELS.index(colour)] = 255
    return image


def repack_bundle(source: Path, work: Path, version: str, key: Path, acceptance: Mapping[str, Any]) -> Path:
    """``source`` (a bundle directory) as ``version`` with ``acceptance`` overrides, packed and signed in ``work``."""
    from robot_model_deployer.bundle.pack import create_bundle, sign_bundle  # only the benches need packing

    copy = work / f"{source.name}-{version}"
    shutil.copytree(source, copy)
    manifest_path = copy / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["version"] = version
    manifest["acceptance"] = {**manifest.get("acceptance", {}), **acceptance}
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    bundle = work / f"{copy.name}.tar"
    create_bundle(source=copy, output=bundle)
    sign_bundle(bundle=bundle, key=key)
    shutil.rmtree(copy)
    return bundle
