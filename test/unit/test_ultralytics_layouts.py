"""Real Ultralytics architectures (exported at test time by testing/yolo_export.py) decoded and self-checked.

Random weights say nothing about a picture, so correctness is checked on
driven heads (DrivenHead): every cell of the coarsest stride gives one box of
one class, so the boxes a decoder must find are known. The issue's case, a
YOLOv8 [1, 84, 8400] declared ``format: yolo``, is refused at ingest and by
``rmd bundle verify`` with the fix. Skipped, saying why, without Ultralytics.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_model_deployer.bundle.errors import ModelCheckError
from robot_model_deployer.bundle.filelist import write_file_list
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import TrustStore, generate_keypair
from robot_model_deployer.cli.main import main
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.model_check import IsolatedModelCheck, check_model
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.testing.models import write_bundle
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, require_ultralytics

COCO_SIZED = tuple(f"class_{i}" for i in range(80))
THREE = ("a", "b", "c")
IMGSZ = 320


@pytest.fixture(scope="module", autouse=True)
def ultralytics() -> str:
    return require_ultralytics()


def manifest(fmt: str, imgsz: int = IMGSZ, images: tuple[str, ...] = (), **detection) -> dict:
    return {
        "schema_version": 1, "name": "yolo", "version": "1.0.0", "task": "detection",
        "model": "model.onnx", "labels": "labels.txt",
        "input": {"width": imgsz, "height": imgsz, "resize": "letterbox", "letterbox_fill": 114,
                  "color_order": "rgb", "layout": "nchw", "dtype": "float32", "scale": 1.0 / 255.0},
        "detection": {"format": fmt, "score_threshold": 0.25, "iou_threshold": 0.7, "max_detections": 300,
                      **detection},
        **({"validation": {"images": list(images)}} if images else {}),
    }


def photos(count: int = 2, width: int = 640, height: int = 480) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    files = {}
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
        files[f"validation/{index}.png"] = buffer.getvalue()
    return files


def yolo_bundle(root: Path, model: Path, fmt: str, labels: tuple[str, ...], imgsz: int = IMGSZ,
                **detection) -> Path:
    images = photos()
    root = write_bundle(root, model.read_bytes(), manifest(fmt, imgsz, tuple(sorted(images)), **detection),
                        labels=labels, extra_files=images)
    write_file_list(root)
    return root


def tiled_cells(width: int, height: int, imgsz: int, stride: int = 32) -> np.ndarray:
    """The boxes of a driven head (one stride-square per coarsest cell) mapped back through the letterbox."""
    scale = min(imgsz / width, imgsz / height)
    pad_x, pad_y = (imgsz - round(width * scale)) // 2, (imgsz - round(height * scale)) // 2
    cells = imgsz // stride
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    boxes = np.stack([xs * stride, ys * stride, (xs + 1) * stride, (ys + 1) * stride], -1).reshape(-1, 4)
    boxes = (boxes - [pad_x, pad_y, pad_x, pad_y]) / scale
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]  # cells wholly in the padding


def sorted_rows(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.lexsort(boxes.T[::-1])]


@pytest.mark.parametrize(("arch", "fmt", "end2end"), [("yolov8n", "yolov8", False), ("yolo11n", "yolov8", False),
                                                      ("yolov10n", "end2end", True), ("yolo26n", "end2end", True)])
def test_driven_ultralytics_heads_decode_to_the_known_boxes(tmp_path: Path, arch: str, fmt: str,
                                                            end2end: bool) -> None:
    model = export_yolo(arch, IMGSZ, nc=3, end2end=end2end, head=DrivenHead(class_id=1))
    root = yolo_bundle(tmp_path / arch, model, fmt, THREE)
    check_model(root)
    engine = InferenceEngine.from_bundle(load_bundle_dir(root))
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    prediction = engine.infer(image)
    expected = tiled_cells(640, 480, IMGSZ)
    assert set(prediction.labels) == {"b"}
    np.testing.assert_allclose(prediction.scores, 1 / (1 + np.exp(-10.0)), atol=1e-4)
    np.testing.assert_allclose(sorted_rows(prediction.boxes), sorted_rows(expected), atol=0.05)


def test_yolov8_declared_as_yolo_is_refused_with_the_fix(tmp_path: Path) -> None:
    model = export_yolo("yolov8n", 640)
    root = yolo_bundle(tmp_path / "wrong", model, "yolo", COCO_SIZED, imgsz=640)
    expected = ("output 'output0' [1, 84, 8400] does not fit detection.format yolo [1, N, 5 + C]: its last axis "
                "(8400) is the candidate axis (one per anchor at this input size); it looks like YOLOv8 "
                "[1, 84, 8400] ([1, 4 + C, N], C=80): set detection.format: yolov8; fix the model or the "
                "manifest's detection section")
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    assert expected in str(refused.value)

    # rmd bundle verify: one line on stderr with the fix, exit 1.
    keys = generate_keypair(out_dir=tmp_path / "keys")
    tar = tmp_path / "wrong.tar"
    create_bundle(source=root, output=tar)
    sign_bundle(bundle=tar, key=keys.private_key)
    assert main(["bundle", "verify", str(tar), "--trust", str(tmp_path / "keys")]) == 1

    # Ingest (the manager's path, in the isolated child): refused, nothing installed.
    store = ModelStore.open(tmp_path / "store")
    with pytest.raises(ModelCheckError) as ingest:
        store.ingest(tar, trust=TrustStore.load(tmp_path / "keys"), model_check=IsolatedModelCheck())
    assert expected in str(ingest.value)
    assert store.list_versions() == []


def test_verify_prints_the_fix_for_yolov8_declared_as_yolo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = yolo_bundle(tmp_path / "wrong", export_yolo("yolov8n", 640), "yolo", COCO_SIZED, imgsz=640)
    assert main(["bundle", "verify", str(root), "--allow-unsigned"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "NOT SIGNED" not in line]
    assert len(errors) == 1
    assert "looks like YOLOv8 [1, 84, 8400] ([1, 4 + C, N], C=80): set detection.format: yolov8" in errors[0]


@pytest.mark.parametrize("arch", ["yolov8n", "yolo11n"])
def test_ultralytics_detectors_declared_right_verify(tmp_path: Path, arch: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = yolo_bundle(tmp_path / arch, export_yolo(arch, 640), "yolov8", COCO_SIZED, imgsz=640)
    assert main(["bundle", "verify", str(root), "--allow-unsigned"]) == 0, capsys.readouterr().err


def test_an_end2end_export_declared_as_yolov8_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = yolo_bundle(tmp_path / "e2e", export_yolo("yolo26n", IMGSZ, end2end=True), "yolov8", COCO_SIZED)
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    assert "set detection.format: end2end" in str(refused.value)


def test_a_segmentation_export_declared_as_a_detector_is_refused(tmp_path: Path) -> None:
    root = yolo_bundle(tmp_path / "seg", export_yolo("yolov8n-seg", IMGSZ), "yolov8", COCO_SIZED)
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    message = str(refused.value)
    assert "holds 112 class scores but labels.txt lists 80 classes" in message
    assert "it looks like YOLOv8-seg [1, 116, 2100]" in message


def test_a_wrong_labels_file_for_a_yolov8_export_is_refused(tmp_path: Path) -> None:
    root = yolo_bundle(tmp_path / "labels", export_yolo("yolov8n", IMGSZ), "yolov8", COCO_SIZED[:79])
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    assert "holds 80 class scores but labels.txt lists 79 classes" in str(refused.value)
    assert "manifest's labels section" in str(refused.value)
