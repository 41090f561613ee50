"""The equivalence gate: a variant is used only if it still says what FP32 says.

Classification: top-1 agreement with FP32 over the bundle's validation
images. Detection: matched-box F1 at IoU 0.5 against FP32 and the mean
score drift of the matched boxes. Thresholds come from the manifest's
``acceptance`` section (its defaults when absent). When the bundle ships
expected outputs, the variant must also not do worse against them than
FP32 does, by more than the same tolerance.

FP32 itself is the reference, so it is checked first (``check_reference``):
a model whose own outputs are NaN/Inf, or which misses the accuracy its
bundle states, has nothing a variant could be equivalent to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.metrics import IOU_THRESHOLD, detection_agreement, labelled_score, top1_agreement


@dataclass(frozen=True)
class GateResult:
    """What the gate measured and decided; ``reason`` says why a variant was refused."""

    passed: bool
    top1_agreement: float | None = None
    detection_f1: float | None = None
    score_drift: float | None = None
    expected_agreement: float | None = None
    reason: str = ""


def check_reference(task: Task, references: Sequence[Prediction], images: Sequence[str],
                    acceptance: AcceptanceSpec, expected: Sequence[Prediction] | None = None) -> tuple[str, float | None]:
    """Why the bundle's own FP32 model is unusable ('' when it is fine), and its score against ``expected``.

    ``images`` names the validation images in the order of ``references``.
    """
    broken = [name for name, prediction in zip(images, references) if not prediction.is_finite()]
    if broken:
        return (f"the model's own FP32 output is NaN or infinite on {len(broken)} of {len(references)} "
                f"validation images (first: {broken[0]}); fix the model before deploying it"), None
    if not expected:
        return "", None
    score = labelled_score(task, references, expected)
    if score < acceptance.min_accuracy:
        measure = "top-1 accuracy" if task is Task.CLASSIFICATION else f"box F1 at IoU {IOU_THRESHOLD:g}"
        return (f"the model's own FP32 {measure} against validation.expected is {score:.3f}, below the "
                f"{acceptance.min_accuracy:.3f} its bundle states (acceptance.min_accuracy)"), score
    return "", score


def check_variant(task: Task, candidates: Sequence[Prediction], references: Sequence[Prediction],
                  acceptance: AcceptanceSpec, expected: Sequence[Prediction] | None = None) -> GateResult:
    """Compare a variant's predictions with FP32's on the same images."""
    if not references:
        return GateResult(False, reason="no validation images: add validation.images to the bundle manifest")
    if any(not p.is_finite() for p in candidates):
        return GateResult(False, reason="variant produced NaN or infinite outputs")
    if task is Task.CLASSIFICATION:
        agreement = top1_agreement(candidates, references)
        expected_score = _expected_gap(candidates, references, expected, top1_agreement)
        reasons = []
        if agreement < acceptance.min_top1_agreement:
            reasons.append(f"top-1 agreement with FP32 {agreement:.3f} < {acceptance.min_top1_agreement:.3f}")
        tolerance = 1.0 - acceptance.min_top1_agreement
        if expected_score is not None and expected_score[0] < expected_score[1] - tolerance:
            reasons.append(f"top-1 vs expected outputs {expected_score[0]:.3f}, FP32 gets {expected_score[1]:.3f}")
        return GateResult(not reasons, top1_agreement=agreement,
                          expected_agreement=expected_score[0] if expected_score else None, reason="; ".join(reasons))
    match = detection_agreement(candidates, references, IOU_THRESHOLD)
    expected_score = _expected_gap(candidates, references, expected,
                                   lambda c, r: detection_agreement(c, r, IOU_THRESHOLD).f1)
    reasons = []
    if match.f1 < acceptance.min_detection_f1:
        reasons.append(f"box F1 vs FP32 at IoU {IOU_THRESHOLD} {match.f1:.3f} < {acceptance.min_detection_f1:.3f}")
    if match.mean_score_drift > acceptance.max_score_drift:
        reasons.append(f"mean score drift {match.mean_score_drift:.3f} > {acceptance.max_score_drift:.3f}")
    tolerance = 1.0 - acceptance.min_detection_f1
    if expected_score is not None and expected_score[0] < expected_score[1] - tolerance:
        reasons.append(f"box F1 vs expected outputs {expected_score[0]:.3f}, FP32 gets {expected_score[1]:.3f}")
    return GateResult(not reasons, detection_f1=match.f1, score_drift=match.mean_score_drift,
                      expected_agreement=expected_score[0] if expected_score else None, reason="; ".join(reasons))


def _expected_gap(candidates: Sequence[Prediction], references: Sequence[Prediction],
                  expected: Sequence[Prediction] | None, measure) -> tuple[float, float] | None:
    if not expected:
        return None
    return float(measure(candidates, expected)), float(measure(references, expected))
