#!/usr/bin/env python3
"""Per-frame preprocessing time: the Pillow/NumPy path rmd had before, against today's Preprocessor.

Measures, in one run on this machine, for camera frames of three sizes and
three model inputs (Ultralytics 640x640 letterbox float32 NCHW, an ImageNet
classifier 224x224 centre crop with mean/std, a TF SSD 320x320 uint8 NHWC):
- before: the path every frame took until issue 14 (NumPy colour swap,
  Pillow bilinear resize, a NumPy letterbox canvas, normalise then
  transpose), frozen below as the baseline;
- pil_bilinear: today's Preprocessor with the default interpolation (old
  bundles: OpenCV colour conversion and layout, Pillow's resize);
- opencv_linear: today's Preprocessor with cv2 INTER_LINEAR (what
  `rmd bundle init` writes for Ultralytics and TF exports);
and prints median and p90 per frame and the ratio before / after, as a table
and with --json as JSON.

    source scripts/env.sh
    python bench/bench_preprocess.py [--frames 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from robot_model_deployer.bundle.manifest import (ColorOrder, InputSpec, Interpolation, Layout, ResizeMode,
                                                  TensorType)
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor

CAMERAS = {"vga": (640, 480), "hd": (1280, 720), "full_hd": (1920, 1080)}
MODELS = {
    "yolo_640_letterbox_f32_nchw": InputSpec(width=640, height=640, resize=ResizeMode.LETTERBOX),
    "imagenet_224_center_crop_f32_nchw": InputSpec(width=224, height=224, resize=ResizeMode.CENTER_CROP,
                                                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "ssd_320_letterbox_u8_nhwc": InputSpec(width=320, height=320, resize=ResizeMode.LETTERBOX, letterbox_fill=0,
                                           layout=Layout.NHWC, dtype=TensorType.UINT8),
}


def before(spec: InputSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The pre-issue-14 preprocessing of a bgr8 frame for an RGB model (geometry as Preprocessor's)."""
    std = np.asarray(spec.std, np.float32).reshape(1, 1, 3)
    multiplier = np.float32(spec.scale) / std
    bias = np.asarray(spec.mean, np.float32).reshape(1, 1, 3) / std

    def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
        if image.shape[1] == width and image.shape[0] == height:
            return image
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))

    def run(bgr: np.ndarray) -> np.ndarray:
        image = bgr[:, :, ::-1]
        height, width = image.shape[:2]
        tw, th = spec.width, spec.height
        if spec.resize is ResizeMode.LETTERBOX:
            scale = min(tw / width, th / height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            pad_x, pad_y = (tw - new_w) // 2, (th - new_h) // 2
            pixels = np.full((th, tw, 3), spec.letterbox_fill, dtype=np.uint8)
            pixels[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resize(image, new_w, new_h)
        else:
            scale = max(tw / width, th / height)
            new_w, new_h = max(tw, round(width * scale)), max(th, round(height * scale))
            cx, cy = (new_w - tw) // 2, (new_h - th) // 2
            pixels = resize(image, new_w, new_h)[cy:cy + th, cx:cx + tw]
        tensor = pixels if spec.dtype is TensorType.UINT8 else (pixels.astype(np.float32) * multiplier - bias)
        if spec.layout is Layout.NCHW:
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[None])

    return run


def timed(run: Callable[[np.ndarray], object], frames: list[np.ndarray], count: int) -> dict[str, float]:
    for frame in frames[:3]:
        run(frame)
    times = []
    for index in range(count):
        start = time.perf_counter()
        run(frames[index % len(frames)])
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames timed per case")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    results = []
    for camera, (width, height) in CAMERAS.items():
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
        for model, spec in MODELS.items():
            row: dict[str, object] = {"camera": camera, "model": model}
            row["before"] = timed(before(spec), frames, args.frames)
            for interpolation in (Interpolation.PIL_BILINEAR, Interpolation.OPENCV_LINEAR):
                preprocess = Preprocessor(replace(spec, interpolation=interpolation, color_order=ColorOrder.RGB))
                row[interpolation.value] = timed(lambda f: preprocess(f, PixelFormat.BGR8), frames, args.frames)
            for key in (Interpolation.PIL_BILINEAR.value, Interpolation.OPENCV_LINEAR.value):
                row[f"speedup_{key}"] = round(row["before"]["median_ms"] / row[key]["median_ms"], 2)
            results.append(row)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "cv2": cv2.__version__, "cv2_threads": cv2.getNumThreads(),
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "frames_per_case": args.frames, "camera_format": "bgr8", "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"machine: {report['machine']}")
    print(f"{'camera':8} {'model':36} {'before':>8} {'pil':>8} {'opencv':>8} {'x pil':>6} {'x cv':>6}  (median ms)")
    for row in results:
        print(f"{row['camera']:8} {row['model']:36} {row['before']['median_ms']:8.3f} "
              f"{row['pil_bilinear']['median_ms']:8.3f} {row['opencv_linear']['median_ms']:8.3f} "
              f"{row['speedup_pil_bilinear']:6.2f} {row['speedup_opencv_linear']:6.2f}")


if __name__ == "__main__":
    main()
