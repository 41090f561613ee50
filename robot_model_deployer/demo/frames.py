"""Frames for the demo camera: scikit-image's photos, an image folder or a video."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
from PIL import Image

# Colour photos shipped inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm"}


def load_frames(source: str, width: int, height: int) -> list[np.ndarray]:
    """RGB uint8 frames of width x height from ``source``; ValueError says what is wrong."""
    if source == "skimage":
        frames = list(_skimage_photos())
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(path.iterdir())
                      if p.suffix.lower() in _IMAGE_SUFFIXES]
        elif path.is_file():
            frames = list(_video_frames(path))
        else:
            raise ValueError(f"camera source {source} is neither 'skimage', an image directory nor a video file")
    if not frames:
        raise ValueError(f"camera source {source} has no frames")
    return [_fit(frame, width, height) for frame in frames]


def _demo_library(module: str, distribution: str, rosdep_key: str, needed_for: str):
    """Import a demo-only library; robots do not get these, so say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{needed_for} needs {distribution}, a demo dependency that robots do not install: "
                         f"pip install {distribution} (rosdep key {rosdep_key})") from None


def _skimage_photos():
    data = _demo_library("skimage.data", "scikit-image", "python3-skimage", "camera source 'skimage'")

    for name in SKIMAGE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is not None:
            yield np.asarray(loader())


def _video_frames(path: Path):
    iio = _demo_library("imageio.v3", "imageio", "python3-imageio", f"video source {path}")

    try:
        for frame in iio.imiter(path):
            yield np.asarray(frame)
    except Exception as exc:  # imageio raises plugin-specific errors for unreadable files.
        raise ValueError(f"cannot read video {path}: {exc}") from None


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    frame = np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)
    if frame.shape[:2] != (height, width):
        frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return frame
