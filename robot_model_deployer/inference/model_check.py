"""The model check every bundle passes before it is installed: its model loads and serves.

It lives here, one floor above ``bundle/``, because it needs ONNX Runtime:
the verifier and the store take it as a hook (``model_check=...``) so they
stay free of it. A bundle from outside is checked with ``IsolatedModelCheck``:
a signed model can still allocate gigabytes per run, spin forever or crash
the runtime, and in a child process with limits it can do none of that to
the manager (or to ``rmd``). ``check_model`` in-process is for trusted
callers and fast tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from robot_model_deployer.bundle.errors import BundleError, BundleFormatError, ModelCheckError
from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.bundle.manifest import DetectionFormat, Task
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.inference.dense import DENSE_TASKS
from robot_model_deployer.inference.engine import (OUTPUT_FIELDS, InferenceEngine, ModelLoadError,
                                                   OutputLayoutError)
from robot_model_deployer.inference.layout_check import LayoutMismatch, check_dense_layout
from robot_model_deployer.isolation.child import ChildError, ChildFailure, ChildLimits, run_in_child

MODEL_CHECK_LIMITS = ChildLimits(memory_mb=2048, seconds=60.0)
"""Defaults of the manager's model_check_* parameters and of ``rmd bundle verify``.

Measured on a shared 2-core x86 machine: checking EfficientNet-Lite0 in the
child reaches about 350 MiB of address space (110 MiB resident) and passes
with a limit as low as 275 MiB; the ddddocr detector is the same (125 MiB
resident). Either takes under 1 s including the interpreter's start. 2 GiB
and 60 s leave room for larger models and slower robots, and still refuse a
model that takes gigabytes per run.
"""

_CHECK_TARGET = f"{__name__}:check_model"
_RAISED_IN_CHILD: dict[str, type[BundleError]] = {kind.__name__: kind for kind in (ModelCheckError, BundleFormatError)}
_ADVICE = {
    ChildFailure.MEMORY: "the model allocates more than a robot should give it; raise model_check_memory_mb "
                         "(rmd bundle verify --check-memory-mb) if that is expected",
    ChildFailure.TIMEOUT: "the model takes longer to load and run once than a robot should wait; raise "
                          "model_check_timeout_s (rmd bundle verify --check-timeout) if that is expected",
    ChildFailure.CRASHED: "the runtime cannot run this model safely; try it with onnxruntime on a workstation "
                          "and fix or re-export it",
    ChildFailure.ERROR: "the check itself broke; check the robot's disk and memory, and report it with the "
                        "bundle if it persists",
}
_DETAIL_CHARS = 300
_NORMALIZED_FORMATS = frozenset({DetectionFormat.DETR, DetectionFormat.TF_SSD})  # their decoders scale the boxes
_MIN_PIXEL_INPUT = 32  # below this a box in pixels may well lie within [0, 1]
MAX_CHECKED_IMAGES = 16
"""Validation images a detector's scores and class ids are checked on (the first ones), to stay in the time limit."""


def check_model(root: str | Path) -> None:
    """Load the unpacked bundle at ``root`` with the serving engine; a model that cannot serve is refused.

    Raises BundleFormatError if ``root`` is not a readable bundle and
    ModelCheckError if its model does not load or contradicts the manifest.
    """
    try:
        bundle = load_bundle_dir(root)
    except BundleError as exc:
        raise BundleFormatError(str(exc)) from None
    try:
        engine = InferenceEngine.from_bundle(bundle, warmup_runs=1)
        if bundle.manifest.task is Task.DETECTION:
            check_detector_values(engine, bundle)
        elif bundle.manifest.task in DENSE_TASKS:
            check_dense_values(engine, bundle)
    except OutputLayoutError as exc:  # its message names the manifest field to fix
        raise ModelCheckError(f"model check failed: {exc}; fix it and rebuild the bundle") from None
    except ModelLoadError as exc:
        raise ModelCheckError(f"model check failed: {exc}; fix the model or the manifest's {exc.section} section "
                              "and rebuild the bundle") from None


def check_detector_values(engine: InferenceEngine, bundle: BundleDir) -> None:
    """Refuse a detector whose scores are no probabilities or whose class ids are not in the labels.

    Checked on the first validation images, before threshold and NMS: a layout read wrongly gives scores
    like 19478 and classes like 2031 that a shape alone may not show.
    """
    spec = bundle.manifest.detection
    guess = engine.layout_guess
    advice = guess.advice() if guess is not None and guess.format is not spec.format else ""
    for relative in bundle.manifest.validation.images[:MAX_CHECKED_IMAGES]:
        candidates = engine.candidates(_read_rgb(bundle.path(relative)))
        scores = candidates.scores
        where = f"on validation image {relative}"
        if scores.size and not np.isfinite(scores).all():
            raise ModelLoadError(f"scores {where} are not finite (NaN or Inf); "
                                 f"{advice or 'check the model and detection.format'}", "detection")
        if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
            raise ModelLoadError(
                f"scores {where} range from {scores.min():.4g} to {scores.max():.4g}, outside [0, 1]: they are "
                f"not probabilities as detection.format {spec.format.value} reads the outputs; "
                f"{advice or 'check detection.format, and that the model ends in a sigmoid or softmax'}",
                "detection")
        _check_box_units(candidates.boxes[scores >= spec.score_threshold], bundle, where, advice)
        shown = candidates.class_ids[scores >= spec.score_threshold]
        bad = shown[(shown < 0) | (shown >= len(bundle.labels))] if bundle.labels else shown[shown < 0]
        if bad.size:
            known = (f"{bundle.manifest.labels} lists {len(bundle.labels)} classes (ids 0-{len(bundle.labels) - 1})"
                     if bundle.labels else "class ids are never negative")
            fix = advice or ("fix the labels file (line i names class id i)" if bundle.labels
                             else "check detection.format")
            raise ModelLoadError(f"class id {int(bad[0])} {where} is not in the labels: {known}; {fix}",
                                 "detection" if advice or not bundle.labels else "labels")


def _check_box_units(boxes: np.ndarray, bundle: BundleDir, where: str, advice: str) -> None:
    """Refuse boxes that are all within [0, 1] where the layout reads input pixels: they are normalized.

    Shapes cannot tell a [1, K, 6] of normalized cx, cy, w, h, score, class (Ultralytics RT-DETR exports
    since 8.4) from the NMS-free end2end layout; read as pixels, every box would be under one pixel.
    """
    spec, size = bundle.manifest.detection, bundle.manifest.input
    if spec.format in _NORMALIZED_FORMATS or min(size.width, size.height) < _MIN_PIXEL_INPUT or not boxes.size:
        return
    if float(np.abs(boxes).max()) <= 1.0 + 1e-3:
        raise ModelLoadError(
            f"boxes {where} all lie within [0, 1], but detection.format {spec.format.value} reads them in input "
            f"pixels ({size.width}x{size.height}): they look normalized; "
            f"{advice or 'check detection.format (docs/bundle-format.md lists the layouts)'}", "detection")


def check_dense_values(engine: InferenceEngine, bundle: BundleDir) -> None:
    """The dense layout self-check (scores in [0, 1], class ids in the labels, ...) on the first validation images."""
    for relative in bundle.manifest.validation.images[:MAX_CHECKED_IMAGES]:
        try:
            check_dense_layout(bundle.manifest, engine.outputs(_read_rgb(bundle.path(relative))), bundle.labels)
        except LayoutMismatch as exc:
            raise OutputLayoutError(f"on validation image {relative}: {exc}",
                                    OUTPUT_FIELDS[bundle.manifest.task][0]) from None


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ModelLoadError(f"validation image {path.name} cannot be read: {one_line(str(exc))}",
                             "validation") from None


@dataclass(frozen=True)
class IsolatedModelCheck:
    """``check_model`` in a child process under ``limits``; a ModelCheck hook for untrusted bundles.

    Every way the child can fail ends as a BundleError: what check_model
    refuses keeps its class and message, a limit or a crash becomes a
    ModelCheckError that names the limit and what to do.
    """

    limits: ChildLimits = MODEL_CHECK_LIMITS

    def __call__(self, root: Path) -> None:
        try:
            run_in_child(_CHECK_TARGET, {"root": str(root)}, self.limits)
        except ChildError as exc:
            raise refusal(exc, self.limits) from None
        except OSError as exc:  # no process could be started (ENOMEM, EAGAIN, ...)
            raise ModelCheckError(f"model check could not start its child process: {one_line(str(exc))}; "
                                  "free memory or processes on the robot and try again") from None


def refusal(error: ChildError, limits: ChildLimits) -> BundleError:
    """The BundleError a failed child check stands for, as one bounded, printable line."""
    kind = _RAISED_IN_CHILD.get(error.error_type)
    if error.failure is ChildFailure.ERROR and kind is not None:
        return kind(one_line(str(error)))
    detail = one_line(str(error), _DETAIL_CHARS)
    what = {ChildFailure.MEMORY: f"ran out of its memory limit of {limits.memory_mb} MiB",
            ChildFailure.TIMEOUT: f"ran past its time limit of {limits.seconds:g} s and was stopped",
            ChildFailure.CRASHED: detail,
            ChildFailure.ERROR: f"failed with {error.error_type or 'an error'}: {detail}"}[error.failure]
    return ModelCheckError(f"model check {what}: {_ADVICE[error.failure]}")
