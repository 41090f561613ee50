"""What a shadow run measured and decided: the report and verdict types.

validation.shadow computes them; the shadow node copies them into a
ShadowReport message and the manager reads them back (nodes.conversions).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.postprocess import Prediction


class LabelledSource(str, Enum):
    """Whose bundle a labelled set comes from."""

    CANDIDATE = "candidate"
    LIVE = "live"


@dataclass(frozen=True)
class LabelledComparison:
    """Both models scored on one labelled set; ``error`` says why it could not be scored ('' when it was).

    Scores are top-1 accuracy (classification) or box F1 at IoU 0.5
    (detection) against the set's validation.expected; NaN when not scored.
    """

    source: LabelledSource
    images: int
    candidate_score: float
    live_score: float
    error: str = ""


@dataclass(frozen=True)
class Disagreement:
    """One paired frame on which the candidate and the live model disagree (for the disagreement samples)."""

    stamp_ns: int
    reason: str
    candidate: Prediction
    live: Prediction


class ShadowOutcome(str, Enum):
    PENDING = "pending"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class ShadowReport:
    """Every number of a shadow run so far (the node copies it into a ShadowReport message).

    ``frames_judged`` counts paired frames plus frames the candidate failed
    (exception or NaN/Inf output): a candidate that fails every frame still
    reaches its verdict. ``agreement`` is the top-1 share (classification) or
    the pooled matched-box F1 (detection); with nothing paired it is 1.0, as
    in validation.metrics. ``box_precision`` and ``box_recall`` are None for
    classification. ``mean_score_drift`` is over agreeing top-1 classes
    (classification) or matched boxes (detection); it is reported, not gated
    (a retrained model is rightly more or less sure). ``*_mean_score`` is the
    mean top-1 score (classification) or box score (detection) over paired
    frames, ``*_mean_boxes`` the boxes per paired frame (detection; 0 for
    classification). ``disagreements`` counts paired frames on which the two
    differ (top-1 class, or any unmatched box); ``samples_saved`` of them were
    kept in ``samples_dir`` by the node. ``labelled_*`` and ``live_set_*`` are
    both models scored on the candidate's and the live version's labelled
    images (0 images and NaN scores when a bundle ships none).
    ``reference_*`` is the live model as run by the shadow node beside the
    candidate (0 when it ran none).
    The ``*_p99_ms`` figures leave out the single slowest frame: over the
    few dozen frames of a shadow run p99 is otherwise the maximum, and one
    scheduler hiccup would decide the latency gate.
    """

    task: Task
    watched_s: float
    frames_judged: int
    frames_paired: int
    candidate_frames: int
    live_frames: int
    agreement: float
    box_precision: float | None
    box_recall: float | None
    mean_score_drift: float
    candidate_latency_p50_ms: float
    candidate_latency_p99_ms: float
    live_latency_p50_ms: float
    live_latency_p99_ms: float
    reference_latency_p50_ms: float
    reference_latency_p99_ms: float
    reference_frames: int
    candidate_errors: int
    candidate_non_finite: int
    live_non_finite: int
    dropped_frames: int
    expired_candidate: int
    expired_live: int
    candidate_mean_score: float
    live_mean_score: float
    candidate_mean_boxes: float
    live_mean_boxes: float
    disagreements: int
    labelled_images: int
    candidate_labelled_score: float
    live_labelled_score: float
    live_set_images: int
    candidate_live_set_score: float
    live_live_set_score: float
    samples_saved: int
    samples_dir: str

    @property
    def error_rate(self) -> float:
        """Share of the candidate's frames that raised an exception."""
        return self.candidate_errors / self.candidate_frames if self.candidate_frames else 0.0


@dataclass(frozen=True)
class ShadowVerdict:
    """PENDING until enough frames or seconds were watched, then PASS or FAIL with reasons.

    ``progress`` (0..1) is how far the run is towards a verdict, for action
    feedback.
    """

    outcome: ShadowOutcome
    reasons: tuple[str, ...]
    progress: float
    report: ShadowReport
