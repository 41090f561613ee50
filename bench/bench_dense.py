#!/usr/bin/env python3
"""Segmentation and pose models through the optimize stage on this CPU: INT8 against FP32, and decode cost.

Ultralytics' yolov8n-seg, yolov8n-pose and yolo26n-sem, exported here from
their model YAML files with seeded weights (testing/yolo_export.py; no
licensed weights for these tasks are reachable), the seg and pose heads
driven so every anchor of the coarsest level gives a box (so masks and
keypoints are decoded for real), the -sem classifier without its bias and
louder (testing.dense_models.spread_class_map: seeded weights alone label
every pixel with one class). Calibration and validation images are
crops of skimage's photos. In one run, per model:
- optimize_bundle for the target (default x86_cpu): each variant's status,
  p50/p99 latency of the raw model, and its mask IoU / OKS against FP32;
- the INT8 speed ratio (FP32 p50 / INT8 p50) and whether INT8 passed the gate;
- the decoder's own cost per frame (outputs to label image, masks or
  keypoints in image pixels, on a 640x480 camera frame), p50 over --runs.

    source scripts/env.sh
    python bench/bench_dense.py [--imgsz 320] [--runs N] [--target NAME] [--json-out FILE]

Needs Ultralytics (scripts/setup.sh installs it for tests; AGPL-3.0, a
test-time tool) and scikit-image (the demo extra).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.demo.zoo import photo_variants
from robot_model_deployer.inference.dense import decode_dense
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor
from robot_model_deployer.optimize.hardware import detect_hardware
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, optimize_bundle
from robot_model_deployer.optimize.report import format_table
from robot_model_deployer.optimize.targets import Precision, load_target_profile
from robot_model_deployer.testing.dense_models import spread_class_map
from robot_model_deployer.testing.quant_models import write_image_bundle
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo
from robot_model_deployer.validation.metrics import percentile

MODELS = {
    "yolov8n-seg": ("instance_segmentation", 80, DrivenHead(class_id=0), {"instances": {"mask_coefficients": 32}},
                    "mask_iou"),
    "yolov8n-pose": ("pose", 1, DrivenHead(), {}, "keypoint_oks"),
    "yolo26n-sem": ("segmentation", 19, None, {"segmentation": {"format": "class_ids"}}, "mask_iou"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgsz", type=int, default=320, help="model input size (square)")
    parser.add_argument("--runs", type=int, default=50, help="benchmark runs per variant and decode runs")
    parser.add_argument("--target", default="x86_cpu", help="target profile")
    parser.add_argument("--calibration", type=int, default=16, help="calibration images")
    parser.add_argument("--validation", type=int, default=12, help="validation images")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()

    hardware = detect_hardware()
    target = load_target_profile(args.target)
    target = type(target)(**{**target.__dict__, "benchmark_runs": args.runs})
    machine = {"cpu": hardware.cpu.model_name, "cores": os.cpu_count(), "python": platform.python_version(),
               "onnxruntime": ort.__version__, "load_1min": round(os.getloadavg()[0], 2), "target": target.name,
               "imgsz": args.imgsz}
    print(f"machine: {machine}\n", flush=True)
    results: dict[str, Any] = {"machine": machine, "models": {}}
    rng = np.random.default_rng(0)
    images = list(photo_variants(rng, args.calibration + args.validation))
    for arch, (task, classes, head, sections, measure) in MODELS.items():
        model = onnx.load(str(export_yolo(arch, args.imgsz, nc=classes, head=head)))
        if task == "segmentation":
            model = spread_class_map(model)  # seeded weights alone give one class everywhere
        manifest = {"schema_version": 1, "name": arch, "version": "1.0.0", "task": task, "model": "model.onnx",
                    "input": {"width": args.imgsz, "height": args.imgsz, "resize": "letterbox",
                              "letterbox_fill": 114},
                    "detection": {"score_threshold": 0.5}, **sections}
        with tempfile.TemporaryDirectory(prefix="rmd-bench-dense-") as scratch:
            root = write_image_bundle(Path(scratch) / "bundle", model, manifest,
                                      images[:args.calibration], images[args.calibration:], labels=())
            bundle = load_bundle_dir(root)
            started = time.monotonic()
            report = optimize_bundle(bundle, target, Path(scratch) / "out", hardware=hardware,
                                     progress=lambda p: print(f"  [{p.fraction:4.0%}] {p.variant}: {p.message}",
                                                              file=sys.stderr, flush=True))
            wall = time.monotonic() - started
            decode_ms = decode_cost(bundle, images[-1], args.runs)
        fp32 = report.variant(FP32_FALLBACK)
        int8 = [v for v in report.variants if v.precision is Precision.INT8]
        best = min((v for v in int8 if v.accepted), key=lambda v: v.p50_ms, default=None)
        summary = {
            "task": task, "measure": measure, "wall_seconds": round(wall, 1), "chosen": report.chosen,
            "fp32_p50_ms": fp32.p50_ms, "decode_p50_ms": round(decode_ms, 3),
            "int8": [{"name": v.name, "status": v.status.value, "p50_ms": v.p50_ms, measure: getattr(v, measure),
                      "reason": v.reason} for v in int8],
            "best_int8_speedup_p50": round(fp32.p50_ms / best.p50_ms, 2) if best and fp32.p50_ms else None,
        }
        results["models"][arch] = summary
        print(f"== {arch} ({task}), target {target.name}, {wall:.0f} s")
        print(format_table(report))
        speed = (f"INT8 {summary['best_int8_speedup_p50']:.2f}x FP32" if best
                 else "no INT8 variant passed the gate")
        print(f"{speed}; decode {decode_ms:.2f} ms per 640x480 frame (FP32 model {fp32.p50_ms} ms)\n")
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def decode_cost(bundle, image: np.ndarray, runs: int) -> float:
    """p50 ms of decode_dense alone (the model run once, its outputs decoded ``runs`` times)."""
    engine = InferenceEngine.from_bundle(bundle, warmup_runs=1)
    frame = np.ascontiguousarray(np.resize(image, (480, 640, 3)))
    tensor, transform = Preprocessor(bundle.manifest.input)(frame, PixelFormat.RGB8)
    outputs = engine.session.run(None, {engine.input_name: tensor})  # Ultralytics' order: detections, protos
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        decode_dense(outputs, bundle.manifest, bundle.labels, transform, 640, 480)
        times.append((time.perf_counter() - start) * 1000.0)
    return percentile(times, 50)


if __name__ == "__main__":
    sys.exit(main())
