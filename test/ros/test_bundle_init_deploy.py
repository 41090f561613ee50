"""A bundle made by ``rmd bundle init`` from an Ultralytics YOLOv8n file and a folder of images, deployed over
real DDS through the manager: verified, optimized and gated, shadowed, serving the known boxes.

The export has a driven head (testing/yolo_export.py: every stride-32 cell says class "1"), so the boxes the
perception node must publish are known. Skipped, saying why, without Ultralytics.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image as PILImage

from robot_model_deployer.action import Deploy
from robot_model_deployer.authoring.init import init_bundle
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.testing.ros_graph import wait_for
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo
from test_deploy_multiprocess import FAST_ACCEPTANCE, MANAGER, Camera, Graph
from test_yolo_deploy import CAMERA_HEIGHT, CAMERA_WIDTH, IMGSZ, known_boxes, optimizing_graph  # noqa: F401


def test_a_bundle_from_rmd_bundle_init_deploys_and_publishes_the_known_boxes(optimizing_graph: Graph) -> None:
    graph = optimizing_graph
    images = graph.work / "photos"
    images.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        PILImage.fromarray(rng.integers(0, 256, (CAMERA_HEIGHT, CAMERA_WIDTH, 3), dtype=np.uint8)).save(
            images / f"frame-{index}.png")
    result = init_bundle(model=export_yolo("yolov8n", IMGSZ, nc=3, head=DrivenHead(class_id=1)), images=images,
                         out=graph.work / "bundle", name="yolov8n-init", version="1.0.0", calibration=3,
                         validation=3)
    # The author's one edit: this test's fast shadow and probation.
    manifest_path = result.root / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["acceptance"].update(FAST_ACCEPTANCE)
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    bundle = graph.work / "yolov8n-init.tar"
    create_bundle(source=result.root, output=bundle)
    sign_bundle(bundle=bundle, key=graph.keys / "signing.key")

    client = graph.client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
    assert client.wait_for_server(timeout_sec=20.0)
    sent = client.send_goal_async(Deploy.Goal(bundle_path=str(bundle)))
    wait_for(lambda: sent.done(), 20.0, "the goal to be accepted")
    result_future = sent.result().get_result_async()
    wait_for(lambda: result_future.done(), 400.0, "the deployment to finish")
    outcome = result_future.result().result
    assert outcome.accepted, outcome.reason
    report = json.loads(outcome.report_json)["optimize"]
    chosen = next(v for v in report["variants"] if v["name"] == report["chosen"])
    assert chosen["status"] == "accepted" and chosen["detection_f1"] >= 0.95, chosen

    with Camera(graph) as camera:
        start = time.monotonic()
        wait_for(lambda: any(r.model_name == "yolov8n-init" and (r.header.stamp.sec, r.header.stamp.nanosec)
                             in camera.sent for r in graph.results_since(start)), 30.0, "a result of the new model")
    message = next(r for r in graph.results_since(start) if r.model_name == "yolov8n-init")
    assert set(message.labels) == {"1"}  # the names Ultralytics wrote into the file, via init's labels.txt
    boxes = np.asarray(message.boxes, np.float32).reshape(-1, 4)
    order = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(boxes), order(known_boxes(CAMERA_WIDTH, CAMERA_HEIGHT)), atol=0.5)
