#!/usr/bin/env python3
"""Per-frame latency through the perception node, against the raw model cost, for each Fast DDS configuration tried.

Measures, in one run on this machine:
- raw: pre-processing + session.run + post-processing in-process
  (InferenceEngine.infer, opened as the node opens it) on the same frames,
  paced at the camera rate as the node sees them, and back to back (warm
  caches: faster than any camera-paced run, printed for reference), with
  ONNX Runtime's thread spinning off (shipped) and on;
- node: image header stamp -> InferenceResult received, with the
  perception node in its own process, started as the launch file starts
  perception_a (config/deployer.yaml), and the camera in another process,
  for each Fast DDS configuration and with spinning on (each in a fresh
  child process, because Fast DDS reads its profile once per process);
- floor: the same path with a 32x32 colour classifier, i.e. what two
  DDS hops and two rclpy executors cost here whatever the model.

The camera publishes frames it serialized once, with each frame's stamp
written into the bytes, as a camera driver in C++ publishes from its own
buffer (the "rclpy camera" row shows what an rclpy camera that converts an
Image message per frame adds). Prints p50/p99 of each, their ratio to the
paced raw cost, and the node's own overhead (latency minus its inference
time), as a table, and JSON with --json.

    source scripts/env.sh
    python bench/bench_perception_latency.py [--frames 600] [--rate 30] [--bundle DIR] [--json]
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
import yaml

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.demo import zoo
from robot_model_deployer.demo.frames import load_frames
from robot_model_deployer.deploy.serving import open_serving_engine
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.validation.metrics import percentile

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "config" / "deployer.yaml"
SHIPPED_PROFILE = REPO / "config" / "fastdds_large_data.xml"
SHIPPED_SEGMENT = 16 * 1024 * 1024
NODE_NAME = "perception_a"  # its block of config/deployer.yaml is the shipped configuration


def _summary(latencies_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies_ms, 50), 3), "p99_ms": round(percentile(latencies_ms, 99), 3),
            "count": len(latencies_ms)}


def profile_variant(directory: Path, segment_bytes: int, udp: bool) -> Path:
    """The shipped profile with another shared-memory segment size, or without its UDPv4 transport."""
    text = SHIPPED_PROFILE.read_text(encoding="utf-8")
    text = text.replace(f"<segment_size>{SHIPPED_SEGMENT}</segment_size>", f"<segment_size>{segment_bytes}</segment_size>")
    if not udp:
        text = text.replace("          <transport_id>udp_remote_peers</transport_id>\n", "")
    path = directory / f"fastdds_shm_{segment_bytes // 1024 // 1024}mib{'_udp' if udp else '_only'}.xml"
    path.write_text(text, encoding="utf-8")
    return path


def configurations(directory: Path) -> list[dict[str, object]]:
    """Each configuration measured: a name, its profile (None: Fast DDS defaults), camera kind, model."""
    spinning = bool(node_settings()["inference_spinning"])
    shipped = {"profile": str(SHIPPED_PROFILE), "camera": "serialized", "model": "bundle", "spinning": spinning}
    return [
        {"name": "Fast DDS defaults (UDP loopback)", **shipped, "profile": None},
        {"name": "shipped: SHM 16 MiB segment + UDPv4", **shipped},
        {"name": f"shipped, ORT spinning {'off' if spinning else 'on'}", **shipped, "spinning": not spinning},
        {"name": "shipped, rclpy camera", **shipped, "camera": "message"},
        {"name": "SHM 2 MiB segment + UDPv4", **shipped,
         "profile": str(profile_variant(directory, 2 * 1024 * 1024, udp=True))},
        {"name": "SHM 64 MiB segment + UDPv4", **shipped,
         "profile": str(profile_variant(directory, 64 * 1024 * 1024, udp=True))},
        {"name": "SHM 16 MiB segment only (no UDP)", **shipped,
         "profile": str(profile_variant(directory, SHIPPED_SEGMENT, udp=False))},
        {"name": "floor: shipped, 32x32 model", **shipped, "model": "floor"},
    ]


def node_settings() -> dict[str, object]:
    """perception_a's parameters as the shipped parameters file sets them, the node's defaults elsewhere."""
    from robot_model_deployer.nodes.perception_node import PARAMETERS
    shipped = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))[f"/**/{NODE_NAME}"]["ros__parameters"]
    return {spec.name: shipped.get(spec.name, spec.default) for spec in PARAMETERS}


def measure_raw(bundle: str, frames: list[np.ndarray], count: int, rate: float | None,
                spinning: bool) -> dict[str, float]:
    """InferenceEngine.infer as the node opens it (its threads, ``spinning``); paced at ``rate`` (None: back to back)."""
    engine, _ = open_serving_engine(bundle, threads=int(node_settings()["intra_op_threads"]), spinning=spinning)
    latencies = []
    for index in range(count):
        start = time.perf_counter()
        engine.infer(frames[index % len(frames)], PixelFormat.RGB8)
        latencies.append((time.perf_counter() - start) * 1000.0)
        if rate:
            time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - start)))
    return _summary(latencies)


def floor_bundle(directory: Path) -> str:
    from robot_model_deployer.testing import models
    return str(models.write_bundle(directory / "floor", models.colour_classifier(), models.classifier_manifest()))


def measure_node(bundle: str, frames: list[np.ndarray], count: int, rate: float, warmup: int,
                 camera: str, spinning: bool) -> dict[str, object]:
    """Runs in a child process whose environment selects the transport."""
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from robot_model_deployer.msg import InferenceResult
    from robot_model_deployer.nodes.conversions import array_to_image, stamp_ns
    from robot_model_deployer.nodes.lifecycle_client import LifecycleTransition, RemoteLifecycleNode
    from robot_model_deployer.testing.camera import SerializedCamera
    from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id

    domain = next_domain_id()
    logs = Path(tempfile.mkdtemp(prefix="rmd-bench-"))
    node = NodeProcess("perception_node", NODE_NAME, domain, logs, {"model_dir": bundle, "inference_spinning": spinning},
                       params_file=PARAMS_FILE)
    client = RosTestClient(domain, "bench_camera")
    try:
        remote = RemoteLifecycleNode(client.node, f"/{NODE_NAME}", ReentrantCallbackGroup(), timeout=60.0)
        if not (remote.transition(LifecycleTransition.CONFIGURE) and remote.transition(LifecycleTransition.ACTIVATE)):
            raise RuntimeError(f"perception node did not start:\n{node.log()}")
        received: dict[int, tuple[int, float]] = {}

        def on_result(msg: InferenceResult) -> None:
            received.setdefault(stamp_ns(msg.header.stamp), (time.time_ns(), msg.inference_ms))

        client.node.create_subscription(InferenceResult, "/results", on_result, 50)
        publisher = client.node.create_publisher(Image, "/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        messages = [array_to_image(frame, PixelFormat.RGB8) for frame in frames]
        serialized = SerializedCamera(messages) if camera == "serialized" else None
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent: list[int] = []
        period, next_time = 1.0 / rate, time.monotonic()
        for index in range(warmup + count):
            stamp = time.time_ns()
            if serialized is not None:
                publisher.publish(serialized.frame(index, stamp))
            else:
                msg = messages[index % len(messages)]
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
                publisher.publish(msg)
            sent.append(stamp)
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        time.sleep(2.0)  # the last results
        measured = [s for s in sent[warmup:] if s in received]
        latencies = [(received[s][0] - s) / 1e6 for s in measured]
        summary: dict[str, object] = _summary(latencies)
        summary["inference"] = _summary([received[s][1] for s in measured])
        summary["overhead"] = _summary([(received[s][0] - s) / 1e6 - received[s][1] for s in measured])
        summary["frames_sent"] = count
        summary["frames_without_result"] = count - len(measured)
        return summary
    finally:
        client.close()
        node.stop()


def run_child(config: dict[str, object], bundle: str, args: argparse.Namespace) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key != "FASTDDS_DEFAULT_PROFILES_FILE"}
    if config["profile"]:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config["profile"])
    child = subprocess.run([sys.executable, __file__, "--child", str(config["camera"]), "--bundle", bundle,
                            "--frames", str(args.frames), "--warmup", str(args.warmup), "--rate", str(args.rate),
                            "--width", str(args.width), "--height", str(args.height)]
                           + (["--spinning"] if config["spinning"] else []),
                           env=env, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{config['name']}: the measuring process failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="measured frames per configuration")
    parser.add_argument("--warmup", type=int, default=30, help="frames sent before measuring")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--bundle", default="", help="bundle directory (default: EfficientNet-Lite0 from the zoo)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--child", choices=("serialized", "message"), help=argparse.SUPPRESS)
    parser.add_argument("--spinning", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bundle = args.bundle or str(zoo.efficientnet_lite0_bundle())
    frames = load_frames("skimage", args.width, args.height)

    if args.child:
        print(json.dumps(measure_node(bundle, frames, args.frames, args.rate, args.warmup, args.child,
                                      args.spinning)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="rmd-bench-latency-"))
    raw = {spinning: {"paced": measure_raw(bundle, frames, args.frames, args.rate, spinning),
                      "back_to_back": measure_raw(bundle, frames, args.frames, None, spinning)}
           for spinning in (False, True)}
    results: dict[str, object] = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_at_start": [round(x, 2) for x in os.getloadavg()]},
        "model": load_bundle_dir(bundle).manifest.name, "frame": f"{args.width}x{args.height} rgb8",
        "rate_hz": args.rate, "node_parameters": f"{PARAMS_FILE.name}, {NODE_NAME}",
        "raw_infer": {("spinning" if spinning else "not_spinning"): value for spinning, value in raw.items()},
        "configurations": [],
        "goal": {"p50_to_raw": 1.15, "p99_to_raw": 1.3}}
    floor = floor_bundle(work)
    for config in configurations(work):
        summary = run_child(config, floor if config["model"] == "floor" else bundle, args)
        summary.update({"name": config["name"], "profile": config["profile"] or "defaults",
                        "camera": config["camera"], "spinning": config["spinning"]})
        if config["model"] != "floor":
            paced = raw[bool(config["spinning"])]["paced"]
            summary["p50_to_raw"] = round(float(summary["p50_ms"]) / paced["p50_ms"], 2)
            summary["p99_to_raw"] = round(float(summary["p99_ms"]) / paced["p99_ms"], 2)
        results["configurations"].append(summary)
    results["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.json:
        print_table(results, args)
    print(json.dumps(results, indent=2))
    return 0


def print_table(results: dict, args: argparse.Namespace) -> None:
    machine = results["machine"]
    print(f"{results['model']} on {machine['cpu']} ({machine['cores']} cores, load {machine['load_at_start'][0]} "
          f"at start, {machine['load_at_end'][0]} at end), {results['frame']} at {args.rate:g} Hz, "
          f"{args.frames} frames each; node as {results['node_parameters']}")
    print(f"{'path':40} {'p50 ms':>7} {'p99 ms':>7} {'p50/raw':>7} {'p99/raw':>7} {'infer p50':>9} "
          f"{'own p50':>7} {'own p99':>7} {'lost':>5}")
    for spinning, runs in results["raw_infer"].items():
        paced, b2b = runs["paced"], runs["back_to_back"]
        print(f"{'raw infer, paced, ' + spinning.replace('_', ' '):40} {paced['p50_ms']:7.2f} {paced['p99_ms']:7.2f} "
              f"{1.0:7.2f} {1.0:7.2f}")
        print(f"{'raw infer, back to back, ' + spinning.replace('_', ' '):40} {b2b['p50_ms']:7.2f} {b2b['p99_ms']:7.2f} "
              f"{b2b['p50_ms'] / paced['p50_ms']:7.2f} {b2b['p99_ms'] / paced['p99_ms']:7.2f}")
    for row in results["configurations"]:
        ratios = (f"{row['p50_to_raw']:7.2f} {row['p99_to_raw']:7.2f}" if "p50_to_raw" in row else f"{'-':>7} {'-':>7}")
        print(f"{row['name']:40} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {ratios} {row['inference']['p50_ms']:9.2f} "
              f"{row['overhead']['p50_ms']:7.2f} {row['overhead']['p99_ms']:7.2f} {row['frames_without_result']:5d}")
    print("ratios are to the paced raw cost with the same ORT spinning; own = latency minus the node's own "
          f"inference time (transport, both executors, reading the frame, publishing the result); goal p50/raw <= {results['goal']['p50_to_raw']}, "
          f"p99/raw <= {results['goal']['p99_to_raw']}")


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
