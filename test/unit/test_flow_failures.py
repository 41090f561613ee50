"""Failures inside the deploy flow are contained: a full disk, an OSError, a crash in ONNX Runtime's quantizer,
a hung optimizer. Each ends as a refused deployment with its reason, the live model keeps serving, and the
next deployment works. The rig (a real store, switch and in-process perception slots) is test_flow's.
"""
from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

import robot_model_deployer.store.model_store as model_store_module
from robot_model_deployer.deploy.optimizer import OnRobotOptimizer
from robot_model_deployer.isolation.child import ChildLimits
from robot_model_deployer.optimize.targets import load_target_profile
from robot_model_deployer.store.state import DeploymentStage
from test_flow import TARGETS_FILE, V1, V2, V3, Rig, assert_v1_still_serves, deployed_v1, rig  # noqa: F401

CHILD_TARGETS = "robot_model_deployer.testing.child_targets"
LIMITS = ChildLimits(memory_mb=3072, seconds=120.0)


def optimizer(entry: str | None = None, limits: ChildLimits = LIMITS) -> OnRobotOptimizer:
    target = load_target_profile("x86_cpu", TARGETS_FILE)
    return OnRobotOptimizer(target, limits) if entry is None else OnRobotOptimizer(target, limits, entry)


class FullDisk:
    """ENOSPC for every write the store makes (state.json, install records) and in the model check's staging."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real_write = model_store_module.write_atomic

        def write_atomic(path: Path, data: bytes) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real_write(path, data)

        monkeypatch.setattr(model_store_module, "write_atomic", write_atomic)

    def model_check(self, root: Path) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", str(root / "model.onnx"))


def test_disk_full_while_staging_and_on_state_json_is_refused_with_the_reason(rig: Rig, monkeypatch) -> None:
    disk = FullDisk(monkeypatch)
    flow = rig.flow()
    deployed_v1(rig, flow)
    flow.settings = type(flow.settings)(trust=flow.settings.trust, model_check=disk.model_check)
    disk.full = True

    outcome = rig.deploy(flow, rig.bundle("2.0.0"))

    assert not outcome.accepted
    assert "OSError" in outcome.reason and "No space left on device" in outcome.reason, outcome.reason
    assert_v1_still_serves(rig)
    disk.full = False
    outcome = rig.deploy(flow, rig.bundle("2.0.0"))
    assert outcome.accepted, outcome.reason
    assert rig.store.state.active == V2


def test_disk_full_on_state_json_mid_trial_leaves_the_old_model_and_the_next_deployment_works(
        rig: Rig, monkeypatch) -> None:
    disk = FullDisk(monkeypatch)
    flow = rig.flow()
    deployed_v1(rig, flow)

    def progress(stage: DeploymentStage, fraction: float, message: str) -> None:
        if stage is DeploymentStage.SHADOW:
            disk.full = True  # from here on not even the rejection can be written

    outcome = flow.deploy(str(rig.bundle("2.0.0")), progress=progress)

    assert disk.full and not outcome.accepted
    assert "not recorded in the store" in outcome.reason and "No space left" in outcome.reason, outcome.reason
    assert rig.serving()[0] == V1 and rig.live().answer("red") == "red"
    assert rig.store.state.candidate == V2  # the store could not write that it ended
    disk.full = False
    outcome = rig.deploy(flow, rig.bundle("3.0.0"))
    assert outcome.accepted, outcome.reason
    state = rig.store.state
    assert (state.active, state.candidate, state.bad) == (V3, None, ())
    assert any("left on trial by a deployment whose outcome could not be recorded" in e.message
               for e in state.history)


def test_an_os_error_in_a_stage_ends_as_failed_with_the_reason(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    rig.shadow.validate = broken
    outcome = rig.deploy(flow, rig.bundle("2.0.0"))

    assert not outcome.accepted and "OSError" in outcome.reason and "Input/output error" in outcome.reason
    state = rig.store.state
    assert (state.stage, state.candidate, state.bad) == (DeploymentStage.FAILED, None, ())
    assert "Input/output error" in state.history[-1].message
    assert_v1_still_serves(rig)


def test_a_crash_inside_the_quantizer_refuses_the_candidate_and_the_manager_carries_on(rig: Rig) -> None:
    flow = rig.flow(optimizer=optimizer(f"{CHILD_TARGETS}:optimize_with_crashing_quantizer"))
    deployed_v1(rig, flow)

    outcome = rig.deploy(flow, rig.bundle("2.0.0", images=True))

    assert not outcome.accepted
    assert "optimization failed" in outcome.reason and "SIGSEGV" in outcome.reason, outcome.reason
    assert "quantization.allowed: false" in outcome.reason  # what to do about it
    state = rig.store.state
    assert (state.stage, state.candidate) == (DeploymentStage.FAILED, None)
    assert "SIGSEGV" in state.history[-1].message
    assert not list(rig.store.derived_dir(V2).iterdir()), "the killed child's scratch directory was left"
    assert_v1_still_serves(rig)
    good = rig.flow(optimizer=optimizer())
    outcome = rig.deploy(good, rig.bundle("3.0.0", images=True))
    assert outcome.accepted, outcome.reason
    assert rig.live().served_as == f"optimized variant {outcome.report['optimize']['chosen']}"


def test_an_optimizer_past_its_time_limit_is_stopped_and_named(rig: Rig) -> None:
    flow = rig.flow(optimizer=optimizer(f"{CHILD_TARGETS}:optimize_slowly", ChildLimits(memory_mb=3072, seconds=8)))
    deployed_v1(rig, flow)
    started = time.monotonic()

    outcome = rig.deploy(flow, rig.bundle("2.0.0", images=True))

    assert time.monotonic() - started < 8 + 10
    assert not outcome.accepted and "time limit of 8 s" in outcome.reason and "optimize_timeout_s" in outcome.reason
    assert_v1_still_serves(rig)


def test_cancel_kills_the_optimizer_child_promptly(rig: Rig) -> None:
    flow = rig.flow(optimizer=optimizer(f"{CHILD_TARGETS}:optimize_slowly"))
    deployed_v1(rig, flow)
    cancel = threading.Event()
    cancelled_at: list[float] = []
    messages: list[str] = []

    def progress(stage: DeploymentStage, fraction: float, message: str) -> None:
        if stage is DeploymentStage.OPTIMIZE and fraction > 0.0 and not cancel.is_set():
            messages.append(message)  # progress from inside the child
            cancelled_at.append(time.monotonic())
            cancel.set()

    outcome = flow.deploy(str(rig.bundle("2.0.0", images=True)), progress=progress, cancel=cancel)

    assert cancelled_at, "no progress came from the optimizer's child"
    assert time.monotonic() - cancelled_at[0] < 2.0
    assert not outcome.accepted and "cancelled" in outcome.reason, outcome.reason
    assert messages[0].startswith("reference: ")
    state = rig.store.state
    assert (state.candidate, state.bad) == (None, ())
    assert not list(rig.store.derived_dir(V2).iterdir()), "the killed child's scratch directory was left"
    assert_v1_still_serves(rig)


def test_the_managers_optimize_limits_default_to_the_measured_ones_and_are_checked() -> None:
    manager = pytest.importorskip("robot_model_deployer.nodes.manager_node", reason="the manager node needs rclpy")
    from robot_model_deployer.deploy.optimizer import OPTIMIZE_LIMITS

    specs = {spec.name: spec for spec in manager.PARAMETERS}
    assert (specs["optimize_memory_mb"].default, specs["optimize_timeout_s"].default) == (
        OPTIMIZE_LIMITS.memory_mb, OPTIMIZE_LIMITS.seconds)
    with pytest.raises(ValueError, match="parameter optimize_memory_mb must be >= 512"):
        specs["optimize_memory_mb"].validate(100)
    with pytest.raises(ValueError, match="parameter optimize_timeout_s must be >= 10.0"):
        specs["optimize_timeout_s"].validate(1.0)
