#!/usr/bin/env python3
"""Per-frame latency through the perception node, against the raw model cost.

Measures, in one run on this machine:
- raw: pre-processing + session.run + post-processing in-process
  (InferenceEngine.infer) for the same model and frames;
- node: image header stamp -> InferenceResult received, with the perception
  node in its own process and the camera publisher in another, once with
  Fast DDS defaults and once with config/fastdds_large_data.xml;
and prints p50/p99 of each and their ratio to raw, as a table and JSON.

    source scripts/env.sh
    python bench/bench_perception_latency.py [--frames 300] [--rate 30] [--bundle DIR]

Each transport runs in a fresh child process of this script, because Fast
DDS reads its profile file once per process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.demo import zoo
from robot_model_deployer.demo.frames import load_frames
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.validation.metrics import percentile

REPO = Path(__file__).resolve().parent.parent
TRANSPORTS = {"fastdds_default": None, "fastdds_large_data_profile": REPO / "config" / "fastdds_large_data.xml"}


def _summary(latencies_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies_ms, 50), 3), "p99_ms": round(percentile(latencies_ms, 99), 3),
            "mean_ms": round(float(np.mean(latencies_ms)), 3) if latencies_ms else 0.0, "count": len(latencies_ms)}


def measure_raw(bundle: str, frames: list[np.ndarray], count: int) -> dict[str, float]:
    engine = InferenceEngine.from_bundle(load_bundle_dir(bundle))
    latencies = []
    for index in range(count):
        start = time.perf_counter()
        engine.infer(frames[index % len(frames)], PixelFormat.RGB8)
        latencies.append((time.perf_counter() - start) * 1000.0)
    return _summary(latencies)


def measure_node(bundle: str, frames: list[np.ndarray], count: int, rate: float, warmup: int) -> dict[str, float]:
    """Runs in a child process whose environment selects the transport."""
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from robot_model_deployer.msg import InferenceResult
    from robot_model_deployer.nodes.conversions import array_to_image
    from robot_model_deployer.nodes.lifecycle_client import LifecycleTransition, RemoteLifecycleNode
    from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id

    domain = next_domain_id()
    logs = Path(tempfile.mkdtemp(prefix="rmd-bench-"))
    node = NodeProcess("perception_node", "perception", domain, logs,
                       {"model_dir": bundle, "image_qos": "reliable", "warmup_runs": 3})
    client = RosTestClient(domain, "bench_camera")
    try:
        remote = RemoteLifecycleNode(client.node, "/perception", ReentrantCallbackGroup(), timeout=60.0)
        if not (remote.transition(LifecycleTransition.CONFIGURE) and remote.transition(LifecycleTransition.ACTIVATE)):
            raise RuntimeError(f"perception node did not start:\n{node.log()}")
        received: dict[int, float] = {}
        done = threading.Event()

        def on_result(msg: InferenceResult) -> None:
            received[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.time_ns()
            if len(received) >= warmup + count:
                done.set()

        client.node.create_subscription(InferenceResult, "/results", on_result, 50)
        publisher = client.node.create_publisher(Image, "/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        messages = [array_to_image(frame, PixelFormat.RGB8) for frame in frames]
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent: list[int] = []
        period = 1.0 / rate
        next_time = time.monotonic()
        for index in range(warmup + count):
            msg = messages[index % len(messages)]
            stamp = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            publisher.publish(msg)
            sent.append(stamp)
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        done.wait(5.0)
        measured = sent[warmup:]
        latencies = [(received[s] - s) / 1e6 for s in measured if s in received]
        summary = _summary(latencies)
        summary["frames_sent"] = len(measured)
        summary["frames_without_result"] = len(measured) - len(latencies)
        return summary
    finally:
        client.close()
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="measured frames per configuration")
    parser.add_argument("--warmup", type=int, default=30, help="frames sent before measuring")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--bundle", default="", help="bundle directory (default: EfficientNet-Lite0 from the zoo)")
    parser.add_argument("--child", choices=sorted(TRANSPORTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    bundle = args.bundle or str(zoo.efficientnet_lite0_bundle())
    frames = load_frames("skimage", args.width, args.height)

    if args.child:
        print(json.dumps(measure_node(bundle, frames, args.frames, args.rate, args.warmup)))
        return 0

    raw = measure_raw(bundle, frames, args.frames)
    results = {"machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
               "model": load_bundle_dir(bundle).manifest.name, "frame": f"{args.width}x{args.height} rgb8",
               "rate_hz": args.rate, "raw_infer": raw, "node": {}}
    for transport, profile in TRANSPORTS.items():
        env = dict(os.environ)
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        if profile is not None:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        child = subprocess.run([sys.executable, __file__, "--child", transport, "--bundle", bundle,
                                "--frames", str(args.frames), "--warmup", str(args.warmup), "--rate", str(args.rate),
                                "--width", str(args.width), "--height", str(args.height)],
                               env=env, capture_output=True, text=True, check=True)
        summary = json.loads(child.stdout.strip().splitlines()[-1])
        summary["ratio_p50_to_raw"] = round(summary["p50_ms"] / raw["p50_ms"], 2)
        summary["ratio_p99_to_raw"] = round(summary["p99_ms"] / raw["p99_ms"], 2)
        results["node"][transport] = summary

    print(f"{results['model']} on {results['machine']['cpu']} ({results['machine']['cores']} cores), "
          f"{results['frame']} at {args.rate:g} Hz, {args.frames} frames")
    print(f"{'path':34} {'p50 ms':>8} {'p99 ms':>8} {'p50/raw':>8} {'p99/raw':>8} {'lost':>5}")
    print(f"{'raw infer (in-process)':34} {raw['p50_ms']:8.2f} {raw['p99_ms']:8.2f} {1.0:8.2f} {1.0:8.2f} {'-':>5}")
    for transport, summary in results["node"].items():
        print(f"{'node, ' + transport:34} {summary['p50_ms']:8.2f} {summary['p99_ms']:8.2f} "
              f"{summary['ratio_p50_to_raw']:8.2f} {summary['ratio_p99_to_raw']:8.2f} "
              f"{summary['frames_without_result']:5d}")
    print(json.dumps(results, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
