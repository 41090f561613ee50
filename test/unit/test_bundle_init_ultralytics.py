"""rmd bundle init on real Ultralytics exports (architectures exported at test time by testing/yolo_export.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from PIL import Image

from robot_model_deployer.authoring.init import init_bundle
from robot_model_deployer.authoring.recognise import RecognitionError, recognise
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import Interpolation, LetterboxAlign, ResizeMode, Task
from robot_model_deployer.bundle.pack import create_bundle
from robot_model_deployer.bundle.verify import verify_bundle
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.inference.model_survey import survey_model
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, optimize_bundle
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, require_ultralytics

from test_bundle_init import CPU_ONLY, image_folder


@pytest.fixture(autouse=True)
def ultralytics() -> str:
    return require_ultralytics()


@pytest.mark.parametrize("arch, end2end, layout", [
    ("yolov8n", False, "yolov8"), ("yolo11n", False, "yolov8"), ("yolov10n", True, "end2end"),
    ("yolo26n", True, "end2end"), ("yolo26n", False, "yolov8"),
])
def test_ultralytics_detectors_are_read_from_their_metadata_and_output(arch: str, end2end: bool, layout: str) -> None:
    draft = recognise(survey_model(export_yolo(arch, 320, nc=3, end2end=end2end)))
    assert draft.task is Task.DETECTION and draft.export.startswith("Ultralytics detect export (metadata task, names")
    assert draft.sections["detection"]["format"].value == layout
    assert draft.labels == ("0", "1", "2")  # the names Ultralytics wrote for nc=3
    spec = draft.sections["input"]
    assert (spec["width"].value, spec["height"].value, spec["resize"].value, spec["letterbox_fill"].value,
            spec["interpolation"].value) == (320, 320, "letterbox", 114, "opencv_linear")
    assert not [key for key, value in spec.items() if value.choice]  # all of it is the exporter's convention


def test_without_metadata_the_output_shape_still_gives_the_layout_but_as_a_choice(tmp_path: Path) -> None:
    model = onnx.load(str(export_yolo("yolov8n", 320, nc=3)))
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    draft = recognise(survey_model(tmp_path / "bare.onnx"))
    fmt = draft.sections["detection"]["format"]
    assert (fmt.value, fmt.choice) == ("yolov8", True)
    assert "[1, 4+C, N] with C = 3" in fmt.note and draft.labels == ()


def test_ultralytics_pose_and_semantic_exports_get_their_sections_from_metadata_and_outputs() -> None:
    pose = recognise(survey_model(export_yolo("yolov8n-pose", 128, nc=3)))
    assert pose.task is Task.POSE
    assert (pose.sections["pose"]["keypoints"].value, pose.sections["pose"]["values_per_keypoint"].value) == (17, 3)
    semantic = recognise(survey_model(export_yolo("yolo26n-sem", 128, nc=3)))
    assert semantic.task is Task.SEGMENTATION and semantic.sections["segmentation"]["format"].value == "class_ids"


def test_an_ultralytics_task_this_rmd_does_not_serve_is_refused_by_name(tmp_path: Path) -> None:
    model = onnx.load(str(export_yolo("yolov8n", 320, nc=3)))
    next(p for p in model.metadata_props if p.key == "task").value = "obb"
    onnx.save(model, tmp_path / "obb.onnx")
    with pytest.raises(RecognitionError, match="Ultralytics obb export .*: this rmd has no 'obb' task, so it cannot "
                                               "serve this model"):
        recognise(survey_model(tmp_path / "obb.onnx"))


def test_yolov8_seg_becomes_a_bundle_with_mask_expectations_that_verifies_ingests_and_is_gated(tmp_path: Path) -> None:
    """The real YOLOv8n-seg graph (seeded weights, a driven head: 4x4 boxes of class 1 at stride 32): masks and
    protos read from the outputs, FP32 masks as PNGs."""
    model = export_yolo("yolov8n-seg", 128, nc=3, head=DrivenHead(class_id=1))
    result = init_bundle(model=model, images=image_folder(tmp_path / "images",
                                                                                            size=96),
                         out=tmp_path / "bundle", calibration=3, validation=3)
    manifest = load_bundle_dir(result.root).manifest
    assert manifest.task is Task.INSTANCE_SEGMENTATION
    assert (manifest.instances.mask_coefficients, manifest.instances.protos_output) == (32, "output1")
    expected = yaml.safe_load((result.root / "expected.yaml").read_text())
    masks = [m for entry in expected.values() for m in entry["masks"]]
    assert masks and all((result.root / m).is_file() for m in masks)
    assert sum(len(entry["boxes"]) for entry in expected.values()) == len(masks)
    assert {box[4] for entry in expected.values() for box in entry["boxes"]} == {1}
    tar = tmp_path / "b.tar"
    create_bundle(source=result.root, output=tar)
    verify_bundle(bundle=tar, trust=None, model_check=check_model, allow_unsigned=True)
    installed = ModelStore.open(tmp_path / "store").ingest(tar, trust=None, model_check=check_model,
                                                           allow_unsigned=True)
    report = optimize_bundle(installed.bundle, CPU_ONLY, tmp_path / "out")
    assert report.variant(FP32_FALLBACK).accepted


def test_rtdetr_official_export_is_recognised_by_its_inputs_and_outputs(tmp_path: Path) -> None:
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    sizes = helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2])
    outs = [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 300]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 300, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 300])]
    nodes = [helper.make_node("ConstantOfShape", [f"{o.name}_shape"], [o.name],
                              value=helper.make_tensor("v", o.type.tensor_type.elem_type, [1], [0])) for o in outs]
    graph = helper.make_graph(nodes, "rtdetr", [images, sizes], outs, initializer=[
        helper.make_tensor(f"{o.name}_shape", TensorProto.INT64, [len(s)], s)
        for o, s in zip(outs, ([1, 300], [1, 300, 4], [1, 300]))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "rtdetr.onnx")
    draft = recognise(survey_model(tmp_path / "rtdetr.onnx"))
    assert draft.sections["detection"]["format"].value == "rtdetr"
    assert draft.sections["input"]["name"].value == "images"


def test_ultralytics_classifier_becomes_a_bundle_that_verifies_ingests_and_is_gated(tmp_path: Path) -> None:
    model = export_yolo("yolov8n-cls", 64, nc=3)
    result = init_bundle(model=model, images=image_folder(tmp_path / "images", size=80), out=tmp_path / "bundle",
                         calibration=4, validation=6)
    manifest = load_bundle_dir(result.root).manifest
    assert manifest.task is Task.CLASSIFICATION and manifest.classification.softmax is False  # ends in Softmax
    assert (manifest.input.resize, manifest.input.interpolation) == (ResizeMode.CENTER_CROP,
                                                                     Interpolation.PIL_BILINEAR)
    assert (result.root / "labels.txt").read_text() == "0\n1\n2\n"
    tar = tmp_path / "b.tar"
    create_bundle(source=result.root, output=tar)
    verify_bundle(bundle=tar, trust=None, model_check=check_model, allow_unsigned=True)
    installed = ModelStore.open(tmp_path / "store").ingest(tar, trust=None, model_check=check_model,
                                                           allow_unsigned=True)
    report = optimize_bundle(installed.bundle, CPU_ONLY, tmp_path / "out")
    assert report.variant(FP32_FALLBACK).accepted


def test_ultralytics_detector_manifest_reads_as_the_exporter_preprocesses(tmp_path: Path) -> None:
    """The drafted manifest, read by a robot's reader, gives Ultralytics' LetterBox (decoding: the detect tests)."""
    from robot_model_deployer.authoring.manifest_text import BundleLayout, render_manifest
    from robot_model_deployer.bundle.manifest import parse_manifest

    draft = recognise(survey_model(export_yolo("yolo11n", 320, nc=3)))
    text = render_manifest(draft, BundleLayout("yolo11n", "0.1.0", "model.onnx", "labels.txt", "calibration",
                                               "validation", "expected.yaml", "FP32"))
    spec = parse_manifest(text).input
    assert (spec.resize, spec.letterbox_align, spec.letterbox_fill, spec.interpolation, spec.scale) == (
        ResizeMode.LETTERBOX, LetterboxAlign.CENTER, 114, Interpolation.OPENCV_LINEAR, pytest.approx(1 / 255))


@pytest.mark.parametrize("arch", ["yolov8n", "yolo11n"])
def test_yolo_detector_and_a_folder_become_a_bundle_that_deploys_and_gives_the_right_boxes(
        tmp_path: Path, arch: str) -> None:
    """Driven head (every stride-32 cell one box of class 2): init, verify, ingest, the optimize gate, then the
    served boxes on 640x480 frames are those cells mapped back through Ultralytics' letterbox."""
    from robot_model_deployer.inference.engine import InferenceEngine
    from test_ultralytics_layouts import sorted_rows, tiled_cells

    model = export_yolo(arch, 320, nc=3, head=DrivenHead(class_id=2))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(images / f"{index}.jpg")
    result = init_bundle(model=model, images=images, out=tmp_path / "bundle", calibration=3, validation=3)
    manifest = load_bundle_dir(result.root).manifest
    assert manifest.detection.format.value == "yolov8" and result.choices == ()
    manifest_text = (result.root / "manifest.yaml").read_text().replace("max_detections: 100", "max_detections: 300")
    (result.root / "manifest.yaml").write_text(manifest_text)  # the author raises a choice: 100 cells, all kept
    assert rmd_ok(["bundle", "expected", str(result.root)])
    tar = tmp_path / "b.tar"
    create_bundle(source=result.root, output=tar)
    verify_bundle(bundle=tar, trust=None, model_check=check_model, allow_unsigned=True)
    installed = ModelStore.open(tmp_path / "store").ingest(tar, trust=None, model_check=check_model,
                                                           allow_unsigned=True)
    report = optimize_bundle(installed.bundle, CPU_ONLY, tmp_path / "out")
    assert report.variant(FP32_FALLBACK).accepted
    frame = np.asarray(Image.open(images / "0.jpg").convert("RGB"))
    want = sorted_rows(tiled_cells(640, 480, 320))  # cells wholly in the letterbox padding are not reported
    fp32 = InferenceEngine.from_bundle(installed.bundle, warmup_runs=1).infer(frame)
    assert set(fp32.labels) == {"2"}
    np.testing.assert_allclose(sorted_rows(fp32.boxes), want, atol=0.05)
    chosen = report.chosen_variant
    served = chosen.artifact.open_engine(tmp_path / "out", installed.bundle.manifest, installed.bundle.labels,
                                         warmup_runs=1).infer(frame)
    # The variant the gate chose (INT8 where it passed) keeps every box within a pixel or two.
    assert set(served.labels) == {"2"}
    np.testing.assert_allclose(sorted_rows(served.boxes), want, atol=2.5)


def rmd_ok(argv: list[str]) -> bool:
    from robot_model_deployer.cli.main import main

    return main(argv) == 0
