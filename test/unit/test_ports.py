"""The deploy flow's ports and the perception slot: every adapter offers what the protocol names.

Protocols are not checked at runtime, and the real adapters (nodes/) only run
in the DDS tests, so a port renamed on one side would otherwise pass here.
"""
from __future__ import annotations

import inspect
import types
from typing import Any

import pytest

from robot_model_deployer.deploy.optimizer import OnRobotOptimizer
from robot_model_deployer.deploy.ports import OptimizerPort, ProbationPort, ShadowPort
from robot_model_deployer.deploy.switch import PerceptionSlot
from robot_model_deployer.nodes.lifecycle_client import LifecycleSlot
from robot_model_deployer.nodes.live_checks import ProbationWatch, ShadowRun


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def mismatches(protocol: type, implementation: Any) -> list[str]:
    """What ``implementation`` (a class, or an instance for data members too) lacks or names differently."""
    problems = []
    for name, wanted in protocol_methods(protocol).items():
        member = getattr(implementation, name, None)
        if member is None or not callable(member):
            problems.append(f"no method {name}")
            continue
        have = inspect.signature(member)
        have_params = [(p.name, p.kind) for p in have.parameters.values()]
        wanted_params = [(p.name, p.kind) for p in wanted.parameters.values()]
        if not inspect.isclass(implementation):
            wanted_params = wanted_params[1:]  # a bound method has no self
        if have_params != wanted_params:
            problems.append(f"{name}{have} differs from the protocol's {name}{wanted}")
    if not inspect.isclass(implementation):
        problems += [f"no attribute {name}" for name in getattr(protocol, "__annotations__", {})
                     if not hasattr(implementation, name)]
    return problems


def test_the_ports_name_their_jobs() -> None:
    assert set(protocol_methods(ShadowPort)) == {"validate"}
    assert set(protocol_methods(ProbationPort)) == {"watch"}
    assert set(protocol_methods(OptimizerPort)) == {"optimize", "built_artifacts"}
    assert set(protocol_methods(PerceptionSlot)) == {"state", "load", "unload", "activate", "deactivate"}


@pytest.mark.parametrize("protocol, implementation", [
    (ShadowPort, ShadowRun),
    (ProbationPort, ProbationWatch),
    (OptimizerPort, OnRobotOptimizer),
    (PerceptionSlot, LifecycleSlot(types.SimpleNamespace(name="perception_a"))),
], ids=["shadow", "probation", "optimizer", "perception-slot"])
def test_each_adapter_implements_its_port(protocol: type, implementation: Any) -> None:
    assert mismatches(protocol, implementation) == []


def test_a_mismatch_is_found() -> None:
    class OldShadow:
        def run(self, model, reference, manifest, cancel, progress): ...

    class SwappedArguments:
        def validate(self, reference, model, manifest, cancel, progress): ...

    class NamelessSlot:
        def state(self): ...
        def load(self, model): ...
        def unload(self): ...
        def activate(self): ...
        def deactivate(self): ...

    assert mismatches(ShadowPort, OldShadow) == ["no method validate"]
    assert len(mismatches(ShadowPort, SwappedArguments)) == 1
    assert mismatches(PerceptionSlot, NamelessSlot()) == ["no attribute name"]
