"""Blue/green switching with two in-process perception slots (our PerceptionSlot protocol)."""
from __future__ import annotations

from typing import Iterator

import pytest

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.deploy.switch import (
    BlueGreenSwitch, ServedModel, SlotState, SwapError, SwitchSnapshot,
)
from robot_model_deployer.store.state import VersionRef


class LifecycleSlot:
    """A perception node reduced to its lifecycle: refuses transitions a real node would refuse.

    ``fail`` names steps that should fail once (as a node whose transition callback returns
    FAILURE: the state stays where it was).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = SlotState.UNCONFIGURED
        self.model_dir: str | None = None
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.serving_log: list[str | None] = []

    def state(self) -> SlotState:
        return self._state

    def _step(self, step: str, source: SlotState, target: SlotState) -> None:
        self.calls.append(step)
        if self._state is not source:
            raise SwapError(f"{self.name}: cannot {step} from {self._state.value}")
        if step in self.fail:
            self.fail.discard(step)
            raise SwapError(f"{self.name} refused to {step}")
        self._state = target

    def load(self, model: ServedModel) -> None:
        self._step("load", SlotState.UNCONFIGURED, SlotState.INACTIVE)
        self.model_dir = model.path

    def unload(self) -> None:
        self._step("unload", SlotState.INACTIVE, SlotState.UNCONFIGURED)
        self.model_dir = None

    def activate(self) -> None:
        self._step("activate", SlotState.INACTIVE, SlotState.ACTIVE)

    def deactivate(self) -> None:
        self._step("deactivate", SlotState.ACTIVE, SlotState.INACTIVE)


def model(version: str) -> ServedModel:
    return ServedModel(ref=VersionRef.parse(f"det@{version}"), task=Task.DETECTION, path=f"/store/det/{version}",
                       model_sha256="ab" * 32)


V1, V2, V3 = model("1.0.0"), model("2.0.0"), model("3.0.0")


@pytest.fixture
def slots() -> tuple[LifecycleSlot, LifecycleSlot]:
    return LifecycleSlot("perception_a"), LifecycleSlot("perception_b")


@pytest.fixture
def switch(slots) -> Iterator[BlueGreenSwitch]:
    switch = BlueGreenSwitch(slots)
    yield switch
    # Whatever a test did, never two publishers.
    assert sum(s.state() is SlotState.ACTIVE for s in slots) <= 1


def active(slots) -> list[str]:
    return [s.name for s in slots if s.state() is SlotState.ACTIVE]


def serving(slots) -> str | None:
    """Model directory of the one active slot (asserts there is exactly one)."""
    live = [s for s in slots if s.state() is SlotState.ACTIVE]
    assert len(live) == 1, f"expected exactly one active slot, got {[s.name for s in live]}"
    return live[0].model_dir


@pytest.mark.parametrize("count", [0, 1, 3])
def test_switch_needs_exactly_two_slots(count: int) -> None:
    with pytest.raises(ValueError, match=f"exactly two perception nodes, got {count}"):
        BlueGreenSwitch([LifecycleSlot(str(i)) for i in range(count)])


def test_initial_snapshot_has_no_models(switch, slots) -> None:
    assert switch.snapshot() == SwitchSnapshot("perception_a", "perception_b", None, None)


def test_first_deploy_makes_the_model_live(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    assert serving(slots) == V1.path
    assert active(slots) == ["perception_b"]
    assert a.state() is SlotState.UNCONFIGURED
    assert b.calls == ["load", "activate"]
    assert a.calls == []
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V1, None)


def test_second_deploy_swaps_slots_and_keeps_the_old_model_warm(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    switch.deploy(V2)
    assert serving(slots) == V2.path
    assert active(slots) == ["perception_a"]
    assert b.state() is SlotState.INACTIVE and b.model_dir == V1.path
    assert switch.snapshot() == SwitchSnapshot("perception_a", "perception_b", V2, V1)
    # The new node was activated before the old one stopped: no gap in results.
    assert a.calls == ["load", "activate"]
    assert b.calls == ["load", "activate", "deactivate"]


def test_third_deploy_replaces_the_oldest_model(switch, slots) -> None:
    a, b = slots
    for version in (V1, V2, V3):
        switch.deploy(version)
    assert serving(slots) == V3.path
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V3, V2)
    assert b.calls == ["load", "activate", "deactivate", "unload", "load", "activate"]
    assert a.state() is SlotState.INACTIVE and a.model_dir == V2.path


def test_rollback_makes_the_previous_model_live_again(switch, slots) -> None:
    switch.deploy(V1)
    switch.deploy(V2)
    assert switch.rollback() == V1
    assert serving(slots) == V1.path
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V1, V2)
    # Rolling back again goes forward to V2: it is still warm.
    assert switch.rollback() == V2
    assert serving(slots) == V2.path


def test_rollback_does_not_reload_anything(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    switch.deploy(V2)
    loads = a.calls.count("load") + b.calls.count("load")
    switch.rollback()
    assert a.calls.count("load") + b.calls.count("load") == loads


def test_rollback_before_any_deploy_fails(switch, slots) -> None:
    with pytest.raises(SwapError, match="no previous model is loaded on perception_b to roll back to"):
        switch.rollback()
    assert active(slots) == []


def test_rollback_after_first_deploy_fails_and_keeps_serving(switch, slots) -> None:
    switch.deploy(V1)
    with pytest.raises(SwapError, match="no previous model is loaded on perception_a"):
        switch.rollback()
    assert serving(slots) == V1.path
    assert switch.snapshot().live_model == V1


def test_rollback_fails_when_the_standby_lost_its_model(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    switch.deploy(V2)
    b.unload()  # e.g. the standby node was restarted
    with pytest.raises(SwapError, match="could not roll back to det 1.0.0 on perception_b: .*cannot activate from "
                                        "unconfigured"):
        switch.rollback()
    assert serving(slots) == V2.path


def test_load_failure_leaves_the_live_slot_live_and_active(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    a.fail.add("load")
    with pytest.raises(SwapError, match="perception_a refused to load"):
        switch.deploy(V2)
    assert serving(slots) == V1.path
    assert switch.snapshot().live_node == "perception_b"
    assert switch.snapshot().live_model == V1
    assert switch.snapshot().standby_model is None


def test_deploy_after_a_failed_load_works(switch, slots) -> None:
    a, _ = slots
    switch.deploy(V1)
    a.fail.add("load")
    with pytest.raises(SwapError):
        switch.deploy(V2)
    switch.deploy(V2)
    assert serving(slots) == V2.path
    assert switch.snapshot() == SwitchSnapshot("perception_a", "perception_b", V2, V1)


def test_load_failure_on_the_first_deploy_leaves_nothing_live(switch, slots) -> None:
    _, b = slots
    b.fail.add("load")
    with pytest.raises(SwapError):
        switch.deploy(V1)
    assert active(slots) == []
    assert switch.snapshot() == SwitchSnapshot("perception_a", "perception_b", None, None)


def test_activation_failure_leaves_the_live_slot_live(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    a.fail.add("activate")
    with pytest.raises(SwapError, match="perception_a refused to activate"):
        switch.deploy(V2)
    assert serving(slots) == V1.path
    assert b.state() is SlotState.ACTIVE
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V1, None)
    assert "deactivate" not in b.calls
    assert a.state() is SlotState.UNCONFIGURED  # released, ready for the next deploy


def test_deactivate_failure_undoes_the_activation(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    b.fail.add("deactivate")
    with pytest.raises(SwapError, match="perception_b refused to deactivate"):
        switch.deploy(V2)
    assert serving(slots) == V1.path
    # The rejected model is unloaded and forgotten, so a rollback cannot serve it.
    assert a.state() is SlotState.UNCONFIGURED
    assert a.calls == ["load", "activate", "deactivate", "unload"]
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V1, None)


def test_rollback_with_deactivate_failure_keeps_the_current_model(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    switch.deploy(V2)
    a.fail.add("deactivate")
    with pytest.raises(SwapError):
        switch.rollback()
    assert serving(slots) == V2.path
    assert switch.snapshot() == SwitchSnapshot("perception_a", "perception_b", V2, V1)
    assert switch.rollback() == V1  # the failure was transient; rollback still possible


def test_deploy_deactivates_a_stray_active_standby_first(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    a.load(model("9.9.9"))
    a.activate()  # someone activated the standby by hand
    switch.deploy(V2)
    assert serving(slots) == V2.path
    assert a.calls[-4:] == ["deactivate", "unload", "load", "activate"]


def test_deploy_refuses_a_standby_in_an_unknown_state(switch, slots) -> None:
    a, _ = slots
    switch.deploy(V1)
    a._state = SlotState.UNKNOWN  # the node crashed or its state could not be read
    with pytest.raises(SwapError, match="perception_a is in state unknown; restart it before deploying"):
        switch.deploy(V2)
    assert serving(slots) == V1.path


def test_exactly_one_slot_active_after_every_operation(switch, slots) -> None:
    a, b = slots
    operations = [
        lambda: switch.deploy(V1),
        lambda: switch.deploy(V2),
        lambda: switch.rollback(),
        lambda: (a.fail.add("load"), switch.deploy(V3)),
        lambda: switch.deploy(V3),
        lambda: (b.fail.add("activate"), switch.rollback()),
        lambda: switch.rollback(),
        lambda: (b.fail.add("deactivate"), switch.rollback()),
        lambda: (a.fail.add("activate"), switch.deploy(V1)),
        lambda: switch.deploy(V1),
    ]
    for operation in operations:
        try:
            operation()
        except SwapError:
            pass
        live = switch.snapshot()
        assert active(slots) == [live.live_node]
        assert serving(slots) == live.live_model.path


def test_served_model_label() -> None:
    assert V2.label() == "det 2.0.0"


def test_rollback_after_failed_deploy_does_not_serve_the_rejected_model(switch, slots) -> None:
    a, _ = slots
    switch.deploy(V1)
    a.fail.add("activate")
    with pytest.raises(SwapError):
        switch.deploy(V2)
    assert switch.snapshot().standby_model != V2
    try:
        switch.rollback()
    except SwapError:
        pass
    assert serving(slots) != V2.path


def test_the_old_node_serves_until_the_new_one_has_answered(slots) -> None:
    seen: list[tuple[str, dict[str, SlotState]]] = []

    def wait_for_answer(node: str, since: float) -> None:
        seen.append((node, {s.name: s.state() for s in slots}))

    switch = BlueGreenSwitch(slots, wait_for_answer)
    switch.deploy(V1)
    assert seen == []  # nothing was live: nobody to hand over from
    switch.deploy(V2)
    switch.rollback()
    both = {"perception_a": SlotState.ACTIVE, "perception_b": SlotState.ACTIVE}
    assert seen == [("perception_a", both), ("perception_b", both)]
    assert switch.snapshot().live_model == V1


# After a manager restart, and the standby as a warm rollback target -------------------------------


def test_resume_on_fresh_nodes_serves_the_active_model_and_loads_the_previous_without_activating_it(
        switch, slots) -> None:
    a, b = slots
    switch.resume(V2, warm=V1)
    assert serving(slots) == V2.path
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V2, V1)
    assert b.calls == ["load", "activate"] and a.calls == ["load"]
    assert a.state() is SlotState.INACTIVE and a.model_dir == V1.path


@pytest.mark.parametrize("live_index", [0, 1])
def test_resume_over_running_nodes_hands_over_from_the_node_that_publishes(slots, live_index: int) -> None:
    """A new manager finds V2 live and V1 warm on either node; results must neither stop nor come from V1."""
    live, standby = slots[live_index], slots[1 - live_index]
    live.load(V2)
    live.activate()
    standby.load(V1)
    for slot in slots:
        slot.calls.clear()
    handovers: list[dict[str, SlotState]] = []
    switch = BlueGreenSwitch(slots, lambda node, since: handovers.append({s.name: s.state() for s in slots}))

    switch.resume(V2, warm=V1)

    assert handovers == [{"perception_a": SlotState.ACTIVE, "perception_b": SlotState.ACTIVE}]
    assert standby.calls == ["unload", "load", "activate"] and standby.model_dir == V2.path
    assert live.calls == ["deactivate", "unload", "load"] and live.model_dir == V1.path
    assert serving(slots) == V2.path
    assert switch.snapshot() == SwitchSnapshot(standby.name, live.name, V2, V1)


def test_resume_with_a_previous_that_fails_to_load_keeps_the_active_serving(switch, slots) -> None:
    a, _ = slots
    a.fail.add("load")
    with pytest.raises(SwapError, match="perception_a refused to load"):
        switch.resume(V2, warm=V1)
    assert serving(slots) == V2.path
    assert switch.snapshot() == SwitchSnapshot("perception_b", "perception_a", V2, None)


def test_load_standby_replaces_the_standby_model_and_never_activates_it(switch, slots) -> None:
    switch.deploy(V1)
    switch.deploy(V2)
    switch.rollback()  # V1 live again, V2 warm
    standby = next(s for s in slots if s.state() is not SlotState.ACTIVE)
    switch.load_standby(V3)
    assert serving(slots) == V1.path
    assert standby.state() is SlotState.INACTIVE and standby.model_dir == V3.path
    assert switch.snapshot().standby_model == V3
    assert switch.rollback() == V3 and serving(slots) == V3.path


def test_unload_standby_forgets_its_model_so_status_and_rollback_name_nothing(switch, slots) -> None:
    switch.deploy(V1)
    switch.deploy(V2)
    switch.rollback()
    switch.unload_standby()
    assert switch.snapshot().standby_model is None and serving(slots) == V1.path
    assert all(s.state() is SlotState.UNCONFIGURED for s in slots if s.state() is not SlotState.ACTIVE)
    with pytest.raises(SwapError, match="no previous model is loaded"):
        switch.rollback()


def test_a_standby_that_refuses_to_unload_is_still_reported_as_holding_its_model(switch, slots) -> None:
    a, b = slots
    switch.deploy(V1)
    switch.deploy(V2)
    b.fail.add("unload")
    with pytest.raises(SwapError, match="perception_b refused to unload"):
        switch.unload_standby()
    assert switch.snapshot().standby_model == V1  # it is still loaded there: say so
    b.fail.add("unload")
    with pytest.raises(SwapError):
        switch.load_standby(V3)
    assert switch.snapshot().standby_model == V1
