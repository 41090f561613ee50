"""The equivalence gate: a variant is used only if it still says what FP32 says.

Classification: top-1 agreement with FP32 over the bundle's validation
images. Detection: matched-box F1 at IoU 0.5 against FP32 and the mean
score drift of the matched boxes. Segmentation: mean mask IoU; instance
segmentation: mask IoU of matched instances; pose: OKS of matched objects
(validation.metrics.TASK_MEASURES is the one table of which task is judged
how). Thresholds come from the manifest's
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
from robot_model_deployer.validation.dense_metrics import GateMeasure
from robot_model_deployer.validation.metrics import IOU_THRESHOLD, detection_agreement, labelled_score, measure_for


@dataclass(frozen=True)
class GateResult:
    """What the gate measured and decided; ``reason`` says why a variant was refused.

    The measure of the task (validation.metrics.TASK_MEASURES) fills its own
    field: top1_agreement, detection_f1 (with score_drift), mask_iou or
    keypoint_oks.
    """

    passed: bool
    top1_agreement: float | None = None
    detection_f1: float | None = None
    score_drift: float | None = None
    expected_agreement: float | None = None
    reason: str = ""
    mask_iou: float | None = None
    keypoint_oks: float | None = None


_RESULT_FIELDS = {GateMeasure.TOP1: "top1_agreement", GateMeasure.BOX_F1: "detection_f1",
                  GateMeasure.MASK_IOU: "mask_iou", GateMeasure.KEYPOINT_OKS: "keypoint_oks"}


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
        measure = "top-1 accuracy" if task is Task.CLASSIFICATION else measure_for(task).name
        return (f"the model's own FP32 {measure} against validation.expected is {score:.3f}, below the "
                f"{acceptance.min_accuracy:.3f} its bundle states (acceptance.min_accuracy)"), score
    return "", score


def check_variant(task: Task, candidates: Sequence[Prediction], references: Sequence[Prediction],
                  acceptance: AcceptanceSpec, expected: Sequence[Prediction] | None = None) -> GateResult:
    """Compare a variant's predictions with FP32's on the same images, in the task's measure."""
    if not references:
        return GateResult(False, reason="no validation images: add validation.images to the bundle manifest")
    if any(not p.is_finite() for p in candidates):
        return GateResult(False, reason="variant produced NaN or infinite outputs")
    measure = measure_for(task)
    agreement = measure.score(candidates, references)
    threshold = measure.threshold(acceptance)
    reasons = []
    if agreement < threshold:
        reasons.append(f"{measure.name} vs FP32 {agreement:.3f} < {threshold:.3f} (acceptance."
                       f"{measure.threshold_field})")
    drift = None
    if task is Task.DETECTION:
        drift = detection_agreement(candidates, references, IOU_THRESHOLD).mean_score_drift
        if drift > acceptance.max_score_drift:
            reasons.append(f"mean score drift {drift:.3f} > {acceptance.max_score_drift:.3f}")
    expected_score = None
    if expected:
        expected_score = (measure.score(candidates, expected), measure.score(references, expected))
        if expected_score[0] < expected_score[1] - (1.0 - threshold):
            reasons.append(f"{measure.name} vs expected outputs {expected_score[0]:.3f}, FP32 gets "
                           f"{expected_score[1]:.3f}")
    return GateResult(not reasons, score_drift=drift, expected_agreement=expected_score[0] if expected_score else None,
                      reason="; ".join(reasons), **{_RESULT_FIELDS[measure.measure]: agreement})
