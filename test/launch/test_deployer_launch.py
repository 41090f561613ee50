"""The launch file, run as `ros2 launch` runs it: every node starts, the initial bundle goes live, results flow.

Needs launch, launch_ros and launch_testing from a ROS 2 install; they are not
on PyPI, so where they are missing pytest skips this module. With them:

    launch_test test/launch/test_deployer_launch.py     # or: pytest test/launch

The same behaviour is tested without launch through rclpy in
test/ros/test_deploy_multiprocess.py and test/ros/test_node_processes.py;
what the launch file does when a node exits, in test_deployer_launch_exits.py.
"""
from __future__ import annotations

import os
import tempfile
import time
import unittest
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

_WHY = "needs launch, launch_ros and launch_testing from a ROS 2 install (not available from PyPI)"
launch_testing = pytest.importorskip("launch_testing", reason=_WHY)
pytest.importorskip("launch_ros", reason=_WHY)

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from robot_model_deployer.bundle.pack import create_bundle, sign_bundle  # noqa: E402
from robot_model_deployer.bundle.signing import generate_keypair  # noqa: E402
from robot_model_deployer.msg import DeploymentStatus, InferenceResult  # noqa: E402
from robot_model_deployer.testing.models import (COLOUR_LABELS, classifier_manifest, colour_classifier,  # noqa: E402
                                                  write_bundle)
from robot_model_deployer.testing.ros_graph import next_domain_id  # noqa: E402

PACKAGE = "robot_model_deployer"
PERCEPTION_NODES = ("perception_a", "perception_b")
# Start-up includes Python imports, ONNX Runtime sessions and DDS discovery in four processes.
STARTUP_TIMEOUT = 60.0


@pytest.mark.launch_test
def generate_test_description():
    # Own DDS domain, set before launch_ros and the test's rclpy context start, so
    # nodes of other tests or of a robot on this network never answer.
    os.environ["ROS_DOMAIN_ID"] = str(next_domain_id())
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    work = Path(tempfile.mkdtemp(prefix="rmd_launch_test_"))
    source = write_bundle(work / "colour_classifier", colour_classifier(), classifier_manifest())
    keys = generate_keypair(out_dir=work / "keys", name="signing")
    bundle = work / "colour_classifier.tar"
    create_bundle(source=source, output=bundle)
    sign_bundle(bundle=bundle, key=keys.private_key)
    launch_file = Path(get_package_share_directory(PACKAGE)) / "launch" / "deployer.launch.py"
    deployer = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file)),
        launch_arguments={"demo_camera": "true", "initial_bundle": str(bundle), "use_sim_time": "false",
                          "store_dir": str(work / "store"), "trust_dir": str(work / "keys")}.items(),
    )
    return LaunchDescription([deployer, launch_testing.actions.ReadyToTest()]), {"bundle": bundle}


class TestDeployerRuns(unittest.TestCase):
    """Watches the launched graph from a node of the test's own."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.context = Context()
        rclpy.init(context=cls.context)
        cls.node = rclpy.create_node("launch_test_observer", context=cls.context)
        cls.executor = SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.node)
        cls.results: list[InferenceResult] = []
        cls.statuses: list[DeploymentStatus] = []
        cls.node.create_subscription(InferenceResult, "/results", cls.results.append, 50)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        cls.node.create_subscription(DeploymentStatus, "/model_manager/status", cls.statuses.append, latched)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.executor.shutdown()
        cls.node.destroy_node()
        rclpy.shutdown(context=cls.context)

    def spin_until(self, done: Callable[[], bool], timeout: float = STARTUP_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            self.executor.spin_once(timeout_sec=0.1)
        return done()

    def live_status(self, bundle: Path) -> DeploymentStatus | None:
        """The latest status in which the bundle's model (installed into the store) is live."""
        for status in reversed(self.statuses):
            if (status.active.name, status.active.version) == ("colour_classifier", "1.0.0") and status.live_node:
                return status
        return None

    def test_all_nodes_start(self) -> None:
        expected = {"model_manager", "demo_camera", "shadow", *PERCEPTION_NODES}
        started = self.spin_until(lambda: expected <= set(self.node.get_node_names()))
        self.assertTrue(started, f"nodes running: {sorted(self.node.get_node_names())}, expected {sorted(expected)}")

    def test_every_node_has_its_own_name(self) -> None:
        # launch names each node with a global `-r __node:=NAME`; the manager's probation listener,
        # a second node in its process, must not take that name too.
        expected = {"model_manager", "model_manager_probation", "demo_camera", "shadow", *PERCEPTION_NODES}
        self.assertTrue(self.spin_until(lambda: expected <= set(self.node.get_node_names())),
                        f"nodes running: {sorted(self.node.get_node_names())}, expected {sorted(expected)}")
        names = Counter(self.node.get_node_names())
        self.assertEqual({name: names[name] for name in expected}, dict.fromkeys(expected, 1), names)

    def test_initial_bundle_goes_live(self, bundle: Path) -> None:
        self.assertTrue(self.spin_until(lambda: self.live_status(bundle) is not None),
                        f"no status with {bundle} live; last: {self.statuses[-1] if self.statuses else 'none'}")
        status = self.live_status(bundle)
        self.assertEqual(status.active.name, "colour_classifier")
        self.assertEqual(status.active.version, "1.0.0")
        self.assertIn(status.live_node, PERCEPTION_NODES)
        self.assertEqual({status.live_node, status.standby_node}, set(PERCEPTION_NODES))

    def test_live_node_publishes_results(self, bundle: Path) -> None:
        self.assertTrue(self.spin_until(lambda: self.live_status(bundle) is not None), "initial bundle never went live")
        live_node = self.live_status(bundle).live_node
        start = len(self.results)
        self.assertTrue(self.spin_until(lambda: len(self.results) - start >= 5),
                        f"{len(self.results) - start} results on /results since the deploy, expected 5")
        recent = self.results[start:]
        self.assertEqual({r.node_name for r in recent}, {live_node}, "only the live node may publish")
        for result in recent:
            self.assertEqual((result.model_name, result.model_version, result.task),
                             ("colour_classifier", "1.0.0", "classification"))
            self.assertEqual(result.header.frame_id, "camera")
            self.assertTrue(result.labels and set(result.labels) <= set(COLOUR_LABELS), result.labels)
            self.assertAlmostEqual(sum(result.scores), 1.0, places=3)


@launch_testing.post_shutdown_test()
class TestDeployerShutdown(unittest.TestCase):

    def test_every_process_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
