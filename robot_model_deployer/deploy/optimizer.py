"""The optimize stage of the deploy flow: build this robot's fastest accepted variant."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from robot_model_deployer.deploy.ports import DeploymentCancelled, ModelRefused, StageError
from robot_model_deployer.optimize.pipeline import ModelRefusedError, OptimizationCancelled, optimize_bundle
from robot_model_deployer.optimize.report import OptimizationReport
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.store.installed import InstalledVersion


class OnRobotOptimizer:
    """Optimizes each installed version once for one target profile; artifacts live in its derived/ dir."""

    def __init__(self, target: TargetProfile) -> None:
        self.target = target

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
        # A run killed midway leaves its scratch directory (and maybe an unfinished out_dir) behind.
        for leftover in installed.derived_dir.glob(f".{out_dir.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            report = optimize_bundle(installed.bundle, self.target, out_dir, cancel=cancel,
                                     progress=lambda p: progress(p.fraction, f"{p.variant}: {p.message}"))
        except OptimizationCancelled:
            raise DeploymentCancelled() from None
        except ModelRefusedError as exc:
            raise ModelRefused(str(exc)) from None
        except (ValueError, OSError, RuntimeError) as exc:
            # Variant failures are recorded in the report; these are the stage's own (disk, inputs).
            raise StageError(str(exc)) from None
        return out_dir, report.to_dict()
