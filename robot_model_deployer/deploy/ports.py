"""The deploy flow's ports: the stages it hands to others, and how they report back.

The flow (deploy/flow.py) calls these; the manager node implements them with
the shadow node, the live traffic and the on-robot optimizer, tests with
in-process stand-ins. Adapters import this module, never the flow.

Each port reports progress within its stage as (fraction, message), stops
early when ``cancel`` is set, and raises StageError when it cannot reach a
verdict at all (as opposed to a verdict that refuses the model).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Protocol

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Manifest
from robot_model_deployer.deploy.switch import ServedModel
from robot_model_deployer.store.installed import InstalledVersion
from robot_model_deployer.store.state import DeploymentStage
from robot_model_deployer.validation.health import HealthStatus
from robot_model_deployer.validation.shadow import ShadowVerdict

StageProgress = Callable[[DeploymentStage, float, str], None]


class DeploymentCancelled(Exception):
    """The caller cancelled the deployment."""


class StageError(RuntimeError):
    """A stage could not reach a verdict (e.g. the shadow node did not answer); says why."""


class ModelRefused(StageError):
    """A stage found the model itself broken (e.g. its own FP32 outputs NaN): a verdict, so it is marked bad."""


class ShadowPort(Protocol):
    """Validates a candidate beside the live model on live traffic until a verdict."""

    def validate(self, model: ServedModel, reference: ServedModel, manifest: Manifest, cancel: threading.Event,
                 progress: Callable[[float, str], None]) -> ShadowVerdict:
        """``reference`` is the live model, for timing it beside the candidate."""


class ProbationPort(Protocol):
    """Watches the live node after a swap until it passes or fails probation."""

    def watch(self, acceptance: AcceptanceSpec, cancel: threading.Event,
              progress: Callable[[float, str], None]) -> HealthStatus:
        """Returns the status when decided, or the current one once ``cancel`` is set."""


class OptimizerPort(Protocol):
    """Builds an installed version's optimized variants for this robot."""

    def optimize(self, installed: InstalledVersion, cancel: threading.Event,
                 progress: Callable[[float, str], None]) -> tuple[Path | None, dict[str, Any]]:
        """The artifacts directory (None: serve as shipped) and the optimization report."""

    def built_artifacts(self, installed: InstalledVersion) -> Path | None:
        """The artifacts an earlier run finished for ``installed`` (None: none)."""
