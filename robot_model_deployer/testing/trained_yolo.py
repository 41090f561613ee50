"""A real, trained YOLOv8 detector for the benchmarks: tau-fibrils-yolo's YOLOv8n (AGPL-3.0).

No PyPI package we found ships Ultralytics' COCO weights; ``tau-fibrils-yolo``
(EPFL Center for Imaging, AGPL-3.0, installed ``--no-deps``) ships a
YOLOv8n-OBB fine-tuned to find tau fibrils in electron micrographs, and the
micrograph it was shown on (sample.tif, courtesy of EPFL's LBEM). Its
backbone, neck and head are YOLOv8n's, trained, so INT8 errors show as
they would on any YOLOv8n.

The checkpoint is exported to ONNX at 640 by Ultralytics (a test-time tool,
in a child process), and the output's last row, the box angle of the
oriented-box head, is sliced off: what remains is the yolov8 layout
[1, 4 + 1, N] of (cx, cy, w, h, score), boxes compared axis-aligned. Images
are 640x640 tiles of sample.tif, made 8-bit the way the package does it;
thresholds are the package's defaults (confidence 0.05, NMS IoU 0.5).
Nothing here is committed: the bundle is built under the zoo cache. The
export runs in a child Python (``python -m
robot_model_deployer.testing.trained_yolo``), as in yolo_export.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import yaml
from onnx import helper, numpy_helper
from PIL import Image

from robot_model_deployer.testing.yolo_export import _answer_torchvision_probe

ZOO_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_model_deployer" / "zoo"
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # so the child finds this module


class TrainedModelUnavailable(RuntimeError):
    """The package with the weights, or the exporter, is not installed; the message says what to install."""

TAU_NAME = "tau_fibrils_yolov8n"
TAU_VERSION = "0.2.0"
TILE = 640
EXPORT_TIMEOUT_S = 600.0


def tau_fibrils_files() -> tuple[Path, Path]:
    """The installed wheel's checkpoint and sample micrograph (found without importing the package)."""
    spec = importlib.util.find_spec("tau_fibrils_yolo")
    if spec is None or not spec.submodule_search_locations:
        raise TrainedModelUnavailable(f"tau-fibrils-yolo is not installed: pip install --no-deps tau-fibrils-yolo=={TAU_VERSION}")
    root = Path(list(spec.submodule_search_locations)[0])
    weights, sample = root / "model" / "100ep.pt", root / "sample" / "sample.tif"
    for path in (weights, sample):
        if not path.is_file():
            raise TrainedModelUnavailable(f"{path} is missing: this tau-fibrils-yolo version does not ship it")
    if importlib.util.find_spec("ultralytics") is None:
        raise TrainedModelUnavailable("exporting the checkpoint needs ultralytics (test-time tool): pip install --no-deps "
                             "ultralytics")
    return weights, sample


def tau_fibrils_bundle(cache_dir: str | Path | None = None) -> Path:
    """The YOLOv8n bundle directory (built once): even tiles calibrate, odd tiles validate."""
    root = Path(cache_dir if cache_dir is not None else ZOO_CACHE) / TAU_NAME
    if (root / "manifest.yaml").is_file():
        return root
    weights, sample = tau_fibrils_files()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _export_without_angle(weights, tmp / "model.onnx")
        (tmp / "labels.txt").write_text("tau-fibril\n", encoding="utf-8")
        tiles = list(_tiles(sample))
        calibration = _write_images(tmp, "calibration", iter(tiles[0::2]))
        validation = _write_images(tmp, "validation", iter(tiles[1::2]))
        manifest: dict[str, Any] = {
            "schema_version": 1, "name": "tau-fibrils-yolov8n", "version": TAU_VERSION, "task": "detection",
            "description": "tau-fibrils-yolo 100ep.pt (AGPL-3.0): YOLOv8n-OBB, angle row dropped",
            "model": "model.onnx", "labels": "labels.txt",
            "input": {"width": TILE, "height": TILE, "resize": "letterbox", "color_order": "rgb",
                      "layout": "nchw", "dtype": "float32", "letterbox_fill": 114},
            "detection": {"format": "yolov8", "score_threshold": 0.05, "iou_threshold": 0.5,
                          "max_detections": 300},
            "calibration": {"images": calibration},
            "validation": {"images": validation},
            "acceptance": {"min_detection_f1": 0.95, "max_score_drift": 0.1},
        }
        # The manifest last: its presence marks a finished bundle; the rename makes it appear whole.
        (tmp / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_images(root: Path, folder: str, images: Iterator[np.ndarray]) -> list[str]:
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images):
        relative = f"{folder}/{index:03d}.png"
        Image.fromarray(image).save(root / relative)
        names.append(relative)
    return names


def _tiles(sample: Path) -> Iterator[np.ndarray]:
    """640x640 RGB tiles with 10% overlap, as the package tiles; uint16 scaled to 8 bits as it does."""
    from skimage import io

    image = io.imread(str(sample))
    gray = (image.astype(np.float64) / np.iinfo(np.uint16).max * 255).astype(np.uint8)
    step = int(TILE * 0.9)
    for y in range(0, gray.shape[0] - TILE + 1, step):
        for x in range(0, gray.shape[1] - TILE + 1, step):
            yield np.repeat(gray[y:y + TILE, x:x + TILE, None], 3, axis=2)


def _export_without_angle(weights: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tau-export-") as scratch:
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_VERBOSE="false",
                   YOLO_CONFIG_DIR=str(Path(scratch) / "config"),
                   PYTHONPATH=os.pathsep.join(filter(None, (_PACKAGE_PARENT, os.environ.get("PYTHONPATH")))))
        local = Path(scratch) / weights.name
        local.write_bytes(weights.read_bytes())
        done = subprocess.run([sys.executable, "-m", __name__, str(local)], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False)
        exported = local.with_suffix(".onnx")
        if done.returncode != 0 or not exported.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise TrainedModelUnavailable(f"Ultralytics could not export {weights.name}:\n{tail}")
        model = onnx.load(str(exported))
    output = model.graph.output[0]
    rows = output.type.tensor_type.shape.dim[1].dim_value
    if rows != 6:
        raise TrainedModelUnavailable(f"expected the OBB output [1, 6, N] (box, 1 class, angle), got {rows} rows")
    raw = output.name
    for node in model.graph.node:
        node.output[:] = [f"{raw}_obb" if o == raw else o for o in node.output]
    for name, value in (("rmd_rows_start", [0]), ("rmd_rows_end", [5]), ("rmd_rows_axis", [1])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    model.graph.node.append(helper.make_node("Slice", [f"{raw}_obb", "rmd_rows_start", "rmd_rows_end",
                                                       "rmd_rows_axis"], [raw], name="rmd_drop_angle"))
    output.type.tensor_type.shape.dim[1].dim_value = 5
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export an Ultralytics checkpoint to ONNX (test-time tool).")
    parser.add_argument("weights", type=Path)
    args = parser.parse_args(argv)
    _answer_torchvision_probe()
    from ultralytics import YOLO

    YOLO(str(args.weights)).export(format="onnx", imgsz=TILE, opset=17, simplify=False, dynamic=False, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
