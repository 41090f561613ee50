"""Ultralytics YOLO architectures exported to ONNX at test time, cached.

Ultralytics (AGPL-3.0) is a test-time tool only: never imported by the
package, never shipped, installed by scripts/setup.sh without its
dependencies (see README, licences). Models are built from its model YAML
files (yolov8n, yolo11n, yolov8n-seg, yolov8n-pose, yolov10n, yolo26n, rtdetr-l, ...)
with seeded random weights, so they have the real graph of the real
architecture (head, DFL, anchors, output layout) but say nothing about the
picture. ``DrivenHead`` makes the outputs known instead: the last
convolutions of the detection head get zero weights and chosen biases, so
every anchor of one stride level gives a box of one class with one score,
whatever the image; with ``distance=0.5`` those boxes tile the input
exactly (one per cell, no overlap), so a decoder's answer can be checked box
by box.

The export runs in a child Python (``python -m
robot_model_deployer.testing.yolo_export``): torch and Ultralytics stay out
of the test process, and Ultralytics' habit of writing next to the working
directory stays in a scratch one. Files are cached under
~/.cache/robot_model_deployer/yolo/, keyed by Ultralytics' version and every
option.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_model_deployer" / "yolo"
EXPORT_TIMEOUT_S = 600.0
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # so the child finds this module
_MISSING = ("ultralytics is not installed (a test-time tool, AGPL-3.0: scripts/setup.sh installs it "
            "with --no-deps from scripts/requirements-nodeps.lock)")


@dataclass(frozen=True)
class DrivenHead:
    """Known outputs: every anchor of stride level ``level`` (index into the model's strides, -1: the coarsest)
    says ``class_id`` with logit ``logit``; all other classes and levels say ``-logit``.

    ``distance`` is each box side's distance from its anchor, in units of the stride: 0.5 gives boxes of
    one stride square centred on each cell, tiling the input.
    """

    class_id: int = 0
    level: int = -1
    distance: float = 0.5
    logit: float = 10.0


def ultralytics_version() -> str | None:
    """The installed Ultralytics version, or None (found without importing it: importing pulls torch)."""
    try:
        return importlib.metadata.version("ultralytics")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_ultralytics() -> str:
    """The Ultralytics version; skips the calling pytest test (with the reason) when it is missing."""
    version = ultralytics_version()
    if version is None:
        import pytest

        pytest.skip(_MISSING)
    return version


def export_yolo(arch: str = "yolov8n", imgsz: int = 320, *, seed: int = 0, nc: int = 80,
                end2end: bool = False, head: DrivenHead | None = None, cache_dir: Path = CACHE_DIR) -> Path:
    """The ONNX file of Ultralytics architecture ``arch`` (its YAML name without .yaml) at ``imgsz``.

    ``end2end``: export the NMS-free branch ([1, K, 6]) of a head that has one (yolov10n, yolo26n);
    otherwise Ultralytics' default, [1, 4 + nc, N] for NMS outside the model. Exported once per set of
    options (and Ultralytics version), then read from the cache.
    Raises RuntimeError with Ultralytics' output if the export fails.
    """
    version = ultralytics_version()
    if version is None:
        raise RuntimeError(_MISSING)
    options = {"arch": arch, "imgsz": imgsz, "seed": seed, "nc": nc, "end2end": end2end,
               "head": asdict(head) if head else None, "ultralytics": version}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir / f"{arch}-{imgsz}-{key}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo-export-", dir=cache_dir) as scratch:
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_VERBOSE="false",
                   YOLO_CONFIG_DIR=str(Path(scratch) / "config"),
                   PYTHONPATH=os.pathsep.join(filter(None, (_PACKAGE_PARENT, os.environ.get("PYTHONPATH")))))
        command = [sys.executable, "-m", __name__, "--options", json.dumps(options), "--out", "model.onnx"]
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                              timeout=EXPORT_TIMEOUT_S, check=False)
        produced = Path(scratch) / "model.onnx"
        if done.returncode != 0 or not produced.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"Ultralytics export of {arch} failed (exit {done.returncode}):\n{tail}")
        partial = target.with_suffix(".partial")
        shutil.move(str(produced), partial)
        os.replace(partial, target)
    return target


def _drive(detect_head: object, head: DrivenHead) -> None:
    """Zero the head's last box and class convolutions and set their biases (see DrivenHead)."""
    import torch

    reg_max = int(getattr(detect_head, "reg_max"))
    levels = int(getattr(detect_head, "nl"))
    chosen = head.level % levels
    if reg_max > 1:
        # DFL: the expected bin of a softmax; two equal bins around the distance give fractions of .5.
        low = int(head.distance)
        box_bias = torch.full((reg_max,), -head.logit * 2)
        box_bias[low] = head.logit * 2
        if head.distance != low:
            box_bias[low + 1] = head.logit * 2
        box_bias = box_bias.repeat(4)
    else:
        box_bias = torch.full((4,), float(head.distance))
    branches = [("cv2", "cv3"), ("one2one_cv2", "one2one_cv3")]
    with torch.no_grad():
        for box_name, cls_name in branches:
            box_heads, cls_heads = getattr(detect_head, box_name, None), getattr(detect_head, cls_name, None)
            if box_heads is None or cls_heads is None:
                continue
            for level in range(levels):
                box_conv, cls_conv = box_heads[level][-1], cls_heads[level][-1]
                box_conv.weight.zero_()
                box_conv.bias.copy_(box_bias)
                cls_conv.weight.zero_()
                cls_conv.bias.fill_(-head.logit)
                if level == chosen:
                    cls_conv.bias[head.class_id] = head.logit


def _answer_torchvision_probe() -> None:
    """Let Ultralytics import without torchvision, which ONNX export never uses.

    Ultralytics reads torchvision's version when it is imported. PyPI's Linux torchvision is the CUDA
    build, which does not import beside the CPU torch installed here, so it is not installed; in this
    child only, that one metadata probe gets the release paired with the installed torch.
    """
    try:
        importlib.metadata.version("torchvision")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    import torch

    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    paired = f"0.{minor + 15}.0" if major == 2 else "0.0.0"  # torch 2.13 <-> torchvision 0.28
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        return paired if name == "torchvision" else real_version(name)

    importlib.metadata.version = version


def _export(options: dict, out: Path) -> None:
    """In the child: build ``arch`` from its YAML with seeded weights, drive the head, export ONNX to ``out``."""
    _answer_torchvision_probe()
    import torch
    import yaml
    from ultralytics import RTDETR, YOLO

    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(f"{options['arch']}.yaml")
    cfg["nc"] = options["nc"]
    # Same file name in the scratch directory: Ultralytics reads the scale (n, s, ...) from it.
    local = Path(f"{options['arch']}.yaml")
    local.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "yaml_file"}, sort_keys=False))
    torch.manual_seed(options["seed"])
    model = (RTDETR if options["arch"].startswith("rtdetr") else YOLO)(str(local))
    if options["head"]:
        _drive(model.model.model[-1], DrivenHead(**options["head"]))
    # nms=False: the NMS-free one-to-one branch ([1, K, 6]) where the head has one (YOLOv10, YOLO26).
    exported = Path(model.export(format="onnx", imgsz=options["imgsz"], opset=17, simplify=False, dynamic=False,
                                 device="cpu", nms=False if options["end2end"] else None))
    shutil.move(str(exported), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export one Ultralytics architecture to ONNX (test-time tool).")
    parser.add_argument("--options", required=True, help="JSON of export_yolo's options")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    _export(json.loads(args.options), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
