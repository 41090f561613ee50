"""Demo camera frames: without the demo-only libraries the error names what to install."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from robot_model_deployer.demo.frames import load_frames


def test_skimage_photos_come_resized() -> None:
    frames = load_frames("skimage", 40, 30)
    assert frames and all(frame.shape == (30, 40, 3) for frame in frames)


def test_missing_scikit_image_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # As if it were not installed.
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ValueError, match=r"camera source 'skimage' needs scikit-image.*pip install scikit-image"):
        load_frames("skimage", 40, 30)


def test_missing_imageio_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = tmp_path / "drive.mp4"
    video.write_bytes(b"not read: imageio is missing")
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v3", None)
    with pytest.raises(ValueError, match=r"video source .*drive.mp4 needs imageio.*pip install imageio"):
        load_frames(str(video), 40, 30)
