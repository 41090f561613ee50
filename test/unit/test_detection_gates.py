"""Gate and shadow metrics for every detector layout: matched-box F1 works once the layout is decoded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.deploy.serving import open_optimized_engine
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, optimize_bundle
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.testing.detector_layouts import LAYOUTS, TF_SSD_LABELS, layout_manifest
from robot_model_deployer.testing.quant_models import write_image_bundle
from robot_model_deployer.testing.models import COLOUR_LABELS, write_bundle
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowOutcome

CPU_ONLY = TargetProfile("test_cpu", (Accelerator.CPU,), (Precision.INT8, Precision.FP32), benchmark_runs=3,
                         warmup_runs=1)
FRAMES = 12


def square_images(count: int, seed: int) -> list[np.ndarray]:
    """64x64 images with one saturated 16-pixel square of one colour on a cell, on faint noise."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)
        row, col = 16 * rng.integers(0, 4), 16 * rng.integers(0, 4)
        image[row:row + 16, col:col + 16, index % 3] = 255
        images.append(image)
    return images


def labels_for(fmt: str) -> tuple[str, ...]:
    return TF_SSD_LABELS if fmt == "tf_ssd" else COLOUR_LABELS


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_optimize_gate_measures_box_f1_for_every_layout(tmp_path: Path, fmt: str) -> None:
    root = write_image_bundle(tmp_path / fmt, LAYOUTS[fmt](), layout_manifest(fmt), square_images(6, 1),
                              square_images(8, 2), labels=labels_for(fmt))
    bundle = load_bundle_dir(root)
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    fp32 = report.variant(FP32_FALLBACK)
    assert fp32.accepted and fp32.detection_f1 == 1.0
    assert all(v.detection_f1 is not None for v in report.variants if v.status.value != "failed"), report.to_json()
    _, engine = open_optimized_engine(tmp_path / "out", bundle)
    image = np.zeros((64, 64, 3), np.uint8)
    image[32:48, 16:32, 2] = 255
    prediction = engine.infer(image)
    assert prediction.labels == ("blue",)
    np.testing.assert_allclose(prediction.boxes, [[16, 32, 32, 48]], atol=1e-3)


def run_shadow(live: InferenceEngine, candidate: InferenceEngine, frames: list[np.ndarray]):
    shadow = ShadowComparator(live.manifest.task, AcceptanceSpec(shadow_frames=FRAMES))
    for index, image in enumerate(frames):
        shadow.add_live(1_000_000 * index, live.infer(image), 0.1 * index, 4.0)
        shadow.add_candidate(1_000_000 * index, candidate.infer(image), 0.1 * index + 0.01, 4.0)
    return shadow.verdict(0.1 * FRAMES)


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_shadow_agreement_for_every_layout(tmp_path: Path, fmt: str) -> None:
    def engine(name: str, cell: int, version: str) -> InferenceEngine:
        manifest = layout_manifest(fmt, version=version)
        root = write_bundle(tmp_path / name, LAYOUTS[fmt](cell=cell), manifest, labels=labels_for(fmt))
        return InferenceEngine.from_bundle(load_bundle_dir(root), warmup_runs=1)

    live, same, coarse = engine("live", 16, "1.0.0"), engine("same", 16, "1.0.1"), engine("coarse", 32, "2.0.0")
    frames = square_images(FRAMES, 3)
    passed = run_shadow(live, same, frames)
    assert passed.outcome is ShadowOutcome.PASS, passed.reasons
    assert passed.report.box_recall == 1.0
    failed = run_shadow(live, coarse, frames)
    assert failed.outcome is ShadowOutcome.FAIL
    assert any("detection agreement" in reason for reason in failed.reasons)
