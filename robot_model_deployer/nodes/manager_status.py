"""What the manager publishes about itself: DeploymentStatus and its /diagnostics entry.

Plain data in, messages out (no node, no clock), so that the status topic,
the get_status service and diagnostics are built by one tested function and
cannot disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from robot_model_deployer.deploy.switch import ServedModel, SwitchSnapshot
from robot_model_deployer.msg import DeploymentStatus, ModelInfo
from robot_model_deployer.store.installed import InstalledVersion
from robot_model_deployer.store.state import DeploymentStage, StoreState, VersionRef


def model_info(model: ServedModel | None) -> ModelInfo:
    """A served model as ModelInfo (empty when there is none)."""
    if model is None:
        return ModelInfo()
    return ModelInfo(name=model.ref.name, version=str(model.ref.version), task=model.task.value, path=model.path,
                     model_sha256=model.model_sha256)


def version_info(ref: VersionRef, bundle_dir: Path) -> ModelInfo:
    """An installed version that serves nowhere yet (the candidate) as ModelInfo."""
    return ModelInfo(name=ref.name, version=str(ref.version), path=str(bundle_dir))


def installed_info(installed: InstalledVersion, state: StoreState) -> ModelInfo:
    """An installed version as the store knows it: its model's sha256, and whether and why it is bad."""
    reason = state.bad_reason(installed.ref)
    return ModelInfo(name=installed.ref.name, version=str(installed.ref.version),
                     task=installed.manifest.task.value, path=str(installed.bundle_dir),
                     model_sha256=installed.model_sha256, bad=reason is not None, bad_reason=reason or "")


def listed_models(versions: Iterable[InstalledVersion], state: StoreState,
                  name: str = "") -> tuple[list[ModelInfo], list[str]]:
    """ListModels' answer: every installed version (of ``name``, when given) and the slot it fills."""
    slots = {ref: slot for slot, ref in (("active", state.active), ("previous", state.previous),
                                         ("candidate", state.candidate)) if ref is not None}
    chosen = [v for v in versions if not name or v.ref.name == name]
    return [installed_info(v, state) for v in chosen], [slots.get(v.ref, "") for v in chosen]


def deployment_status(*, snapshot: SwitchSnapshot, previous: ModelInfo, candidate: ModelInfo,
                      stage: DeploymentStage, message: str, health: str, stamp: Time,
                      refused: str = "") -> DeploymentStatus:
    """The manager's status: what serves where, the stage it is at and why.

    ``previous`` is what the rollback service serves (the store's previous
    version; on probation, the store's active one, which the candidate
    replaced), not whatever the standby node holds: that is ``standby``.
    ``live_node`` stays empty until a model serves, so "which node is live"
    never names a node that publishes nothing.
    """
    return DeploymentStatus(
        stamp=stamp, active=model_info(snapshot.live_model), previous=previous, candidate=candidate,
        live_node=snapshot.live_node if snapshot.live_model else "", standby_node=snapshot.standby_node,
        standby=model_info(snapshot.standby_model), stage=stage.value, message=message, health=health,
        refused=refused)


def diagnostic_level(status: DeploymentStatus) -> bytes:
    """WARN while no model serves or after a failed deployment (the old model still serves), else OK.

    A cancelled deployment is the caller's choice, not a fault: OK.
    """
    if not status.active.name or status.stage == DeploymentStage.FAILED.value:
        return DiagnosticStatus.WARN
    return DiagnosticStatus.OK


def deployment_diagnostics(status: DeploymentStatus, *, node_name: str, hardware_id: str) -> DiagnosticArray:
    """One /diagnostics entry that says what the status says, keyed for diagnostic aggregators."""
    values = {"active": _label(status.active), "previous": _label(status.previous),
              "candidate": _label(status.candidate), "live_node": status.live_node,
              "standby_node": status.standby_node, "standby": _label(status.standby), "stage": status.stage,
              "health": status.health}
    array = DiagnosticArray()
    array.header.stamp = status.stamp
    array.status.append(DiagnosticStatus(
        level=diagnostic_level(status), name=f"{node_name}: model deployment", hardware_id=hardware_id,
        message=status.message, values=[KeyValue(key=k, value=v) for k, v in values.items()]))
    return array


def _label(info: ModelInfo) -> str:
    return f"{info.name} {info.version}" if info.name else ""
