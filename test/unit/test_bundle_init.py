"""rmd bundle init and rmd bundle expected: real exports in, bundles that verify, ingest and pass the optimize gate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from PIL import Image

from robot_model_deployer.authoring.expected import recompute_expected
from robot_model_deployer.authoring.init import init_bundle
from robot_model_deployer.authoring.recognise import RecognitionError
from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import Interpolation, Layout, ResizeMode, Task, TensorType
from robot_model_deployer.bundle.pack import create_bundle
from robot_model_deployer.bundle.verify import verify_bundle
from robot_model_deployer.cli.main import main as rmd
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, optimize_bundle
from robot_model_deployer.optimize.report import VariantStatus
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.testing.models import COLOUR_LABELS
from robot_model_deployer.testing.quant_models import colour_images

SIZE = 32
CPU_ONLY = TargetProfile("test_cpu", (Accelerator.CPU,), (Precision.INT8, Precision.FP32), benchmark_runs=5,
                         warmup_runs=1)


@pytest.fixture(scope="module")
def torch_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colour classifier exported by torch.onnx as torchvision models are: logits [1, 3], input x [1, 3, 32, 32].

    Identity 1x1 conv, ReLU, global pool, 10x identity linear: the dominant channel wins, also after ImageNet
    normalisation.
    """
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.fc = torch.nn.Linear(3, 3)

        def forward(self, x):  # noqa: ANN001, ANN202 (torch's own signature)
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc(pooled.flatten(1))

    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        net.conv.bias.zero_()
        net.fc.weight.copy_(torch.eye(3) * 10)
        net.fc.bias.zero_()
    path = tmp_path_factory.mktemp("torch") / "colour_net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["x"], output_names=["logits"],
                      dynamo=False)
    return path


def image_folder(root: Path, count: int = 12, size: int = SIZE, seed: int = 1) -> Path:
    root.mkdir(parents=True)
    for index, image in enumerate(colour_images(count, size, seed=seed)):
        Image.fromarray(image).save(root / f"{COLOUR_LABELS[index % 3]}_{index:02d}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def labels_file(root: Path) -> Path:
    path = root / "labels.txt"
    path.write_text("\n".join(COLOUR_LABELS) + "\n")
    return path


# A torch classifier: init -> verify -> ingest -> optimize gate ---------------------

def test_torch_classifier_becomes_a_bundle_that_verifies_ingests_and_passes_the_gate(
        tmp_path: Path, torch_classifier: Path) -> None:
    images = image_folder(tmp_path / "images")
    result = init_bundle(model=torch_classifier, images=images, out=tmp_path / "bundle",
                         labels=labels_file(tmp_path), calibration=4, validation=6)
    assert (result.calibration, result.validation, result.expected_from_truth) == (4, 6, False)
    assert "input.mean" in result.choices and "input.resize" in result.choices
    bundle = load_bundle_dir(result.root)
    manifest = bundle.manifest
    assert manifest.name == "colour_net" and manifest.task is Task.CLASSIFICATION
    spec = manifest.input
    assert (spec.width, spec.height, spec.layout, spec.dtype) == (SIZE, SIZE, Layout.NCHW, TensorType.FLOAT32)
    assert (spec.resize, spec.interpolation) == (ResizeMode.CENTER_CROP, Interpolation.PIL_BILINEAR)
    assert manifest.classification.softmax is True  # the graph ends in Gemm: logits
    assert len(manifest.validation.images) == 6 and len(manifest.calibration.images) == 4
    assert not set(manifest.validation.images) & {p.replace("calibration/", "validation/")
                                                  for p in manifest.calibration.images}
    text = (result.root / "manifest.yaml").read_text()
    assert "# CHOICE: not in the model file; ImageNet mean and std. Check it." in text
    expected = yaml.safe_load((result.root / "expected.yaml").read_text())
    # FP32 answers of this model are the dominant colour, which the file name says.
    assert {k: COLOUR_LABELS[v["class_id"]] for k, v in expected.items()} == {
        k: Path(k).name.split("_")[0] for k in expected}

    tar = tmp_path / "b.tar"
    create_bundle(source=result.root, output=tar)
    verify_bundle(bundle=tar, trust=None, model_check=check_model, allow_unsigned=True)
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(tar, trust=None, model_check=check_model, allow_unsigned=True)
    report = optimize_bundle(installed.bundle, CPU_ONLY, tmp_path / "out")
    assert report.variant(FP32_FALLBACK).status is VariantStatus.ACCEPTED
    assert any(v.precision is Precision.INT8 and v.accepted for v in report.variants)


def test_ground_truth_validates_and_the_other_images_calibrate(tmp_path: Path, torch_classifier: Path) -> None:
    images = image_folder(tmp_path / "images", count=9)
    truth = {"red_00.png": {"class_id": 0}, "green_01.png": {"class_id": 1}, "blue_02.png": {"class_id": 0}}
    (tmp_path / "truth.yaml").write_text(yaml.safe_dump(truth))
    result = init_bundle(model=torch_classifier, images=images, out=tmp_path / "bundle",
                         truth=tmp_path / "truth.yaml")
    manifest = load_bundle_dir(result.root).manifest
    assert manifest.validation.images == ("validation/blue_02.png", "validation/green_01.png", "validation/red_00.png")
    assert len(manifest.calibration.images) == 6
    expected = yaml.safe_load((result.root / "expected.yaml").read_text())
    assert expected["validation/blue_02.png"] == {"class_id": 0}  # the truth file's word, not the model's
    assert "ground truth from truth.yaml" in (result.root / "manifest.yaml").read_text()


def test_rmd_bundle_expected_recomputes_and_rewrites_files_json(tmp_path: Path, torch_classifier: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    images = image_folder(tmp_path / "images")
    assert rmd(["bundle", "init", str(torch_classifier), "--images", str(images), "-o", str(tmp_path / "b"),
                "--labels", str(labels_file(tmp_path))]) == 0
    assert "check the lines marked CHOICE in" in capsys.readouterr().out
    expected = tmp_path / "b" / "expected.yaml"
    good = expected.read_text()
    expected.write_text(good.replace('"class_id": 0', '"class_id": 2'))
    (tmp_path / "b" / "signature.json").write_text("{}")
    assert rmd(["bundle", "expected", str(tmp_path / "b")]) == 0
    assert "the old signature.json was removed" in capsys.readouterr().out
    assert expected.read_text() == good
    assert not (tmp_path / "b" / "signature.json").exists()
    verify_bundle(bundle=tmp_path / "b", trust=None, model_check=check_model, allow_unsigned=True)


# Recognition of each export -------------------------------------------------------

def _graph_model(inputs: list, outputs: list, nodes: list, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="tf2onnx")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def keras_uint8_dynamic_classifier() -> onnx.ModelProto:
    """NHWC uint8 [1, ?, ?, 3] (any size): Cast, mean over H and W, 10x: the dominant channel's logit wins."""
    x = helper.make_tensor_value_info("input_1", TensorProto.UINT8, [1, "height", "width", 3])
    y = helper.make_tensor_value_info("predictions", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Cast", ["input_1"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["m", "ten"], ["predictions"])]
    model = _graph_model([x], [y], nodes)
    model.graph.initializer.append(helper.make_tensor("ten", TensorProto.FLOAT, [], [0.1]))
    return model


def test_a_uint8_nhwc_model_with_open_size_gets_the_size_as_a_choice_and_serves(tmp_path: Path) -> None:
    model = tmp_path / "keras.onnx"
    onnx.save(keras_uint8_dynamic_classifier(), model)
    result = init_bundle(model=model, images=image_folder(tmp_path / "images"), out=tmp_path / "bundle",
                         labels=labels_file(tmp_path))
    assert {"input.width", "input.height"} <= set(result.choices)
    bundle = load_bundle_dir(result.root)
    spec = bundle.manifest.input
    assert (spec.layout, spec.dtype, spec.width) == (Layout.NHWC, TensorType.UINT8, 224)
    text = (result.root / "manifest.yaml").read_text()
    assert "scale" not in text.split("classification:")[0]  # uint8 gets no normalisation fields
    expected = yaml.safe_load((result.root / "expected.yaml").read_text())
    assert {COLOUR_LABELS[v["class_id"]] for v in expected.values()} == set(COLOUR_LABELS)
    check_model(result.root)
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    assert report.variant(FP32_FALLBACK).accepted


def test_tf_object_detection_outputs_are_recognised(tmp_path: Path) -> None:
    from robot_model_deployer.authoring.recognise import recognise
    from robot_model_deployer.inference.model_survey import survey_model

    x = helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [1, "h", "w", 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (
        ("detection_boxes", [1, 100, 4]), ("detection_scores", [1, 100]), ("detection_classes", [1, 100]),
        ("num_detections", [1]))]
    nodes = [helper.make_node("Cast", ["input_tensor"], ["f"], to=TensorProto.FLOAT)] + [
        helper.make_node("ConstantOfShape", [f"{o.name}_shape"], [o.name]) for o in outs]
    model = _graph_model([x], outs, nodes)
    model.graph.initializer.extend(helper.make_tensor(f"{o.name}_shape", TensorProto.INT64, [len(s)], s)
                                   for o, s in zip(outs, ([1, 100, 4], [1, 100], [1, 100], [1])))
    onnx.save(model, tmp_path / "ssd.onnx")
    draft = recognise(survey_model(tmp_path / "ssd.onnx"))
    assert draft.task is Task.DETECTION and draft.sections["detection"]["format"].value == "tf_ssd"
    assert draft.sections["input"]["dtype"].value == "uint8" and draft.sections["input"]["layout"].value == "nhwc"
    assert draft.sections["input"]["width"].choice and "start at 1" in draft.labels_note


# Refusals -------------------------------------------------------------------------

def test_an_existing_output_directory_is_refused_and_left_alone(tmp_path: Path, torch_classifier: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "mine.txt").write_text("keep")
    with pytest.raises(BundleError, match="already exists; give -o a new directory"):
        init_bundle(model=torch_classifier, images=image_folder(tmp_path / "images"), out=tmp_path / "bundle")
    assert [p.name for p in (tmp_path / "bundle").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("setup, message", [
    ("no_images", "has no images (.png"),
    ("not_a_folder", "is not a folder"),
    ("truth_unknown_image", "names purple.png, which is not an image under --images"),
    ("truth_not_mapping", "must map image paths to expected outputs"),
    ("labels_empty", "is empty"),
    ("bad_counts", "--calibration and --validation must each be at least 1"),
    ("not_onnx", "is not a model ONNX Runtime can load"),
])
def test_bad_init_inputs_are_refused_with_one_line_and_write_nothing(tmp_path: Path, torch_classifier: Path,
                                                                      setup: str, message: str) -> None:
    images = image_folder(tmp_path / "images", count=4)
    kwargs: dict = {"model": torch_classifier, "images": images}
    if setup == "no_images":
        for png in images.glob("*.png"):
            png.unlink()
    elif setup == "not_a_folder":
        kwargs["images"] = images / "notes.txt"
    elif setup in ("truth_unknown_image", "truth_not_mapping"):
        (tmp_path / "t.yaml").write_text("purple.png: {class_id: 0}\n" if setup == "truth_unknown_image" else "- a\n")
        kwargs["truth"] = tmp_path / "t.yaml"
    elif setup == "labels_empty":
        (tmp_path / "l.txt").write_text("\n\n")
        kwargs["labels"] = tmp_path / "l.txt"
    elif setup == "bad_counts":
        kwargs["calibration"] = 0
    else:
        (tmp_path / "m.onnx").write_bytes(b"not onnx")
        kwargs["model"] = tmp_path / "m.onnx"
    with pytest.raises(ValueError) as info:
        init_bundle(out=tmp_path / "bundle", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.init-")]


def test_a_model_no_recogniser_knows_is_refused_with_its_shapes(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, 16])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16])
    onnx.save(_graph_model([x], [y], [helper.make_node("Relu", ["tokens"], ["out"])]), tmp_path / "m.onnx")
    with pytest.raises(RecognitionError) as info:
        init_bundle(model=tmp_path / "m.onnx", images=image_folder(tmp_path / "images"), out=tmp_path / "b")
    assert "cannot tell which export this is (inputs tokens [1, 16] float32; outputs out [1, 16])" in str(info.value)
    assert "docs/manifests/" in str(info.value)


def test_expected_for_a_bundle_without_validation_expected_is_refused(tmp_path: Path, torch_classifier: Path) -> None:
    result = init_bundle(model=torch_classifier, images=image_folder(tmp_path / "images"), out=tmp_path / "b")
    manifest = result.root / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace('  expected: "expected.yaml"', "  expected: ''"))
    before = (result.root / "files.json").read_bytes()
    with pytest.raises(BundleError, match="names no validation.expected file; set validation.expected"):
        recompute_expected(result.root)
    assert (result.root / "files.json").read_bytes() == before


def test_truth_missing_a_validation_image_is_refused_by_expected(tmp_path: Path, torch_classifier: Path) -> None:
    result = init_bundle(model=torch_classifier, images=image_folder(tmp_path / "images"), out=tmp_path / "b")
    (tmp_path / "t.json").write_text(json.dumps({"validation/red_00.png": {"class_id": 0}}))
    with pytest.raises(BundleError, match="no expected output for validation image"):
        recompute_expected(result.root, tmp_path / "t.json")
