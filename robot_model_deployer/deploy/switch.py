"""Blue/green switching between two perception nodes.

One node is live (active, publishing), the other a standby. A new model is
loaded into the standby, which is then activated before the live node is
deactivated, so results never stop. The old live node stays loaded (inactive
and warm) and becomes the standby: rolling back is one activation away.

The switch only sees PerceptionSlot objects; the manager node implements them
with lifecycle service calls, tests may implement them in-process.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol, Sequence

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.store.state import VersionRef

# Waits until the named node has published a result after the given time.monotonic() (or gives up).
AnswerWait = Callable[[str, float], None]


class SlotState(str, Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    UNKNOWN = "unknown"


class SwapError(RuntimeError):
    """A perception node refused a step; the message says which and why."""


class PerceptionSlot(Protocol):
    """One perception node as the switch drives it."""

    name: str

    def state(self) -> SlotState: ...

    def load(self, model: "ServedModel") -> None:
        """Configure the node with ``model`` (unconfigured -> inactive)."""

    def unload(self) -> None:
        """Release the model (inactive -> unconfigured)."""

    def activate(self) -> None: ...

    def deactivate(self) -> None: ...


@dataclass(frozen=True)
class ServedModel:
    """A model version as served by a perception node.

    ``ref`` says which version it is (compare refs, not strings; nodes write
    them into messages); ``path`` is the installed bundle directory;
    ``artifacts`` the directory of its optimized variants for this robot
    ("" serves the model as shipped).
    """

    ref: VersionRef
    task: Task
    path: str
    model_sha256: str = ""
    artifacts: str = ""

    def label(self) -> str:
        return f"{self.ref.name} {self.ref.version}"


@dataclass(frozen=True)
class SwitchSnapshot:
    live_node: str
    standby_node: str
    live_model: ServedModel | None
    standby_model: ServedModel | None


class BlueGreenSwitch:
    """Keeps track of which slot is live and swaps models without a gap.

    ``wait_for_answer`` is called between activating the new node and
    deactivating the old one: until the new node has answered a frame, the
    old one keeps answering. Without it a frame can fall between the two (it
    reached the new node just before activation and the old one just after
    its deactivation).
    """

    def __init__(self, slots: Sequence[PerceptionSlot], wait_for_answer: AnswerWait | None = None) -> None:
        if len(slots) != 2:
            raise ValueError(f"blue/green switching needs exactly two perception nodes, got {len(slots)}")
        self._slots = list(slots)
        self._live_index = 0
        self._models: list[ServedModel | None] = [None, None]
        self._lock = threading.Lock()
        self._wait_for_answer = wait_for_answer

    def snapshot(self) -> SwitchSnapshot:
        with self._lock:
            live, standby = self._live_index, 1 - self._live_index
            return SwitchSnapshot(self._slots[live].name, self._slots[standby].name,
                                  self._models[live], self._models[standby])

    def deploy(self, model: ServedModel) -> None:
        """Load ``model`` into the standby, make it live, keep the old model warm.

        On any failure the node that was live stays live and SwapError says why.
        """
        live, standby = self._live_index, 1 - self._live_index
        standby_slot, live_slot = self._slots[standby], self._slots[live]
        release_slot(standby_slot)
        self._models[standby] = None
        standby_slot.load(model)
        with self._lock:
            self._models[standby] = model
        try:
            self._hand_over(live_slot, standby_slot)
        except SwapError:
            # The rejected model never served: forget it, so rollback() cannot make it live.
            with self._lock:
                self._models[standby] = None
            try:
                release_slot(standby_slot)
            except SwapError:
                pass  # best effort; the next deploy releases the node again or says to restart it
            raise

    def resume(self, model: ServedModel, warm: ServedModel | None = None) -> None:
        """After the manager restarted: serve ``model`` first, then load ``warm`` without ever activating it.

        The perception nodes may still run from before the restart; the one
        that publishes keeps publishing until ``model`` answers on the other,
        so results neither stop nor come from ``warm``. SwapError from loading
        ``warm`` leaves ``model`` serving and the standby empty.
        """
        states = [slot.state() for slot in self._slots]
        if states[1 - self._live_index] is SlotState.ACTIVE and states[self._live_index] is not SlotState.ACTIVE:
            with self._lock:  # load into the node that is not publishing
                self._live_index = 1 - self._live_index
        self.deploy(model)
        if warm is not None:
            self.load_standby(warm)

    def load_standby(self, model: ServedModel) -> None:
        """Load ``model`` into the standby node, inactive: a warm rollback target that never serves by itself."""
        standby = 1 - self._live_index
        self._release_standby()
        self._slots[standby].load(model)
        with self._lock:
            self._models[standby] = model

    def unload_standby(self) -> None:
        """Release the standby node and forget its model (e.g. a candidate that was rolled back)."""
        self._release_standby()

    def _release_standby(self) -> None:
        # The model is forgotten only once the node let it go: until then status names what is loaded.
        standby = 1 - self._live_index
        release_slot(self._slots[standby])
        with self._lock:
            self._models[standby] = None

    def rollback(self) -> ServedModel:
        """Make the warm standby live again; returns the model now served."""
        live, standby = self._live_index, 1 - self._live_index
        previous = self._models[standby]
        if previous is None:
            raise SwapError(f"no previous model is loaded on {self._slots[standby].name} to roll back to")
        # No state query first: the activation is the check (a standby that is not inactive refuses it),
        # and a round trip less is a rollback that serves sooner.
        try:
            self._hand_over(self._slots[live], self._slots[standby])
        except SwapError as exc:
            raise SwapError(f"could not roll back to {previous.label()} on {self._slots[standby].name}: {exc}") from None
        return previous

    def _hand_over(self, live_slot: PerceptionSlot, standby_slot: PerceptionSlot) -> None:
        activated = time.monotonic()
        standby_slot.activate()
        if live_slot.state() is SlotState.ACTIVE:
            if self._wait_for_answer is not None:
                self._wait_for_answer(standby_slot.name, activated)
            try:
                live_slot.deactivate()
            except SwapError:
                # The new node serves; two publishers for a moment beats none.
                # Undo the activation so exactly one node stays live.
                standby_slot.deactivate()
                raise
        with self._lock:
            self._live_index = self._slots.index(standby_slot)


def release_slot(slot: PerceptionSlot) -> None:
    """Bring a node back to unconfigured (deactivate, then unload) so it can load another model."""
    state = slot.state()
    if state is SlotState.ACTIVE:
        slot.deactivate()
        state = SlotState.INACTIVE
    if state is SlotState.INACTIVE:
        slot.unload()
    elif state is not SlotState.UNCONFIGURED:
        raise SwapError(f"{slot.name} is in state {state.value}; restart it before deploying")
