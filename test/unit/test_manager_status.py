"""The manager's status and diagnostics messages, built from plain data."""
from __future__ import annotations

from pathlib import Path

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.deploy.switch import ServedModel, SwitchSnapshot
from robot_model_deployer.msg import ModelInfo
from robot_model_deployer.nodes.manager_status import (deployment_diagnostics, deployment_status, diagnostic_level,
                                                       model_info, version_info)
from robot_model_deployer.store.state import DeploymentStage, VersionRef

V1 = ServedModel(ref=VersionRef.parse("colour_classifier@1.0.0"), task=Task.CLASSIFICATION, path="/store/v1/bundle",
                 model_sha256="ab" * 32, artifacts="/store/v1/artifacts")
V2 = ServedModel(ref=VersionRef.parse("colour_classifier@2.0.0"), task=Task.CLASSIFICATION, path="/store/v2/bundle")
STAMP = Time(sec=12, nanosec=345)


def status(live: ServedModel | None = V2, standby: ServedModel | None = V1,
           stage: DeploymentStage = DeploymentStage.IDLE, candidate: ModelInfo | None = None):
    return deployment_status(snapshot=SwitchSnapshot("perception_b", "perception_a", live, standby),
                             candidate=candidate or ModelInfo(), stage=stage, message="serving 2.0.0",
                             health="probation: passed", stamp=STAMP)


def test_model_info_copies_every_field_a_user_sees_and_is_empty_without_a_model() -> None:
    info = model_info(V1)
    assert (info.name, info.version, info.task, info.path, info.model_sha256) == (
        "colour_classifier", "1.0.0", "classification", "/store/v1/bundle", "ab" * 32)
    assert model_info(None) == ModelInfo()


def test_version_info_names_the_installed_bundle() -> None:
    info = version_info(VersionRef.parse("colour_classifier@3.1.0"), Path("/store/v3/bundle"))
    assert (info.name, info.version, info.task, info.path) == ("colour_classifier", "3.1.0", "", "/store/v3/bundle")


def test_status_says_what_serves_where_and_why() -> None:
    candidate = ModelInfo(name="colour_classifier", version="3.0.0", path="/store/v3/bundle")
    msg = status(stage=DeploymentStage.SHADOW, candidate=candidate)
    assert msg.stamp == STAMP
    assert (msg.active.version, msg.previous.version, msg.candidate) == ("2.0.0", "1.0.0", candidate)
    assert (msg.live_node, msg.standby_node) == ("perception_b", "perception_a")
    assert (msg.stage, msg.message, msg.health) == ("shadow", "serving 2.0.0", "probation: passed")


def test_no_node_is_called_live_before_a_model_serves() -> None:
    msg = status(live=None, standby=None)
    assert msg.live_node == "" and msg.standby_node == "perception_a"
    assert msg.active == ModelInfo() and msg.previous == ModelInfo()


@pytest.mark.parametrize("live, stage, level", [
    (V2, DeploymentStage.IDLE, DiagnosticStatus.OK),
    (V2, DeploymentStage.PROBATION, DiagnosticStatus.OK),
    (V2, DeploymentStage.FAILED, DiagnosticStatus.WARN),
    (None, DeploymentStage.IDLE, DiagnosticStatus.WARN),
    (None, DeploymentStage.FAILED, DiagnosticStatus.WARN),
])
def test_diagnostics_warn_while_nothing_serves_or_after_a_failed_deployment(live, stage, level) -> None:
    assert diagnostic_level(status(live=live, stage=stage)) == level


def test_diagnostics_say_what_the_status_says() -> None:
    msg = status(stage=DeploymentStage.FAILED)
    array = deployment_diagnostics(msg, node_name="model_manager", hardware_id="/robot1/model_manager")
    assert array.header.stamp == STAMP
    [entry] = array.status
    assert entry.level == DiagnosticStatus.WARN
    assert (entry.name, entry.hardware_id, entry.message) == ("model_manager: model deployment",
                                                              "/robot1/model_manager", "serving 2.0.0")
    assert {kv.key: kv.value for kv in entry.values} == {
        "active": "colour_classifier 2.0.0", "previous": "colour_classifier 1.0.0", "candidate": "",
        "live_node": "perception_b", "standby_node": "perception_a", "stage": "failed",
        "health": "probation: passed"}
