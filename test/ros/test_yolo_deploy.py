"""An Ultralytics YOLOv8n export deployed over real DDS: verified, optimized and gated, serving the right boxes.

The model is yolov8n built from Ultralytics' YAML and exported by it
(testing/yolo_export.py) with a driven head: every stride-32 cell says class
"b", so the boxes it must publish are known, mapped back through the
letterbox to the camera's pixels. Skipped, saying why, without Ultralytics.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from robot_model_deployer.action import Deploy
from robot_model_deployer.bundle.filelist import build_file_list
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import load_private_key, sign_file_list
from robot_model_deployer.testing.models import write_bundle
from robot_model_deployer.testing.ros_graph import wait_for
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, require_ultralytics
from test_deploy_multiprocess import FAST_ACCEPTANCE, MANAGER, Camera, Graph, _graph

IMGSZ = 320
CAMERA_WIDTH, CAMERA_HEIGHT = 64, 48  # the test Camera's frames


@pytest.fixture
def optimizing_graph(tmp_path: Path, request: pytest.FixtureRequest):
    require_ultralytics()
    yield from _graph(tmp_path, request, optimize_target="x86_cpu")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def known_boxes(width: int, height: int, stride: int = 32) -> np.ndarray:
    """One stride square per coarsest cell of the 320 input, mapped back through the letterbox and clipped."""
    scale = min(IMGSZ / width, IMGSZ / height)
    pad_x, pad_y = (IMGSZ - round(width * scale)) // 2, (IMGSZ - round(height * scale)) // 2
    ys, xs = np.meshgrid(np.arange(IMGSZ // stride), np.arange(IMGSZ // stride), indexing="ij")
    boxes = np.stack([xs * stride, ys * stride, (xs + 1) * stride, (ys + 1) * stride], -1).reshape(-1, 4)
    boxes = (boxes - [pad_x, pad_y, pad_x, pad_y]) / scale
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]  # cells wholly in the padding


def test_a_yolov8n_export_deploys_through_the_optimize_gate_and_publishes_the_known_boxes(
        optimizing_graph: Graph) -> None:
    graph = optimizing_graph
    model = export_yolo("yolov8n", IMGSZ, nc=3, head=DrivenHead(class_id=1))
    rng = np.random.default_rng(0)
    images = {f"data/{i}.png": _png(rng.integers(0, 256, (CAMERA_HEIGHT, CAMERA_WIDTH, 3), dtype=np.uint8))
              for i in range(4)}
    manifest = {
        "schema_version": 1, "name": "yolov8n", "version": "1.0.0", "task": "detection",
        "model": "model.onnx", "labels": "labels.txt",
        "input": {"width": IMGSZ, "height": IMGSZ, "resize": "letterbox", "letterbox_fill": 114,
                  "color_order": "rgb", "layout": "nchw", "dtype": "float32", "scale": 1.0 / 255.0},
        "detection": {"format": "yolov8", "score_threshold": 0.25, "iou_threshold": 0.7, "max_detections": 300},
        "calibration": {"images": sorted(images)}, "validation": {"images": sorted(images)},
        "acceptance": dict(FAST_ACCEPTANCE),
    }
    source = write_bundle(graph.work / "yolov8n", model.read_bytes(), manifest, labels=("a", "b", "c"),
                          extra_files=images)
    file_list = build_file_list(source).to_bytes()
    bundle = graph.work / "yolov8n.tar"
    write_bundle_tar(output=bundle, root=source, file_list_bytes=file_list,
                     signature=sign_file_list(file_list, load_private_key(graph.keys / "signing.key")))

    client = graph.client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
    assert client.wait_for_server(timeout_sec=20.0)
    stages: list[str] = []
    sent = client.send_goal_async(Deploy.Goal(bundle_path=str(bundle)),
                                  feedback_callback=lambda m: stages.append(m.feedback.stage))
    wait_for(lambda: sent.done(), 20.0, "the goal to be accepted")
    result_future = sent.result().get_result_async()
    wait_for(lambda: result_future.done(), 400.0, "the deployment to finish")
    result = result_future.result().result
    assert result.accepted, result.reason
    assert "optimize" in stages
    report = json.loads(result.report_json)["optimize"]
    chosen = next(v for v in report["variants"] if v["name"] == report["chosen"])
    assert chosen["status"] == "accepted" and chosen["detection_f1"] >= 0.95, chosen

    with Camera(graph) as camera:
        start = time.monotonic()
        wait_for(lambda: any(r.model_name == "yolov8n" and (r.header.stamp.sec, r.header.stamp.nanosec)
                             in camera.sent for r in graph.results_since(start)), 30.0, "a yolov8n result")
    message = next(r for r in graph.results_since(start) if r.model_name == "yolov8n")
    assert message.task == "detection"
    assert set(message.labels) == {"b"}
    boxes = np.asarray(message.boxes, np.float32).reshape(-1, 4)
    expected = known_boxes(CAMERA_WIDTH, CAMERA_HEIGHT)
    order = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(boxes), order(expected), atol=0.5)  # INT8 may be chosen: its step
    np.testing.assert_allclose(message.scores, 1 / (1 + np.exp(-10.0)), atol=0.05)
