"""The manager's status and diagnostics messages, built from plain data."""
from __future__ import annotations

from pathlib import Path

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from bundle_helpers import Keys, make_keys, signed_tar
from robot_model_deployer.bundle.filelist import file_sha256
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.deploy.switch import ServedModel, SwitchSnapshot
from robot_model_deployer.msg import ModelInfo
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.nodes.manager_status import (deployment_diagnostics, deployment_status, diagnostic_level,
                                                       installed_info, listed_models, model_info, version_info)
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import DeploymentStage, VersionRef

V1 = ServedModel(ref=VersionRef.parse("colour_classifier@1.0.0"), task=Task.CLASSIFICATION, path="/store/v1/bundle",
                 model_sha256="ab" * 32, artifacts="/store/v1/artifacts")
V2 = ServedModel(ref=VersionRef.parse("colour_classifier@2.0.0"), task=Task.CLASSIFICATION, path="/store/v2/bundle")
STAMP = Time(sec=12, nanosec=345)


def status(live: ServedModel | None = V2, standby: ServedModel | None = V1,
           stage: DeploymentStage = DeploymentStage.IDLE, candidate: ModelInfo | None = None,
           previous: ModelInfo | None = None):
    """``previous`` is the store's (by default the standby's model, as after a commit)."""
    return deployment_status(snapshot=SwitchSnapshot("perception_b", "perception_a", live, standby),
                             previous=previous if previous is not None else model_info(standby),
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
    assert msg.active == ModelInfo() and msg.previous == ModelInfo() and msg.standby == ModelInfo()


def test_previous_is_the_stores_rollback_target_not_what_the_standby_holds() -> None:
    """After v2 was rolled back in probation it may still sit on the standby; the rollback target is none."""
    msg = status(live=V1, standby=V2, previous=ModelInfo())
    assert msg.previous == ModelInfo()
    assert (msg.standby.version, msg.standby_node) == ("2.0.0", "perception_a")
    stored = ModelInfo(name="colour_classifier", version="0.9.0", path="/store/v0/bundle")
    assert status(live=V1, standby=V2, previous=stored).previous == stored


@pytest.mark.parametrize("live, stage, level", [
    (V2, DeploymentStage.IDLE, DiagnosticStatus.OK),
    (V2, DeploymentStage.PROBATION, DiagnosticStatus.OK),
    (V2, DeploymentStage.FAILED, DiagnosticStatus.WARN),
    (V2, DeploymentStage.CANCELLED, DiagnosticStatus.OK),
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
        "live_node": "perception_b", "standby_node": "perception_a", "standby": "colour_classifier 1.0.0",
        "stage": "failed", "health": "probation: passed"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def test_list_models_carries_each_versions_sha256_slot_and_bad_mark_with_its_reason(tmp_path: Path,
                                                                                    keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    refs = []
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        installed = store.ingest(signed_tar(tmp_path / f"{version}.tar", keys.private, version), trust=keys.trust,
                                 model_check=check_model)
        store.set_candidate(installed.ref)
        if version == "2.0.0":
            store.reject_candidate("only 6 results for 8 camera frames")
        else:
            store.commit_candidate()
        refs.append(installed.ref)

    models, slots = listed_models(store.list_versions(), store.state)

    assert [(m.version, slot) for m, slot in zip(models, slots)] == [("1.0.0", "previous"), ("2.0.0", ""),
                                                                     ("3.0.0", "active")]
    assert [(m.bad, m.bad_reason) for m in models] == [(False, ""), (True, "only 6 results for 8 camera frames"),
                                                       (False, "")]
    for model, ref in zip(models, refs):
        installed = store.installed(ref)
        assert model.model_sha256 == file_sha256(installed.bundle.model_path) != ""
        assert (model.name, model.task, model.path) == (ref.name, "classification", str(installed.bundle_dir))
    assert listed_models(store.list_versions(), store.state, name="other_model") == ([], [])
    assert installed_info(store.installed(refs[1]), store.state) == models[1]
