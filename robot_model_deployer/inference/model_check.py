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

from robot_model_deployer.bundle.errors import BundleError, BundleFormatError, ModelCheckError
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError, OutputLayoutError
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
        InferenceEngine.from_bundle(bundle, warmup_runs=1)
    except OutputLayoutError as exc:  # its message names the manifest field to fix
        raise ModelCheckError(f"model check failed: {exc}; fix it and rebuild the bundle") from None
    except ModelLoadError as exc:
        raise ModelCheckError(f"model check failed: {exc}; fix the model or the manifest's input section "
                              "and rebuild the bundle") from None


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
