"""The demo: the whole node graph in one process on a demo camera.

Starts the demo camera, two lifecycle perception nodes, the shadow node and
the manager on one MultiThreadedExecutor. A real ImageNet classifier
(EfficientNet-Lite0, exported locally on first use) is packed into a bundle,
signed with a demo key the robot trusts, and deployed into a fresh store;
the demo prints what the robot perceives until Ctrl-C or ``--duration``.

    demo [--duration 30] [--bundle DIR] [--rate 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from ament_index_python.packages import get_package_share_directory
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.demo import zoo
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.demo.camera_node import DemoCameraNode
from robot_model_deployer.nodes.manager_node import ManagerNode
from robot_model_deployer.nodes.perception_node import PerceptionNode
from robot_model_deployer.nodes.shadow_node import ShadowNode


class ResultPrinter(Node):
    """Prints a line when what the live model sees changes, and once a second."""

    def __init__(self) -> None:
        super().__init__("demo_printer")
        self._start = time.monotonic()
        self._last_line = ""
        self._last_print = 0.0
        self.results = 0
        self.create_subscription(InferenceResult, "results", self._on_result, 10)

    def _on_result(self, msg: InferenceResult) -> None:
        self.results += 1
        if msg.task == "classification":
            seen = ", ".join(f"{label} {score:.2f}" for label, score in zip(msg.labels[:3], msg.scores[:3]))
        else:
            seen = f"{len(msg.scores)} boxes" + (f", best {msg.labels[0]} {msg.scores[0]:.2f}" if len(msg.scores) else "")
        line = f"{msg.node_name} {msg.model_name} {msg.model_version} | {seen}"
        now = time.monotonic()
        if line != self._last_line or now - self._last_print >= 1.0:
            print(f"{now - self._start:6.1f}s  {line} | {msg.inference_ms:.1f} ms", flush=True)
            self._last_line, self._last_print = line, now


def signed_demo_bundle(source: Path, work: Path) -> tuple[Path, Path]:
    """Pack ``source`` into a bundle signed by a fresh demo key; returns (bundle, trust dir)."""
    keys = generate_keypair(out_dir=work / "trusted_keys", name="demo")
    bundle = work / f"{source.name}.tar"
    create_bundle(source=source, output=bundle)
    sign_bundle(bundle=bundle, key=keys.private_key)
    keys.private_key.unlink()  # The robot only ever holds public keys.
    return bundle, keys.public_key.parent


def _use_shipped_fastdds_profile() -> None:
    """As the launch file does: camera frames over shared memory, unless the user chose a profile."""
    share = Path(get_package_share_directory("robot_model_deployer"))
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds_large_data.xml"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)")
    parser.add_argument("--bundle", default="", help="bundle to deploy instead of EfficientNet-Lite0")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:])

    source = args.bundle
    if not source:
        print("[demo] preparing EfficientNet-Lite0 (exported with torch on first use, ~30 s)", flush=True)
        try:
            source = str(zoo.efficientnet_lite0_bundle())
        except zoo.ZooUnavailable as exc:
            sys.exit(f"[demo] {exc}; run scripts/setup.sh, or pass --bundle DIR")
    work = Path(tempfile.mkdtemp(prefix="rmd-demo-"))
    bundle, trust_dir = signed_demo_bundle(Path(source), work)
    print(f"[demo] signed {bundle.name} with a demo key; deploying it into the store {work / 'store'}", flush=True)

    _use_shipped_fastdds_profile()
    rclpy.init(args=argv)
    nodes = [
        DemoCameraNode(parameter_overrides=[Parameter("rate", value=args.rate),
                                            Parameter("frames_per_image", value=max(1, int(args.rate * 3)))]),
        PerceptionNode("perception_a"),
        PerceptionNode("perception_b"),
        ShadowNode(),
        ManagerNode(parameter_overrides=[Parameter("initial_bundle", value=str(bundle)),
                                         Parameter("store_dir", value=str(work / "store")),
                                         Parameter("trust_dir", value=str(trust_dir))]),
    ]
    printer = ResultPrinter()
    executor = MultiThreadedExecutor(num_threads=6)
    for node in (*nodes, printer):
        executor.add_node(node)
    deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(f"[demo] {printer.results} results received", flush=True)
        executor.shutdown()
        for node in (*nodes, printer):
            node.destroy_node()
        rclpy.try_shutdown()
    if printer.results == 0:
        sys.exit("[demo] no results were published; see the log lines above")
