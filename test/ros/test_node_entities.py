"""Lifecycle nodes give back every ROS entity they create (real rclpy, in this process).

A subscription whose QoS event handlers outlive it stays in the executor's
wait set with a dead handle, and the executor then spins a core at 100% (the
shadow node once did this after its first cleanup).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter

from robot_model_deployer.nodes.perception_node import PerceptionNode
from robot_model_deployer.nodes.shadow_node import ShadowNode
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle
from robot_model_deployer.testing.ros_graph import next_domain_id


@pytest.fixture
def context(monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    monkeypatch.setenv("ROS_DOMAIN_ID", str(next_domain_id()))
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def entities(node: LifecycleNode) -> dict[str, int]:
    return {"subscriptions": len(list(node.subscriptions)), "publishers": len(list(node.publishers)),
            "timers": len(list(node.timers)), "waitables": len(list(node.waitables))}


@pytest.mark.parametrize("node_class,reference", [(PerceptionNode, False), (ShadowNode, True), (ShadowNode, False)])
def test_cleanup_gives_back_every_entity_configure_created(context: Context, tmp_path: Path, node_class,
                                                         reference: bool) -> None:
    bundle = write_bundle(tmp_path / "bundle", colour_classifier(), classifier_manifest())
    parameters = [Parameter("model_dir", value=str(bundle))]
    if reference:
        parameters.append(Parameter("reference_model_dir", value=str(bundle)))
    node = node_class(context=context, parameter_overrides=parameters)
    try:
        unconfigured = entities(node)
        for _ in range(2):
            assert node.trigger_configure() is TransitionCallbackReturn.SUCCESS
            assert entities(node)["subscriptions"] == (2 if node_class is ShadowNode else 1)
            assert node.trigger_activate() is TransitionCallbackReturn.SUCCESS
            assert node.trigger_deactivate() is TransitionCallbackReturn.SUCCESS
            assert node.trigger_cleanup() is TransitionCallbackReturn.SUCCESS
            assert entities(node) == unconfigured
    finally:
        node.destroy_node()


def test_shadow_refuses_to_configure_when_the_reference_does_not_load_and_keeps_nothing(context: Context,
                                                                                       tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle", colour_classifier(), classifier_manifest())
    missing = tmp_path / "no-such-bundle"
    node = ShadowNode(context=context, parameter_overrides=[Parameter("model_dir", value=str(bundle)),
                                                            Parameter("reference_model_dir", value=str(missing))])
    try:
        unconfigured = entities(node)
        assert node.trigger_configure() is TransitionCallbackReturn.FAILURE
        assert entities(node) == unconfigured
        assert node._engine is None and node._reference is None
        # Fixed by whoever sets it (the manager): the next configure loads.
        node.set_parameters([Parameter("reference_model_dir", value=str(bundle))])
        assert node.trigger_configure() is TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() is TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()
