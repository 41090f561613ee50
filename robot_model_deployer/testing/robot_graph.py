"""A deployer graph for ``rmd robot`` tests and bench/bench_upload.py: real nodes in processes, a camera.

The manager, two perception nodes and the shadow node each run in a
process of their own (testing.ros_graph); the camera and whatever measures
the live path run in the caller's process.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.filelist import build_file_list
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import generate_keypair, load_private_key, sign_file_list
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.nodes.conversions import array_to_image
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, solid_image, write_bundle
from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, stop_all

MANAGER = "model_manager"
# Short gates so a deployment takes seconds (see test/ros/test_deploy_multiprocess.py for the slack).
QUICK_ACCEPTANCE = {"shadow_frames": 30, "probation_seconds": 2.0, "latency_slack_ms": 20.0}


def graph_processes(domain: int, log_dir: Path, store: Path, keys: Path | None, **manager: Any) -> list[NodeProcess]:
    """Start the nodes of one robot: signed bundles only when ``keys`` (a trust dir) is given."""
    perception = {"image_qos": "reliable", "warmup_runs": 1}
    trust = {"trust_dir": str(keys)} if keys is not None else {"allow_unsigned": True}
    return [
        NodeProcess("perception_node", "perception_a", domain, log_dir, perception),
        NodeProcess("perception_node", "perception_b", domain, log_dir, perception),
        NodeProcess("shadow_node", "shadow", domain, log_dir, {"report_period": 0.2}),
        manager_process(domain, log_dir, store, trust, **manager),
    ]


def manager_process(domain: int, log_dir: Path, store: Path, trust: dict[str, Any], **manager: Any) -> NodeProcess:
    return NodeProcess("manager_node", MANAGER, domain, log_dir,
                       {"store_dir": str(store), "shadow_timeout": 60.0, **trust, **manager})


def bundle_tar(work: Path, version: str, *, key: Path | None = None, padding_bytes: int = 0,
               model: Any = None, **manifest_changes: Any) -> Path:
    """A colour-classifier bundle .tar (signed with ``key`` when given), ``padding_bytes`` of extra data in it."""
    manifest = {**classifier_manifest(version=version), "acceptance": dict(QUICK_ACCEPTANCE), **manifest_changes}
    extras = {"extra/padding.bin": _padding(padding_bytes)} if padding_bytes else None
    source = write_bundle(work / f"bundle-{version}", model if model is not None else colour_classifier(), manifest,
                          extra_files=extras)
    file_list = build_file_list(source).to_bytes()
    signature = sign_file_list(file_list, load_private_key(key)) if key is not None else None
    output = work / f"bundle-{version}.tar"
    write_bundle_tar(output=output, root=source, file_list_bytes=file_list, signature=signature)
    return output


def _padding(size: int) -> bytes:
    """Bytes that do not compress (a real model's weights do not either), cheaper than os.urandom for 200 MB."""
    import numpy as np
    return np.random.default_rng(12).integers(0, 256, size, dtype=np.uint8).tobytes()


class LiveCamera:
    """Publishes solid frames of ``colour`` at ``rate``; records each result's frame-to-result latency (ms)."""

    def __init__(self, client: RosTestClient, rate: float = 30.0, width: int = 320, height: int = 240,
                 colour: str = "red") -> None:
        self._client = client
        self._publisher = client.node.create_publisher(Image, "/image", QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.colour = colour
        self._frames = {name: array_to_image(solid_image(name, width, height), PixelFormat.RGB8)
                        for name in ("red", "green", "blue")}
        self._sent: dict[tuple[int, int], float] = {}
        self.results: list[tuple[float, float, InferenceResult]] = []  # (arrival, latency ms, result)
        client.node.create_subscription(InferenceResult, "/results", self._on_result, 100)
        self._period = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LiveCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            frame = self._frames[self.colour]
            frame.header.stamp = self._client.node.get_clock().now().to_msg()
            self._sent[(frame.header.stamp.sec, frame.header.stamp.nanosec)] = time.monotonic()
            self._publisher.publish(frame)
            next_time += self._period
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _on_result(self, msg: InferenceResult) -> None:
        now = time.monotonic()
        sent = self._sent.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if sent is not None:
            self.results.append((now, (now - sent) * 1000.0, msg))

    def latencies_between(self, start: float, end: float) -> list[float]:
        return [latency for arrival, latency, _ in list(self.results) if start <= arrival < end]

    def versions_since(self, start: float) -> list[str]:
        return [result.model_version for arrival, _, result in list(self.results) if arrival >= start]


@dataclass
class RobotGraph:
    """One robot's nodes in processes, a ROS client and a live camera in this process; signed bundles."""

    domain: int
    work: Path
    keys: Path
    processes: list[NodeProcess]
    ros: RosTestClient
    camera: LiveCamera

    @classmethod
    def start(cls, work: Path, **manager: Any) -> "RobotGraph":
        domain = next_domain_id()
        keys = work / "keys"
        generate_keypair(out_dir=keys, name="signing")
        processes = graph_processes(domain, work, work / "store", keys, **manager)
        ros = RosTestClient(domain, "robot_graph_camera")
        camera = LiveCamera(ros, width=64, height=48).__enter__()
        return cls(domain, work, keys, processes, ros, camera)

    def bundle(self, version: str, signed: bool = True, **changes: Any) -> Path:
        return bundle_tar(self.work, version, key=self.keys / "signing.key" if signed else None, **changes)

    @property
    def manager(self) -> NodeProcess:
        return next(p for p in self.processes if p.name == MANAGER)

    def restart_manager(self, **manager: Any) -> None:
        """Stop the manager (SIGINT) and start a new one on the same store."""
        old = self.manager
        old.stop()
        old.log_path.rename(old.log_path.with_suffix(".before-restart.log"))
        self.processes[self.processes.index(old)] = manager_process(
            self.domain, self.work, self.work / "store", {"trust_dir": str(self.keys)}, **manager)

    def logs(self) -> str:
        logs = sorted(self.work.glob("*.log"))
        return "\n".join(f"----- {path.name} -----\n{path.read_text(errors='replace')}" for path in logs)

    def close(self) -> None:
        self.camera.__exit__()
        self.ros.close()
        stop_all(self.processes)
