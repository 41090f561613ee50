"""The optimize stage of the deploy flow: build this robot's fastest accepted variant.

Quantizing, compiling and benchmarking a model from outside is risky work:
ONNX Runtime's quantizer can crash or take gigabytes, and a session keeps
its memory after it is dropped. So the stage runs in a child process with
memory and time limits (isolation.child): a crash or a limit is one reason,
a cancel kills the child at once, and the manager's memory is where it was.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.deploy.ports import DeploymentCancelled, ModelRefused, StageError
from robot_model_deployer.isolation.child import ChildError, ChildFailure, ChildLimits, run_in_child
from robot_model_deployer.optimize.recipes import Int8Recipe
from robot_model_deployer.optimize.report import OptimizationReport
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.store.installed import InstalledVersion

OPTIMIZE_LIMITS = ChildLimits(memory_mb=3072, seconds=1800.0)
"""Defaults of the manager's optimize_memory_mb and optimize_timeout_s parameters.

Measured on a shared 2-core x86 machine (target x86_cpu, bench/bench_manager_memory.py --child):
optimizing EfficientNet-Lite0 (32 calibration, 100 validation images) in the
child peaks at 1282 MiB of address space (VmPeak, what the limit counts) and
636 MiB resident, and takes 55 s including the interpreter's start while
other work loads the cores. 3 GiB (2.4x that) and 30 minutes leave room for
larger models and slower robots; the profiles' own time_limit_s (at most
1800 s) stop building variants before this deadline kills the child.
"""

OPTIMIZE_ENTRY = "robot_model_deployer.optimize.pipeline:optimize_in_child"

_ADVICE = {
    ChildFailure.MEMORY: "raise the manager's optimize_memory_mb if the model needs that much to optimize",
    ChildFailure.TIMEOUT: "raise the manager's optimize_timeout_s, or lower the target profile's time_limit_s",
    ChildFailure.CRASHED: "the runtime crashed on this model; set quantization.allowed: false in its manifest, "
                          "or try it with rmd optimize on a workstation",
    ChildFailure.ERROR: "check the robot's disk and the bundle's validation images",
}


class OnRobotOptimizer:
    """Optimizes each installed version once for one target profile; artifacts live in its derived/ dir.

    ``entry`` is the function the child runs ("module:function", called like
    optimize.pipeline.optimize_in_child); tests give one that crashes.
    """

    def __init__(self, target: TargetProfile, limits: ChildLimits = OPTIMIZE_LIMITS,
                 entry: str = OPTIMIZE_ENTRY) -> None:
        self.target = target
        self.limits = limits
        self.entry = entry

    def artifacts_dir(self, derived_dir: Path) -> Path:
        return derived_dir / f"optimized-{self.target.name}"

    def built_artifacts(self, installed: InstalledVersion) -> Path | None:
        """The artifacts of an earlier run, if that run finished."""
        directory = self.artifacts_dir(installed.derived_dir)
        try:
            OptimizationReport.read(directory)
        except (OSError, ValueError, KeyError):
            return None
        return directory

    def optimize(self, installed: InstalledVersion, cancel: threading.Event,
                 progress: Callable[[float, str], None]) -> tuple[Path | None, dict[str, Any]]:
        manifest = installed.manifest
        if not manifest.validation.images:
            # Without a validation set no variant can prove it still gives the same answers.
            return None, {"skipped": "the bundle has no validation images; serving the model as shipped"}
        out_dir = self.artifacts_dir(installed.derived_dir)
        if self.built_artifacts(installed) is not None:
            return out_dir, OptimizationReport.read(out_dir).to_dict()
        self._remove_leftovers(out_dir)
        kwargs = {"bundle_dir": str(installed.bundle_dir), "target_name": self.target.name,
                  "target": profile_fields(self.target), "out_dir": str(out_dir)}
        try:
            report = run_in_child(self.entry, kwargs, self.limits, cancel=cancel,
                                  progress=lambda step: _forward(step, progress))
        except ChildError as exc:
            self._remove_leftovers(out_dir)  # a killed child leaves its scratch directory
            if exc.failure is ChildFailure.CANCELLED:
                raise DeploymentCancelled() from None
            if exc.failure is ChildFailure.ERROR and exc.error_type == "ModelRefusedError":
                raise ModelRefused(one_line(str(exc), 300)) from None
            what = f"{exc.error_type}: {exc}" if exc.failure is ChildFailure.ERROR and exc.error_type else str(exc)
            raise StageError(f"the optimizer {one_line(what, 300)}; {_ADVICE[exc.failure]}") from None
        except OSError as exc:  # no process could be started (ENOMEM, EAGAIN, ...)
            raise StageError(f"the optimizer could not start its child process: {one_line(str(exc))}") from None
        return out_dir, report

    def _remove_leftovers(self, out_dir: Path) -> None:
        """A run killed midway leaves its scratch directory (and maybe an unfinished out_dir) behind."""
        for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)


def profile_fields(target: TargetProfile) -> dict[str, Any]:
    """The profile as targets.yaml spells it, for optimize.targets.profile_from_dict in the child."""
    return {"accelerators": [a.value for a in target.accelerators], "precisions": [p.value for p in target.precisions],
            "time_limit_s": target.time_limit_s, "max_memory_mb": target.max_memory_mb,
            "benchmark_runs": target.benchmark_runs, "warmup_runs": target.warmup_runs,
            "device_id": target.device_id, "description": target.description,
            "int8_recipes": [recipe_fields(r) for r in target.int8_recipes]}


def recipe_fields(recipe: Int8Recipe) -> dict[str, Any]:
    """One INT8 recipe inline, as targets.yaml spells it plus its name."""
    return {"name": recipe.name, "tool": recipe.tool.value, "float_region": recipe.float_region.value,
            "calibration": recipe.calibration.value, "percentile": recipe.percentile,
            "description": recipe.description,
            **({"accelerators": [a.value for a in recipe.accelerators]} if recipe.accelerators else {})}


def _forward(step: Any, progress: Callable[[float, str], None]) -> None:
    """One progress value from the child, which is not trusted to send the shape it should."""
    if isinstance(step, dict) and isinstance(step.get("fraction"), (int, float)):
        progress(min(1.0, max(0.0, float(step["fraction"]))), one_line(str(step.get("message", "")), 200))
