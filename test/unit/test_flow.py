"""The deploy flow on real parts, no ROS: a store in tmp_path, signed bundles of tiny ONNX models,
the blue/green switch over two in-process perception slots that really open the model, and shadow
and probation ports whose verdicts come from the real ShadowComparator and HealthWatch.

Latencies fed to the gates are given, not measured: wall-clock times of tiny models are noise
(the latency arithmetic is covered in test_shadow.py and test_health.py).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import count, cycle
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import pytest

from robot_model_deployer.bundle.filelist import build_file_list, file_sha256
from robot_model_deployer.bundle.manifest import AcceptanceSpec, Manifest
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import TrustStore, generate_keypair, load_private_key, sign_file_list
from robot_model_deployer.deploy.flow import DeploymentFlow, DeployOutcome, FlowSettings
from robot_model_deployer.deploy.optimizer import OnRobotOptimizer
from robot_model_deployer.deploy.ports import StageError
from robot_model_deployer.deploy.serving import open_serving_engine
from robot_model_deployer.deploy.switch import BlueGreenSwitch, ServedModel, SlotState, SwapError
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.optimize.targets import load_target_profile
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind, StoreError, VersionRef
from robot_model_deployer.testing.models import (
    COLOUR_LABELS, classifier_manifest, colour_classifier, solid_image, write_bundle,
)
from robot_model_deployer.testing.quant_models import colour_images, write_image_bundle
from robot_model_deployer.validation.health import HealthState, HealthStatus, HealthThresholds, HealthWatch
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowOutcome, ShadowVerdict

TARGETS_FILE = Path(__file__).resolve().parents[2] / "robot_model_deployer" / "optimize" / "targets.yaml"
NAME = "colour_classifier"
V1, V2, V3 = (VersionRef.parse(f"{NAME}@{v}") for v in ("1.0.0", "2.0.0", "3.0.0"))
# Short gates: 6 shadow frames, 1 s of probation on a simulated 20 Hz camera.
ACCEPTANCE = {"shadow_frames": 6, "probation_seconds": 1.0, "latency_slack_ms": 5.0}
LATENCY_MS = 4.0
FRAME_PERIOD_S = 0.05
COLOUR_FRAMES = [solid_image(colour) for colour in COLOUR_LABELS]
MAX_FRAMES = 500


class EngineSlot:
    """A perception node in-process: configure opens the model as the real node does, or refuses.

    ``refuse`` names lifecycle steps that fail once, as a node whose transition
    callback returns FAILURE (its state stays where it was).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = SlotState.UNCONFIGURED
        self.model: ServedModel | None = None
        self.engine: InferenceEngine | None = None
        self.served_as = ""
        self.refuse: set[str] = set()
        self.calls: list[str] = []
        self.activated: list[VersionRef] = []

    def state(self) -> SlotState:
        return self._state

    def _begin(self, step: str, source: SlotState) -> None:
        self.calls.append(step)
        if self._state is not source:
            raise SwapError(f"{self.name}: cannot {step} from {self._state.value}")
        if step in self.refuse:
            self.refuse.discard(step)
            raise SwapError(f"{self.name} refused to {step}")

    def load(self, model: ServedModel) -> None:
        self._begin("load", SlotState.UNCONFIGURED)
        try:
            self.engine, self.served_as = open_serving_engine(model.path, model.artifacts, warmup_runs=1)
        except Exception as exc:
            raise SwapError(f"{self.name} could not load {model.label()}: {exc}") from None
        self.model = model
        self._state = SlotState.INACTIVE

    def unload(self) -> None:
        self._begin("unload", SlotState.INACTIVE)
        self.model, self.engine, self.served_as = None, None, ""
        self._state = SlotState.UNCONFIGURED

    def activate(self) -> None:
        self._begin("activate", SlotState.INACTIVE)
        self._state = SlotState.ACTIVE
        self.activated.append(self.model.ref)

    def deactivate(self) -> None:
        self._begin("deactivate", SlotState.ACTIVE)
        self._state = SlotState.INACTIVE

    def answer(self, colour: str) -> str:
        assert self.engine is not None, f"{self.name} serves no model"
        return self.engine.infer(solid_image(colour)).labels[0]


def live_slot(slots: tuple[EngineSlot, EngineSlot]) -> EngineSlot:
    active = [slot for slot in slots if slot.state() is SlotState.ACTIVE]
    assert len(active) == 1, f"expected exactly one live perception node, got {[s.name for s in active]}"
    return active[0]


class EngineShadow:
    """The shadow node in-process: the candidate beside the live slot's engine on the same frames.

    Like nodes.live_checks.ShadowRun it answers a set cancel with StageError("cancelled").
    """

    def __init__(self, slots: tuple[EngineSlot, EngineSlot], frames: list[np.ndarray] = COLOUR_FRAMES) -> None:
        self.slots = slots
        self.frames = frames
        self.error = ""
        self.runs: list[ServedModel] = []
        self.references: list[ServedModel] = []

    def validate(self, model: ServedModel, reference: ServedModel, manifest: Manifest, cancel: threading.Event,
                 progress: Callable[[float, str], None]) -> ShadowVerdict:
        self.runs.append(model)
        self.references.append(reference)
        if self.error:
            raise StageError(self.error)
        candidate, _ = open_serving_engine(model.path, model.artifacts, warmup_runs=1)
        live = live_slot(self.slots).engine
        comparator = ShadowComparator(manifest.task, manifest.acceptance)
        for index, image in zip(range(MAX_FRAMES), cycle(self.frames)):
            if cancel.is_set():
                raise StageError("cancelled")
            stamp_ns, now = index * 1_000_000, index * FRAME_PERIOD_S
            comparator.add_live(stamp_ns, live.infer(image), now, LATENCY_MS)
            comparator.add_candidate(stamp_ns, candidate.infer(image), now + 0.01, LATENCY_MS)
            verdict = comparator.verdict(now + 0.01)
            progress(verdict.progress, f"shadow: {verdict.report.frames_judged} frames judged")
            if verdict.outcome is not ShadowOutcome.PENDING:
                return verdict
        raise AssertionError("the shadow comparator never reached a verdict")


class EngineProbation:
    """Probation in-process: the live slot's engine on a simulated camera, judged by a HealthWatch.

    Like nodes.live_checks.ProbationWatch it returns the current status when cancelled.
    """

    def __init__(self, slots: tuple[EngineSlot, EngineSlot], frames: list[np.ndarray] = COLOUR_FRAMES) -> None:
        self.slots = slots
        self.frames = frames
        self.runs = 0

    def watch(self, acceptance: AcceptanceSpec, cancel: threading.Event,
              progress: Callable[[float, str], None]) -> HealthStatus:
        self.runs += 1
        watch = HealthWatch(acceptance)
        live = live_slot(self.slots).engine
        for index, image in zip(range(MAX_FRAMES), cycle(self.frames)):
            stamp_ns, now = index * 1_000_000, index * FRAME_PERIOD_S
            status = watch.status(now)
            progress(min(1.0, status.watched_s / (acceptance.probation_seconds or 1.0)),
                     f"probation: {status.state.value}")
            if status.decided or cancel.is_set():
                return status
            watch.add_input(stamp_ns, now)
            prediction = live.infer(image)
            watch.add_output(stamp_ns, now + 0.005, LATENCY_MS, prediction.is_finite())
        raise AssertionError("probation never reached a decision")


class PausedClockProbation:
    """Probation whose ROS time stops after a second while the wall clock runs (a paused simulator)."""

    def watch(self, acceptance: AcceptanceSpec, cancel: threading.Event,
              progress: Callable[[float, str], None]) -> HealthStatus:
        watch = HealthWatch(acceptance, HealthThresholds(wall_margin_s=5.0))
        for tick in range(1000):
            now = min(tick * FRAME_PERIOD_S, 0.5)
            watch.add_input(tick * 1_000_000, now)
            watch.add_output(tick * 1_000_000, now, LATENCY_MS, True)
            status = watch.status(now, wall_s=tick * FRAME_PERIOD_S)
            if status.decided:
                return status
        raise AssertionError("probation never reached a decision")


@dataclass
class Rig:
    work: Path
    keys: Path
    store: ModelStore
    slots: tuple[EngineSlot, EngineSlot]
    switch: BlueGreenSwitch
    shadow: EngineShadow
    probation: EngineProbation
    stages: list[tuple[DeploymentStage, float]] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=count)

    def bundle(self, version: str, model: onnx.ModelProto | None = None, *, key: str = "signing",
               images: bool = False) -> Path:
        """A signed .tar bundle of a colour classifier (or ``model``), packed as a publisher would."""
        manifest = classifier_manifest(version=version)
        manifest["acceptance"] = dict(ACCEPTANCE)
        source = self.work / f"bundle-{next(self._names)}"
        model = model if model is not None else colour_classifier()
        if images:
            write_image_bundle(source, model, manifest, colour_images(6, seed=1), colour_images(9, seed=2))
        else:
            write_bundle(source, model, manifest)
        file_list = build_file_list(source).to_bytes()
        output = source.with_suffix(".tar")
        write_bundle_tar(output=output, root=source, file_list_bytes=file_list,
                         signature=sign_file_list(file_list, load_private_key(self.keys / f"{key}.key")))
        return output

    def flow(self, *, optimizer: OnRobotOptimizer | None = None) -> DeploymentFlow:
        settings = FlowSettings(trust=TrustStore.load(self.keys / "trusted"), model_check=check_model)
        return DeploymentFlow(self.store, self.switch, settings,
                              shadow=self.shadow, probation=self.probation, optimizer=optimizer)

    def progress(self, stage: DeploymentStage, fraction: float, message: str) -> None:
        self.stages.append((stage, fraction))

    def deploy(self, flow: DeploymentFlow, bundle: Path, cancel: threading.Event | None = None,
               force: bool = False) -> DeployOutcome:
        self.stages.clear()
        return flow.deploy(str(bundle), force=force, progress=self.progress, cancel=cancel)

    def live(self) -> EngineSlot:
        return live_slot(self.slots)

    def serving(self) -> tuple[VersionRef | None, VersionRef | None]:
        """(live, standby) versions as the switch reports them."""
        snapshot = self.switch.snapshot()
        return (snapshot.live_model.ref if snapshot.live_model else None,
                snapshot.standby_model.ref if snapshot.standby_model else None)

    def stage_names(self) -> list[str]:
        names: list[str] = []
        for stage, _ in self.stages:
            if not names or names[-1] != stage.value:
                names.append(stage.value)
        return names

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.store.state.history]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    keys = tmp_path / "keys"
    generate_keypair(out_dir=keys, name="signing")
    generate_keypair(out_dir=keys, name="stranger")
    (keys / "trusted").mkdir()
    (keys / "trusted" / "signing.pub").write_bytes((keys / "signing.pub").read_bytes())
    work = tmp_path / "bundles"
    work.mkdir()
    slots = (EngineSlot("perception_a"), EngineSlot("perception_b"))
    rig = Rig(work, keys, ModelStore.open(tmp_path / "store"), slots, BlueGreenSwitch(slots),
              EngineShadow(slots), EngineProbation(slots))
    yield rig
    # Whatever a test did: never two publishers.
    assert sum(slot.state() is SlotState.ACTIVE for slot in slots) <= 1


def deployed_v1(rig: Rig, flow: DeploymentFlow) -> None:
    outcome = rig.deploy(flow, rig.bundle("1.0.0"))
    assert outcome.accepted, outcome.reason


def assert_v1_still_serves(rig: Rig) -> None:
    state = rig.store.state
    assert (state.active, state.candidate) == (V1, None)
    assert rig.serving()[0] == V1
    assert rig.live().model.ref == V1 and rig.live().answer("red") == "red"


# First and second deployments ------------------------------------------------------------------


def test_first_deployment_commits_without_shadow_or_probation(rig: Rig) -> None:
    outcome = rig.deploy(rig.flow(), rig.bundle("1.0.0"))

    assert outcome.accepted, outcome.reason
    assert outcome.reason == "colour_classifier 1.0.0 is live on perception_b"
    assert outcome.model.ref == V1 and outcome.model.artifacts == ""
    assert outcome.model.model_sha256 == file_sha256(rig.store.installed(V1).bundle.model_path)
    assert rig.shadow.runs == [] and rig.probation.runs == 0
    assert outcome.report["probation"] == {"state": "skipped",
                                           "reasons": ["first deployment: no model to roll back to"]}
    assert outcome.report["installed"]["ref"] == str(V1) and outcome.report["installed"]["signed_by"]
    assert rig.stage_names() == ["verify", "stage", "swap", "commit"]
    state = rig.store.state
    assert (state.active, state.previous, state.candidate, state.stage) == (V1, None, None, DeploymentStage.IDLE)
    assert rig.serving() == (V1, None)
    assert rig.live().name == "perception_b" and rig.live().served_as == "model as shipped"
    assert [rig.live().answer(c) for c in COLOUR_LABELS] == list(COLOUR_LABELS)


def test_second_deployment_passes_shadow_and_probation_and_is_committed(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    outcome = rig.deploy(flow, rig.bundle("2.0.0", colour_classifier(scale=9.0)))

    assert outcome.accepted, outcome.reason
    assert outcome.reason == "colour_classifier 2.0.0 is live on perception_a"
    assert rig.stage_names() == ["verify", "stage", "shadow", "swap", "probation", "commit"]
    shadow = outcome.report["shadow"]
    assert shadow["outcome"] == "pass" and shadow["frames_judged"] == ACCEPTANCE["shadow_frames"]
    assert shadow["agreement"] == 1.0 and 0.0 < shadow["mean_score_drift"] < 0.1
    # The shadow times the candidate against the model that was live, as served on perception_b.
    assert [(r.ref, r.path) for r in rig.shadow.references] == [(V1, rig.slots[1].model.path)]
    assert outcome.report["probation"]["state"] == "passed" and outcome.report["probation"]["non_finite"] == 0
    # Probation judges latency against what the old model measured beside it in shadow.
    assert rig.probation.runs == 1
    state = rig.store.state
    assert (state.active, state.previous, state.candidate, state.bad) == (V2, V1, None, ())
    assert rig.kinds().count(EventKind.COMMITTED) == 2
    assert rig.serving() == (V2, V1)
    standby = next(slot for slot in rig.slots if slot is not rig.live())
    assert standby.state() is SlotState.INACTIVE and standby.answer("blue") == "blue"  # warm for a rollback
    assert rig.live().model.ref == V2 and rig.live().answer("green") == "green"


# Gates that refuse a candidate --------------------------------------------------------------------


def test_shadow_fail_rejects_and_marks_bad_live_unchanged(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    calls = [list(slot.calls) for slot in rig.slots]
    outcome = rig.deploy(flow, rig.bundle("2.0.0", colour_classifier(label_shift=1)))

    assert not outcome.accepted
    assert outcome.reason.startswith("colour_classifier@2.0.0 rejected: failed shadow validation: ")
    assert "top-1 class agreement with the live model is 0.0%" in outcome.reason
    assert outcome.report["shadow"]["outcome"] == "fail" and outcome.model is None
    assert "swap" not in rig.stage_names() and rig.probation.runs == 0
    state = rig.store.state
    assert (state.active, state.previous, state.candidate, state.bad) == (V1, None, None, (V2,))
    assert state.stage is DeploymentStage.FAILED and "failed shadow validation" in state.stage_message
    assert "rejected and marked bad: failed shadow validation" in state.history[-1].message
    assert [slot.calls for slot in rig.slots] == calls  # no perception node was touched
    assert_v1_still_serves(rig)


def test_shadow_stage_error_rejects_without_marking_bad(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    rig.shadow.error = "no shadow verdict within 30 s; is the camera publishing?"
    outcome = rig.deploy(flow, rig.bundle("2.0.0"))

    assert not outcome.accepted
    assert outcome.reason == ("colour_classifier@2.0.0 rejected: shadow validation could not run: "
                              "no shadow verdict within 30 s; is the camera publishing?")
    state = rig.store.state
    assert (state.candidate, state.bad, state.stage) == (None, (), DeploymentStage.FAILED)
    assert state.history[-1].kind is EventKind.CANDIDATE_REJECTED
    assert "marked bad" not in state.history[-1].message
    assert rig.serving() == (V1, None)
    assert_v1_still_serves(rig)


def test_probation_nan_rolls_back_to_the_old_model_and_marks_bad(rig: Rig) -> None:
    # Sane on the green frames shadow saw, NaN on the red frames that arrive once it is live.
    rig.shadow.frames = [solid_image("green")]
    rig.probation.frames = [solid_image("red")]
    flow = rig.flow()
    deployed_v1(rig, flow)
    outcome = rig.deploy(flow, rig.bundle("2.0.0", colour_classifier(nan_unless="green")))

    assert not outcome.accepted
    assert outcome.reason.startswith("colour_classifier@2.0.0 rolled back to colour_classifier 1.0.0: ")
    assert "NaN or Inf" in outcome.reason
    assert outcome.report["shadow"]["outcome"] == "pass"
    assert outcome.report["probation"]["state"] == "unhealthy" and outcome.report["probation"]["non_finite"] >= 1
    assert rig.stage_names() == ["verify", "stage", "shadow", "swap", "probation"]
    state = rig.store.state
    assert (state.active, state.previous, state.candidate, state.bad) == (V1, None, None, (V2,))
    assert any(e.kind is EventKind.STAGE_CHANGED and e.message.startswith("rollback: rolling back")
               for e in state.history)
    assert "rejected and marked bad: rolled back after the swap" in state.history[-1].message
    assert "NaN or Inf" in state.bad_reason(V2)
    # The rejected candidate does not stay warm: with no previous version, the standby holds nothing.
    assert rig.serving() == (V1, None)
    assert all(slot.model is None for slot in rig.slots if slot is not rig.live())
    assert outcome.rolled_back and not outcome.cancelled
    assert_v1_still_serves(rig)
    assert np.isfinite(rig.live().engine.infer(solid_image("red")).scores).all()


def test_probation_that_times_out_on_a_paused_clock_rolls_back_without_marking_bad(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    paused = DeploymentFlow(rig.store, rig.switch, flow.settings, shadow=rig.shadow, probation=PausedClockProbation())
    outcome = rig.deploy(paused, rig.bundle("2.0.0"))

    assert not outcome.accepted
    assert outcome.report["probation"]["state"] == HealthState.TIMED_OUT.value
    assert "is /clock paused? The model was not judged" in outcome.reason
    state = rig.store.state
    assert (state.active, state.candidate, state.bad) == (V1, None, ())
    assert_v1_still_serves(rig)


# Cancelling ------------------------------------------------------------------------------------------

CANCEL_POINTS = {
    "before the deployment": lambda stage, fraction: False,
    "when optimize starts": lambda stage, fraction: stage is DeploymentStage.OPTIMIZE,
    "when shadow starts": lambda stage, fraction: stage is DeploymentStage.SHADOW and fraction == 0.0,
    "while shadow runs": lambda stage, fraction: stage is DeploymentStage.SHADOW and 0.0 < fraction < 1.0,
    "as shadow passes": lambda stage, fraction: stage is DeploymentStage.SHADOW and fraction == 1.0,
    "when the swap starts": lambda stage, fraction: stage is DeploymentStage.SWAP,
    "while probation runs": lambda stage, fraction: stage is DeploymentStage.PROBATION and fraction > 0.3,
}


@pytest.mark.parametrize("point", list(CANCEL_POINTS))
def test_cancel_leaves_the_live_model_and_does_not_mark_the_candidate_bad(rig: Rig, point: str) -> None:
    flow = rig.flow(optimizer=OnRobotOptimizer(load_target_profile("x86_cpu", TARGETS_FILE)))
    deployed_v1(rig, flow)
    cancel = threading.Event()
    if point == "before the deployment":
        cancel.set()
    when = CANCEL_POINTS[point]

    def progress(stage: DeploymentStage, fraction: float, message: str) -> None:
        rig.stages.append((stage, fraction))
        if when(stage, fraction):
            cancel.set()

    outcome = flow.deploy(str(rig.bundle("2.0.0")), progress=progress, cancel=cancel)

    assert cancel.is_set(), f"the test never reached the point '{point}'"
    assert not outcome.accepted and "cancel" in outcome.reason, outcome.reason
    # A cancel that lands once the swap has begun finds the candidate live: it is rolled back.
    assert outcome.cancelled and outcome.rolled_back == (point in ("when the swap starts", "while probation runs"))
    state = rig.store.state
    assert (state.candidate, state.bad, state.stage) == (None, (), DeploymentStage.CANCELLED)
    assert state.history[-1].kind is EventKind.CANDIDATE_CANCELLED
    assert "cancelled" in state.history[-1].message and "marked bad" not in state.history[-1].message
    assert "probation" not in outcome.report or outcome.report["probation"]["state"] != "passed"
    assert_v1_still_serves(rig)


def test_a_cancelled_candidate_can_be_deployed_again(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    bundle = rig.bundle("2.0.0")
    cancel = threading.Event()
    cancel.set()
    assert not rig.deploy(flow, bundle, cancel=cancel).accepted

    outcome = rig.deploy(flow, bundle)
    assert outcome.accepted, outcome.reason
    assert rig.store.state.active == V2 and rig.serving()[0] == V2


def test_replaying_the_bundle_of_an_older_installed_version_is_refused(rig: Rig) -> None:
    flow = rig.flow()
    first = rig.bundle("1.0.0")
    assert rig.deploy(flow, first).accepted
    assert rig.deploy(flow, rig.bundle("2.0.0")).accepted

    replay = rig.deploy(flow, first)
    assert not replay.accepted and "already installed" in replay.reason, replay.reason
    assert (rig.store.state.active, rig.store.state.previous) == (V2, V1)
    assert rig.serving()[0] == V2


# Swap and ingest failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["load", "activate"])
def test_swap_failure_leaves_the_live_model_and_clears_the_candidate(rig: Rig, step: str) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    standby = next(slot for slot in rig.slots if slot is not rig.live())
    standby.refuse.add(step)
    outcome = rig.deploy(flow, rig.bundle("2.0.0"))

    assert not outcome.accepted
    assert outcome.reason == (f"colour_classifier@2.0.0 rejected: swap failed: perception_a refused to {step}; "
                              "the live model is unchanged")
    assert outcome.report["shadow"]["outcome"] == "pass" and "probation" not in outcome.report
    state = rig.store.state
    assert (state.candidate, state.bad, state.stage) == (None, (), DeploymentStage.FAILED)
    assert standby.state() is SlotState.UNCONFIGURED and rig.serving() == (V1, None)
    assert_v1_still_serves(rig)


@pytest.mark.parametrize("case", ["unknown signer", "downgrade"])
def test_bundle_rejected_at_ingest_records_failed_and_changes_no_slot(rig: Rig, case: str) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    calls = [list(slot.calls) for slot in rig.slots]
    bundle = rig.bundle("3.0.0", key="stranger") if case == "unknown signer" else rig.bundle("0.9.0")
    outcome = rig.deploy(flow, bundle)

    assert not outcome.accepted and outcome.reason.startswith("bundle rejected: ")
    expected = "not in the trust store" if case == "unknown signer" else "is a downgrade"
    assert expected in outcome.reason
    state = rig.store.state
    assert state.stage is DeploymentStage.FAILED and expected in state.stage_message
    assert EventKind.REJECTED in rig.kinds() and state.candidate is None and state.bad == ()
    assert [v.ref for v in rig.store.list_versions()] == [V1]
    assert [slot.calls for slot in rig.slots] == calls and rig.shadow.runs == []
    assert_v1_still_serves(rig)


def test_empty_bundle_path_is_refused_with_what_to_do(rig: Rig) -> None:
    outcome = rig.flow().deploy("", progress=rig.progress)
    assert not outcome.accepted and "give the path of a bundle" in outcome.reason
    assert rig.store.state.active is None and rig.serving() == (None, None)


def test_a_version_marked_bad_is_refused_without_force_saying_why_and_how(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    bundle = rig.bundle("2.0.0", colour_classifier(label_shift=1))
    assert not rig.deploy(flow, bundle).accepted
    assert rig.store.state.bad == (V2,)

    outcome = rig.deploy(flow, bundle)
    assert not outcome.accepted and outcome.reason.startswith("bundle rejected: ")
    assert "colour_classifier@2.0.0 is already installed and was marked bad (failed shadow validation" \
        in outcome.reason
    assert "deploy this bundle again with force set" in outcome.reason and "by reference" not in outcome.reason
    assert len(rig.shadow.runs) == 1  # never shadowed (or served) again
    assert rig.store.state.bad == (V2,)
    assert_v1_still_serves(rig)


def test_force_retries_a_version_marked_bad_and_records_it(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    bundle = rig.bundle("2.0.0")
    trust = TrustStore.load(rig.keys / "trusted")
    rig.store.set_candidate(rig.store.ingest(bundle, trust=trust, model_check=check_model).ref)
    rig.store.reject_candidate("latency p99 12 ms is above the limit")  # e.g. a loaded CPU misjudged it

    outcome = rig.deploy(flow, bundle, force=True)
    assert outcome.accepted, outcome.reason
    assert outcome.report["installed"]["forced"] is True
    state = rig.store.state
    assert (state.active, state.previous, state.bad) == (V2, V1, ())
    forced = [e for e in state.history if e.kind is EventKind.FORCED]
    assert [e.ref for e in forced] == [V2]
    assert "marked bad (latency p99 12 ms is above the limit)" in forced[0].message
    assert "force" in forced[0].message
    assert rig.live().model.ref == V2


def test_a_forced_retry_that_fails_again_is_marked_bad_with_the_new_reason(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    bundle = rig.bundle("2.0.0", colour_classifier(label_shift=1))
    assert not rig.deploy(flow, bundle).accepted
    rig.shadow.error = "no shadow verdict within 30 s"
    first = rig.store.state.bad_reason(V2)

    outcome = rig.deploy(flow, bundle, force=True)
    assert not outcome.accepted and "shadow validation could not run" in outcome.reason
    # Not a verdict on the model, and the operator lifted the mark: it is not bad now.
    assert rig.store.state.bad == () and first is not None
    rig.shadow.error = ""
    outcome = rig.deploy(flow, bundle)
    assert not outcome.accepted and "failed shadow validation" in outcome.reason
    assert rig.store.state.bad == (V2,) and "failed shadow validation" in rig.store.state.bad_reason(V2)
    assert len(rig.shadow.runs) == 3
    assert_v1_still_serves(rig)


# Rollback and restart ----------------------------------------------------------------------------------


def test_manual_rollback_swaps_store_and_switch_both_ways(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    assert rig.deploy(flow, rig.bundle("2.0.0")).accepted

    model = flow.rollback("operator: v2 misreads the dock markers")
    assert model.ref == V1
    state = rig.store.state
    assert (state.active, state.previous, state.stage) == (V1, V2, DeploymentStage.IDLE)
    assert state.history[-1].kind is EventKind.ROLLED_BACK and "dock markers" in state.history[-1].message
    assert rig.serving() == (V1, V2) and rig.live().model.ref == V1

    assert flow.rollback("").ref == V2
    assert (rig.store.state.active, rig.store.state.previous) == (V2, V1)
    assert rig.serving() == (V2, V1) and rig.live().answer("blue") == "blue"


def test_manual_rollback_without_a_previous_version_fails_cleanly(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    before = rig.store.state
    with pytest.raises(StoreError, match="no previous version to roll back to"):
        flow.rollback("operator")
    assert rig.store.state == before
    assert rig.serving() == (V1, None) and rig.live().model.ref == V1


@pytest.mark.parametrize("failure", ["probation", "swap"])
def test_manual_rollback_after_a_failed_candidate_serves_the_stores_previous(rig: Rig, failure: str) -> None:
    """After v3 failed its swap or probation the standby holds the store's previous (v1) again, not v3."""
    rig.probation.frames = [solid_image("red")]
    flow = rig.flow()
    deployed_v1(rig, flow)
    assert rig.deploy(flow, rig.bundle("2.0.0")).accepted
    if failure == "swap":
        next(slot for slot in rig.slots if slot is not rig.live()).refuse.add("activate")
    rig.shadow.frames = [solid_image("green")]
    assert not rig.deploy(flow, rig.bundle("3.0.0", colour_classifier(nan_unless="green"))).accepted
    assert (rig.store.state.active, rig.store.state.previous) == (V2, V1)
    assert rig.serving() == (V2, V1)
    loads = sum(slot.calls.count("load") for slot in rig.slots)

    model = flow.rollback("operator")
    assert sum(slot.calls.count("load") for slot in rig.slots) == loads  # it was warm: nothing loaded
    assert model.ref == V1
    assert (rig.store.state.active, rig.store.state.previous) == (V1, V2)
    assert rig.serving() == (V1, V2)
    assert rig.live().model.ref == V1 and rig.live().answer("red") == "red"


def test_serve_committed_after_a_restart_serves_active_with_previous_warm(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    assert rig.deploy(flow, rig.bundle("2.0.0")).accepted

    # Restart: the store is opened again from disk, the perception nodes come up unconfigured.
    slots = (EngineSlot("perception_a"), EngineSlot("perception_b"))
    switch = BlueGreenSwitch(slots)
    store = ModelStore.open(rig.store.root)
    restarted = DeploymentFlow(store, switch, FlowSettings(trust=TrustStore.load(rig.keys / "trusted"),
                                                           model_check=check_model))
    served = restarted.serve_committed()

    assert served is not None and served.ref == V2 and served.path == str(store.bundle_dir(V2))
    assert (store.state.active, store.state.previous) == (V2, V1)
    snapshot = switch.snapshot()
    assert (snapshot.live_model.ref, snapshot.standby_model.ref) == (V2, V1)
    live = live_slot(slots)
    standby = next(slot for slot in slots if slot is not live)
    assert live.answer("green") == "green"
    assert standby.state() is SlotState.INACTIVE and standby.model.ref == V1
    assert [ref for slot in slots for ref in slot.activated] == [V2]  # the previous never served
    assert restarted.rollback("after restart").ref == V1 and live_slot(slots) is standby


@pytest.mark.parametrize("deployments", [2, 3])
def test_a_restarted_manager_takes_over_running_nodes_without_serving_the_previous(rig: Rig,
                                                                                 deployments: int) -> None:
    """Only the manager restarts: the nodes still serve. Two or three deployments leave either node live."""
    flow = rig.flow()
    for version in ("1.0.0", "2.0.0", "3.0.0")[:deployments]:
        assert rig.deploy(flow, rig.bundle(version)).accepted
    active, previous = (V2, V1) if deployments == 2 else (V3, V2)
    was_live = rig.live()
    for slot in rig.slots:
        slot.activated.clear()
    handovers: list[dict[str, SlotState]] = []

    def wait_for_answer(node: str, since: float) -> None:
        handovers.append({slot.name: slot.state() for slot in rig.slots})

    switch = BlueGreenSwitch(rig.slots, wait_for_answer)  # a new manager knows nothing of the nodes
    restarted = DeploymentFlow(ModelStore.open(rig.store.root), switch,
                               FlowSettings(trust=TrustStore.load(rig.keys / "trusted"), model_check=check_model))
    assert restarted.serve_committed().ref == active

    assert [ref for slot in rig.slots for ref in slot.activated] == [active]
    # The node that was live kept publishing until the other one served: both active at the handover.
    assert handovers == [{slot.name: SlotState.ACTIVE for slot in rig.slots}]
    assert rig.live() is not was_live and rig.live().model.ref == active
    assert was_live.state() is SlotState.INACTIVE and was_live.model.ref == previous
    snapshot = switch.snapshot()
    assert (snapshot.live_model.ref, snapshot.standby_model.ref) == (active, previous)


def test_a_previous_that_cannot_be_loaded_after_a_restart_leaves_the_active_serving(rig: Rig) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    assert rig.deploy(flow, rig.bundle("2.0.0")).accepted
    slots = (EngineSlot("perception_a"), EngineSlot("perception_b"))
    slots[0].refuse.add("load")  # the node the previous version would go to
    switch = BlueGreenSwitch(slots)
    restarted = DeploymentFlow(ModelStore.open(rig.store.root), switch,
                               FlowSettings(trust=TrustStore.load(rig.keys / "trusted"), model_check=check_model))
    assert restarted.serve_committed().ref == V2
    assert live_slot(slots).model.ref == V2 and switch.snapshot().standby_model is None
    # The store's previous is still the rollback target: the rollback loads it.
    assert restarted.rollback("after restart").ref == V1 and live_slot(slots).model.ref == V1


def test_serve_committed_on_an_empty_store_serves_nothing(rig: Rig) -> None:
    assert rig.flow().serve_committed() is None
    assert rig.serving() == (None, None) and all(slot.calls == [] for slot in rig.slots)


# Optimize stage -----------------------------------------------------------------------------------


def test_optimizer_without_validation_images_serves_the_model_as_shipped(rig: Rig) -> None:
    optimizer = OnRobotOptimizer(load_target_profile("x86_cpu", TARGETS_FILE))
    outcome = rig.deploy(rig.flow(optimizer=optimizer), rig.bundle("1.0.0"))

    assert outcome.accepted, outcome.reason
    assert outcome.report["optimize"] == {
        "skipped": "the bundle has no validation images; serving the model as shipped"}
    assert rig.stage_names() == ["verify", "stage", "optimize", "swap", "commit"]
    assert outcome.model.artifacts == "" and rig.live().served_as == "model as shipped"
    assert list(rig.store.derived_dir(V1).iterdir()) == []


def test_optimizer_builds_a_variant_that_is_served_and_reused_after_a_restart(rig: Rig) -> None:
    optimizer = OnRobotOptimizer(load_target_profile("x86_cpu", TARGETS_FILE))
    outcome = rig.deploy(rig.flow(optimizer=optimizer), rig.bundle("1.0.0", images=True))

    assert outcome.accepted, outcome.reason
    report = outcome.report["optimize"]
    chosen = next(v for v in report["variants"] if v["name"] == report["chosen"])
    assert chosen["status"] == "accepted"
    artifacts = rig.store.derived_dir(V1) / "optimized-x86_cpu"
    assert outcome.model.artifacts == str(artifacts) and artifacts.is_dir()
    assert rig.live().served_as == f"optimized variant {report['chosen']}"
    assert [rig.live().answer(c) for c in COLOUR_LABELS] == list(COLOUR_LABELS)

    slots = (EngineSlot("perception_a"), EngineSlot("perception_b"))
    restarted = DeploymentFlow(ModelStore.open(rig.store.root), BlueGreenSwitch(slots),
                               FlowSettings(model_check=check_model),
                               optimizer=OnRobotOptimizer(load_target_profile("x86_cpu", TARGETS_FILE)))
    assert restarted.serve_committed().artifacts == str(artifacts)
    assert live_slot(slots).served_as == f"optimized variant {report['chosen']}"


def test_a_model_broken_in_its_own_fp32_is_refused_at_the_optimize_stage_and_marked_bad(rig: Rig) -> None:
    optimizer = OnRobotOptimizer(load_target_profile("x86_cpu", TARGETS_FILE))
    flow = rig.flow(optimizer=optimizer)
    assert rig.deploy(flow, rig.bundle("1.0.0", images=True)).accepted
    outcome = rig.deploy(flow, rig.bundle("2.0.0", colour_classifier(nan_unless="green"), images=True))

    assert not outcome.accepted
    assert outcome.reason.startswith("colour_classifier@2.0.0 rejected: refused at the optimize stage: the model's "
                                     "own FP32 output is NaN or infinite on 6 of 9 validation images"), outcome.reason
    assert "own FP32 output is NaN" in outcome.report["optimize"]["refused"]
    assert "shadow" not in rig.stage_names() and "swap" not in rig.stage_names()
    state = rig.store.state
    assert (state.active, state.candidate, state.bad) == (V1, None, (V2,))
    assert "rejected and marked bad: refused at the optimize stage" in state.history[-1].message
    assert not (rig.store.derived_dir(V2) / "optimized-x86_cpu").exists()
    assert_v1_still_serves(rig)
