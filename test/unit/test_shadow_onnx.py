"""Shadow gate on real predictions: tiny ONNX models run by the InferenceEngine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.testing.models import (
    COLOUR_LABELS, classifier_manifest, colour_classifier, colour_detector, detector_manifest, solid_image,
    write_bundle,
)
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowOutcome

FRAMES = 12
# Latencies are given, not measured: wall-clock times of tiny models are
# noise, and the gate's latency arithmetic is covered in test_shadow.py.
LATENCY_MS = 4.0


def engine(directory: Path, model: onnx.ModelProto, manifest: dict) -> InferenceEngine:
    return InferenceEngine.from_bundle(load_bundle_dir(write_bundle(directory, model, manifest)), warmup_runs=1)


def colour_frames() -> list[np.ndarray]:
    return [solid_image(COLOUR_LABELS[i % 3]) for i in range(FRAMES)]


def square_frames() -> list[np.ndarray]:
    frames = []
    for i in range(FRAMES):
        image = np.zeros((64, 64, 3), np.uint8)
        row, col = 16 * (i % 4), 16 * ((i // 4) % 4)
        image[row:row + 16, col:col + 16, i % 3] = 255
        frames.append(image)
    return frames


def run_shadow(live: InferenceEngine, candidate: InferenceEngine, frames: list[np.ndarray]):
    shadow = ShadowComparator(live.manifest.task, AcceptanceSpec(shadow_frames=FRAMES))
    for index, image in enumerate(frames):
        stamp_ns, now = 1_000_000 * index, 0.1 * index
        shadow.add_live(stamp_ns, live.infer(image), now, LATENCY_MS)
        shadow.add_candidate(stamp_ns, candidate.infer(image), now + 0.01, LATENCY_MS)
    return shadow.verdict(0.1 * FRAMES)


def test_same_classifier_at_a_different_logit_scale_passes(tmp_path):
    live = engine(tmp_path / "live", colour_classifier(scale=10.0), classifier_manifest())
    candidate = engine(tmp_path / "candidate", colour_classifier(scale=9.0), classifier_manifest(version="1.1.0"))
    verdict = run_shadow(live, candidate, colour_frames())
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    assert verdict.report.agreement == 1.0
    assert 0.0 < verdict.report.mean_score_drift < 0.1


def test_classifier_that_picks_the_weakest_colour_fails_on_agreement(tmp_path):
    live = engine(tmp_path / "live", colour_classifier(scale=10.0), classifier_manifest())
    inverted = engine(tmp_path / "candidate", colour_classifier(scale=-10.0), classifier_manifest(version="2.0.0"))
    verdict = run_shadow(live, inverted, colour_frames())
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.report.agreement == 0.0
    assert any("top-1 class agreement" in reason for reason in verdict.reasons)


def test_same_detector_passes_and_a_coarser_one_fails_on_box_f1(tmp_path):
    live = engine(tmp_path / "live", colour_detector(cell=16), detector_manifest())
    same = engine(tmp_path / "same", colour_detector(cell=16), detector_manifest(version="1.0.1"))
    coarse = engine(tmp_path / "coarse", colour_detector(cell=32), detector_manifest(version="2.0.0"))
    # The live detector finds each square, so agreeing with it is not trivial.
    assert [len(live.infer(image).scores) for image in square_frames()] == [1] * FRAMES

    passed = run_shadow(live, same, square_frames())
    assert passed.outcome is ShadowOutcome.PASS, passed.reasons
    assert passed.report.box_recall == 1.0
    assert passed.report.frames_paired == FRAMES

    failed = run_shadow(live, coarse, square_frames())
    assert failed.outcome is ShadowOutcome.FAIL
    assert failed.report.box_recall == pytest.approx(0.0)
    assert any("detection agreement" in reason for reason in failed.reasons)
