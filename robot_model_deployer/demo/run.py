"""The demo: the whole life of a model on a live camera, scripted, with a report at the end.

Starts the node graph as the graph command does (perception_a, perception_b,
shadow, model_manager: one process each, config/deployer.yaml, the shipped
Fast DDS profile), runs the demo camera here, and plays a scenario on a real
ImageNet classifier (EfficientNet-Lite0, exported locally on first use; or
``--bundle DIR``): v1 goes live; v2 (a retrained copy, weights moved by
1%) goes through verify, optimize, shadow, swap, probation and commit;
v3 (a constant answer) is refused in shadow; v4 (NaN once the lens is
covered) is rolled back in probation; then a manual rollback. It prints each
stage as it happens, ends with a summary table, and writes a report folder:
timeline.png, demo.mcap (camera frames, results, status, shadow reports),
summary.txt and the nodes' logs.

    demo [--duration 120] [--bundle DIR] [--rate 10] [--report-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.manifest import ManifestError
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.demo import zoo
from robot_model_deployer.demo.camera_node import DemoCameraNode
from robot_model_deployer.demo.frames import load_frames
from robot_model_deployer.demo.recording import McapRecorder, check_recording
from robot_model_deployer.demo.scenario import ScenarioDriver
from robot_model_deployer.demo.story import DemoLog, FrameSent, ResultSeen, summarize, summary_text
from robot_model_deployer.demo.timeline import draw_timeline
from robot_model_deployer.demo.versions import dark_frame, scenario_versions
from robot_model_deployer.msg import DeploymentStatus, InferenceResult, ShadowReport
from robot_model_deployer.nodes.graph import GraphOptions, share_dir, start_graph

WIDTH, HEIGHT = 640, 480
# Short shadow and probation, so the four deployments fit in a couple of minutes. The latency gates are
# loosened: a demo runs beside other programs, where one model's median swings from 8 to 100 ms with the
# load (an identical model was rolled back at 1.7x); bench/bench_decisions.py measures those gates.
DEMO_ACCEPTANCE = {"shadow_frames": 40, "probation_seconds": 6.0, "max_latency_ratio": 3.0, "latency_slack_ms": 25.0}
PRINT_PERIOD_S = 2.0


class ResultWatcher:
    """Turns every result into a ResultSeen and prints what the live model sees when that changes."""

    def __init__(self, log: DemoLog, start: float, labels: dict[str, str]) -> None:
        self._log, self._start, self._labels = log, start, labels
        self._last = ("", "")
        self._printed = 0.0

    def __call__(self, topic: str, raw: bytes, received_ns: int) -> None:
        if topic != "results":
            return
        msg = deserialize_message(raw, InferenceResult)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        version = self._labels.get(msg.model_version, msg.model_version)
        self._log.add(ResultSeen(stamp, time.monotonic() - self._start, version, (received_ns - stamp) / 1e6))
        seen = (f"{msg.labels[0]} {msg.scores[0]:.2f}" if msg.task == "classification" and len(msg.labels)
                else f"{len(msg.scores)} boxes")
        now = time.monotonic() - self._start
        server = f"{version} on {msg.node_name}"
        # A new server at once; what it sees when that changes, at most every PRINT_PERIOD_S.
        if server != self._last[0] or (seen != self._last[1] and now - self._printed >= PRINT_PERIOD_S):
            print(f"{now:7.1f}s      {server} sees {seen} ({msg.inference_ms:.1f} ms)", flush=True)
            self._last, self._printed = (server, seen), now


def _spin(executor: SingleThreadedExecutor) -> threading.Thread:
    def spin() -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, RuntimeError):  # shutting down
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds, scenario finished or not (0: when it ends)")
    parser.add_argument("--bundle", default="", help="bundle directory to play the scenario with instead of "
                                                     "EfficientNet-Lite0")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    parser.add_argument("--camera-source", default="skimage",
                        help="demo camera frames: skimage (scikit-image's photos), an image folder or a video")
    parser.add_argument("--seconds-per-image", type=float, default=3.0,
                        help="how long the camera shows each still image")
    parser.add_argument("--report-dir", type=Path, default=None, help="where to write the report "
                                                                      "(default: a new folder under /tmp)")
    parser.add_argument("--image-record-rate", type=float, default=2.0,
                        help="camera frames per second kept in the MCAP file (0: every frame)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:])
    started = time.monotonic()
    deadline = started + args.duration if args.duration > 0 else float("inf")
    source = Path(args.bundle) if args.bundle else None
    if source is None:
        print("[demo] preparing EfficientNet-Lite0 (exported with torch on first use, ~30 s)", flush=True)
        try:
            source = zoo.efficientnet_lite0_bundle()
        except zoo.ZooUnavailable as exc:
            sys.exit(f"[demo] {exc}; run scripts/setup.sh, or pass --bundle DIR")
    try:
        frames = load_frames(args.camera_source, WIDTH, HEIGHT)
    except ValueError as exc:
        sys.exit(f"[demo] --camera-source: {exc}")
    work = Path(tempfile.mkdtemp(prefix="rmd-demo-"))
    report_dir = (args.report_dir or work / "report").resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    keys = generate_keypair(out_dir=work / "trusted_keys", name="demo")
    print(f"[demo] building v1..v4 from {source} and signing them with a fresh demo key", flush=True)
    try:
        versions = scenario_versions(source, work / "bundles", keys.private_key, frames, DEMO_ACCEPTANCE)
    except (BundleError, ManifestError, ValueError) as exc:
        sys.exit(f"[demo] cannot build the scenario's versions from {source}: {exc}")
    keys.private_key.unlink()  # the robot only ever holds public keys

    share = share_dir()
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds_large_data.xml"))
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile  # this process's participant too
    options = GraphOptions(params_file=share / "config" / "deployer.yaml", fastdds_profile=profile,
                           store_dir=str(work / "store"), trust_dir=str(keys.public_key.parent))
    graph = start_graph(options, work, log_dir=report_dir / "logs", say=sys.stdout)
    print(f"[demo] started {', '.join(graph.processes)} (logs in {report_dir / 'logs'}); store {work / 'store'}",
          flush=True)
    log = DemoLog()
    try:
        end, stopped, mcap = _run_scenario(args, argv, versions, frames, log, started, deadline, report_dir,
                                                 graph.watch)
    finally:
        graph.stop()
    return _report(log, end, stopped, report_dir, mcap)


def _run_scenario(args: argparse.Namespace, argv: list[str] | None, versions: list, frames: list, log: DemoLog,
                  started: float, deadline: float, report_dir: Path,
                  graph_down: Callable[[], str | None]) -> tuple[float, str, Path]:
    """Camera, recorder and driver in this process until the scenario, the deadline, Ctrl-C or a node exit ends."""
    rclpy.init(args=argv)
    camera = DemoCameraNode(parameter_overrides=[Parameter("rate", value=args.rate),
                                                 Parameter("source", value=args.camera_source),
                                                 Parameter("frames_per_image",
                                                           value=max(1, round(args.rate * args.seconds_per_image)))])
    camera.on_publish = lambda stamp: log.add(FrameSent(stamp, time.monotonic() - started))
    node = Node("demo_scenario")
    labels = {v.version: f"{v.label} {v.version}" for v in versions}
    status_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    recorder = McapRecorder(node, report_dir / "demo.mcap", [
        ("image", Image, qos_profile_sensor_data, args.image_record_rate),
        ("results", InferenceResult, QoSProfile(depth=50), 0.0),
        ("/model_manager/status", DeploymentStatus, status_qos, 0.0),
        ("/shadow/report", ShadowReport, QoSProfile(depth=10), 0.0),
    ], observer=ResultWatcher(log, started, labels))
    executors = []
    for spun in (camera, node):
        executor = SingleThreadedExecutor()
        executor.add_node(spun)
        executors.append((executor, _spin(executor)))
    driver = ScenarioDriver(node, camera, dark_frame(frames[0]), log, started, deadline, args.rate,
                            graph_down=graph_down)
    stopped = ""
    try:
        if not driver.wait_for_manager():
            stopped = driver.stopped_because or "the manager's Deploy action did not appear"
        elif not _play(driver, versions):
            stopped = driver.stopped_because or "--duration reached"
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C)"
    finally:
        if stopped:
            print(f"\n[demo] stopped: {stopped}; the nodes' logs are in {report_dir / 'logs'}", flush=True)
        end = time.monotonic() - started
        for executor, thread in executors:
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=2.0)
        recorder.close()
        camera.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown()
    return end, stopped, recorder.path


def _play(driver: ScenarioDriver, versions: list) -> bool:
    """The scenario; False when the deadline cut it short."""
    for version in versions:
        if driver.deploy(version) is None:
            return False
    return driver.manual_rollback(versions[0].version) is not None


def _report(log: DemoLog, end: float, stopped: str, report_dir: Path, mcap: Path) -> int:
    summary = summarize(log.snapshot(), end, stopped)
    text = summary_text(summary)
    print("\n" + text, flush=True)
    (report_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    draw_timeline(log.snapshot(), end, report_dir / "timeline.png")
    try:
        decoded = check_recording(mcap)
        print(f"\n[demo] {mcap.name}: " + ", ".join(f"{topic} {count}" for topic, count in sorted(decoded.items()))
              + " messages, all decoded as ROS 2 CDR (open it in Foxglove)", flush=True)
    except Exception as exc:  # noqa: BLE001 - the report is still worth its path
        print(f"[demo] {mcap.name} does not read back: {exc}", flush=True)
    print(f"[demo] report: {report_dir} (timeline.png, demo.mcap, summary.txt, logs/)", flush=True)
    if not summary.frames_answered:
        print("[demo] no results were published; see the logs in the report folder", flush=True)
        return 1
    return 0
