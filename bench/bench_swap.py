#!/usr/bin/env python3
"""Hot-swap, rollback and shadow cost, measured over real DDS at camera rate.

Starts perception_a, perception_b, the shadow node and the manager as
separate processes with config/deployer.yaml and the shipped Fast DDS
profile, as the launch file does (the manager skips the optimize stage
unless --optimize-target is given: it runs before the shadow and would only
lengthen each round). A camera thread in this process publishes 640x480
rgb8 frames at 30 Hz, serialized once with each stamp written into the
bytes (testing/camera.py), deploys EfficientNet-Lite0 (signed bundles into
a fresh store), and measures in one run:

- steady state: result latency (image stamp -> result received) p50/p99,
  and frames without a result, over --steady-frames frames (one long
  window, and the windows between rounds);
- swap to a new version (``--rounds`` times, each followed by a manual
  rollback; the windows of 1 s either side are pooled): frames without a
  result, the gap between the last result of the old model and the first of
  the new one, latency p99 during the swaps as a ratio to steady state;
- manual rollback: frames without a result, time from the rollback request
  to the first result of the old model;
- shadow running: live latency p99 while the shadow node runs a candidate,
  as a ratio to steady state (measured before, between and after the rest).

    source scripts/env.sh
    python bench/bench_swap.py [--steady-frames 10000] [--rounds 10] [--rate 30] [--profile ''] [--json]

Prints a table with each goal and whether this run met it, and JSON. Goals:
0 frames without a result in steady state, swap and rollback; swap gap <=
one frame interval; swap p99 <= 1.1x steady; every rollback < 50 ms from
request to the first old-model result; shadow p99 <= 1.05x steady.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.action import Deploy
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.demo import zoo
from robot_model_deployer.demo.frames import load_frames
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.nodes.conversions import array_to_image, stamp_ns
from robot_model_deployer.srv import DeployModel, Rollback
from robot_model_deployer.testing import models
from robot_model_deployer.testing.camera import SerializedCamera
from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, stop_all, wait_for
from robot_model_deployer.validation.metrics import percentile

MANAGER = "/model_manager"
REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "config" / "deployer.yaml"
SHIPPED_PROFILE = REPO / "config" / "fastdds_large_data.xml"
ROLLBACK_LIMIT_MS = 50.0


@dataclass
class Recorder:
    """Every frame sent and every result received, with wall-clock times."""

    sent: dict[int, float] = field(default_factory=dict)
    results: list[tuple[float, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_result(self, msg: InferenceResult) -> None:
        with self.lock:
            self.results.append((time.time(), stamp_ns(msg.header.stamp), msg.model_version))

    def window(self, *spans: tuple[float, float]) -> dict[str, object]:
        """Frames sent in any of the [start, end) spans: how many got no result, latency of those that did."""
        with self.lock:
            answered: dict[int, float] = {}
            for received, stamp, _ in self.results:
                answered.setdefault(stamp, received)
            frames = [(stamp, sent) for stamp, sent in self.sent.items()
                      if any(start <= sent < end for start, end in spans)]
        latencies = [(answered[s] - t) * 1000.0 for s, t in frames if s in answered]
        return {"frames": len(frames), "without_result": len(frames) - len(latencies),
                "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2)}

    def timeline(self) -> list[dict[str, object]]:
        """One row per frame sent: send time, latency of its first result, which version answered."""
        with self.lock:
            answered: dict[int, tuple[float, str]] = {}
            for received, stamp, version in self.results:
                answered.setdefault(stamp, (received, version))
            sent = sorted(self.sent.items())
        return [{"sent": t, "latency_ms": round((answered[s][0] - t) * 1000.0, 2) if s in answered else None,
                 "version": answered[s][1] if s in answered else None} for s, t in sent]

    def first_result_after(self, version: str, after: float) -> float | None:
        with self.lock:
            return next((t for t, _, v in self.results if v == version and t >= after), None)

    def last_result_before(self, version: str, before: float) -> float | None:
        with self.lock:
            times = [t for t, _, v in self.results if v == version and t <= before]
        return max(times) if times else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady-frames", type=int, default=10_000,
                        help="frames of steady state measured (at --rate: 10,000 frames is 5.6 minutes at 30 Hz)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the shadow window")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--profile", default=str(SHIPPED_PROFILE),
                        help="Fast DDS profile XML for every process ('' for Fast DDS defaults)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="swaps (each followed by a rollback) pooled into the swap and rollback windows")
    parser.add_argument("--optimize-target", default="", help="the manager's optimize_target ('' skips optimize)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--timeline", default="", help="write every frame's latency and the stage times as JSON here")
    parser.add_argument("--shadow-nice", type=int, default=None, help="shadow node nice_increment (default: its own)")
    parser.add_argument("--shadow-max-rate", type=float, default=None, help="shadow node max_rate (default: its own)")
    parser.add_argument("--spinning", choices=("true", "false"), default=None,
                        help="perception nodes' inference_spinning (default: the parameters file's)")
    args = parser.parse_args()
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if args.profile:  # before this process's participant exists: Fast DDS reads it once
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(args.profile).resolve())

    work = Path(tempfile.mkdtemp(prefix="rmd-bench-swap-"))
    keys = generate_keypair(out_dir=work / "keys", name="bench")
    source = zoo.efficientnet_lite0_bundle()
    quick = {"shadow_frames": 60, "probation_seconds": 2.0}
    bundles = [models.repack_bundle(source, work, f"{major}.0.0", keys.private_key, quick)
               for major in range(1, args.rounds + 2)]
    endless_shadow = models.repack_bundle(source, work, f"{args.rounds + 2}.0.0", keys.private_key,
                                      {"shadow_frames": 10**6})
    shadow_gates: list[dict] = []

    def measure(seconds: float) -> tuple[float, float]:
        """Sleep through a measured window; returns its span."""
        span = (time.time(), time.time() + seconds)
        time.sleep(seconds)
        return span

    domain = next_domain_id()
    shadow_settings = {name: value for name, value in (("nice_increment", args.shadow_nice),
                                                       ("max_rate", args.shadow_max_rate)) if value is not None}
    perception = {"inference_spinning": args.spinning == "true"} if args.spinning else {}
    processes = [
        NodeProcess("perception_node", "perception_a", domain, work, perception, params_file=PARAMS_FILE),
        NodeProcess("perception_node", "perception_b", domain, work, perception, params_file=PARAMS_FILE),
        NodeProcess("shadow_node", "shadow", domain, work, shadow_settings, params_file=PARAMS_FILE),
        NodeProcess("manager_node", "model_manager", domain, work,
                    {"store_dir": str(work / "store"), "trust_dir": str(keys.public_key.parent),
                     "shadow_timeout": 600.0, "optimize_target": args.optimize_target}, params_file=PARAMS_FILE),
    ]
    client = RosTestClient(domain, "bench")
    recorder = Recorder()
    stop = threading.Event()
    try:
        client.node.create_subscription(InferenceResult, "/results", recorder.on_result, 100)
        publisher = client.node.create_publisher(Image, "/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        frames = SerializedCamera([array_to_image(f, PixelFormat.RGB8) for f in load_frames("skimage", 640, 480)])

        def camera() -> None:
            period, next_time, index = 1.0 / args.rate, time.monotonic(), 0
            while not stop.is_set():
                now = time.time_ns()
                frame = frames.frame(index, now)
                with recorder.lock:
                    recorder.sent[now] = now / 1e9
                publisher.publish(frame)
                index += 1
                next_time += period
                time.sleep(max(0.0, next_time - time.monotonic()))

        first = client.call(DeployModel, f"{MANAGER}/deploy", DeployModel.Request(bundle_path=str(bundles[0])),
                            timeout=300.0)
        if not first.accepted:
            raise RuntimeError(first.reason)
        threading.Thread(target=camera, daemon=True).start()
        wait_for(lambda: recorder.first_result_after("1.0.0", 0.0) is not None, 60.0, "first results")
        time.sleep(2.0)  # warm-up
        between_s = 1.0  # steady windows between rounds, pooled with the long one
        steady_spans = [measure(max(1.0, args.steady_frames / args.rate - args.rounds * between_s))]

        swap_spans, rollback_spans, gaps, rollback_times, events = [], [], [], [], []
        swap_action = client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
        swap_action.wait_for_server(timeout_sec=30.0)
        for round_index in range(args.rounds):
            version = f"{round_index + 2}.0.0"
            swap_request = time.time()
            sent = swap_action.send_goal_async(
                Deploy.Goal(bundle_path=str(bundles[round_index + 1])),
                feedback_callback=lambda m: events.append({"time": time.time(), "stage": m.feedback.stage,
                                                           "message": m.feedback.message}))
            wait_for(lambda: sent.done(), 30.0, "the swap goal")
            done = sent.result().get_result_async()
            wait_for(lambda: done.done(), 600.0, "the swap deployment")
            swapped = done.result().result
            shadow_gates.append(json.loads(swapped.report_json).get("shadow", {}))
            if not swapped.accepted:
                raise RuntimeError(f"{swapped.reason}; shadow report {shadow_gates[-1]}")
            wait_for(lambda: recorder.first_result_after(version, swap_request) is not None, 10.0, "new results")
            first_new = recorder.first_result_after(version, swap_request)
            time.sleep(1.0)
            last_old = recorder.last_result_before("1.0.0", first_new + 1.0)
            swap_spans.append((first_new - 1.0, first_new + 1.0))
            gaps.append(max(0.0, first_new - last_old) * 1000.0)

            rollback_request = time.time()
            rolled = client.call(Rollback, f"{MANAGER}/rollback", Rollback.Request(reason="benchmark"))
            rollback_answered = time.time()
            if not rolled.success:
                raise RuntimeError(rolled.message)
            wait_for(lambda: recorder.first_result_after("1.0.0", rollback_request) is not None, 10.0,
                     "the old model's results after the rollback")
            first_back = recorder.first_result_after("1.0.0", rollback_request)
            time.sleep(1.0)
            rollback_spans.append((rollback_request - 1.0, rollback_request + 1.0))
            rollback_times.append(((rollback_answered - rollback_request) * 1000.0,
                                   (first_back - rollback_request) * 1000.0))
            steady_spans.append(measure(between_s))

        # Shadow cost: a candidate that never reaches a verdict, cancelled after the window.
        shadow_reports: list[float] = []
        goal = swap_action.send_goal_async(Deploy.Goal(bundle_path=str(endless_shadow)),
                                           feedback_callback=lambda m: shadow_reports.append(time.time())
                                           if m.feedback.stage == "shadow" else None)
        wait_for(lambda: goal.done(), 30.0, "the shadow goal")
        wait_for(lambda: len(shadow_reports) >= 3, 120.0, "the shadow run to start")
        shadow_span = measure(args.seconds)
        cancel = goal.result().cancel_goal_async()
        wait_for(lambda: cancel.done(), 30.0, "the cancel")
        time.sleep(0.5)  # the last frames' results
        steady_spans.append(measure(args.seconds))
        steady, swap, rollback, shadow = (recorder.window(*spans) for spans in
                                          (steady_spans, swap_spans, rollback_spans, [shadow_span]))
        swap.update({"gap_ms_max": round(max(gaps), 2), "gap_ms_each": [round(g, 2) for g in gaps]})
        rollback.update({"request_to_switched_ms_max": round(max(t[0] for t in rollback_times), 2),
                         "request_to_first_old_result_ms_max": round(max(t[1] for t in rollback_times), 2),
                         "request_to_first_old_result_ms_each": [round(t[1], 2) for t in rollback_times]})
    finally:
        stop.set()
        client.close()
        stop_all(processes)

    if args.timeline:
        Path(args.timeline).write_text(json.dumps({"frames": recorder.timeline(), "swap_events": events,
                                                   "swap_spans": swap_spans, "rollback_spans": rollback_spans,
                                                   "shadow_span": shadow_span}))
    interval_ms = 1000.0 / args.rate
    latency_keys = ("candidate_latency_p50_ms", "candidate_latency_p99_ms", "reference_latency_p50_ms",
                    "reference_latency_p99_ms", "live_latency_p50_ms", "live_latency_p99_ms")
    results = {
        "machine": {"cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]}, "model": "efficientnet-lite0", "frame": "640x480 rgb8",
        "rate_hz": args.rate, "rounds": args.rounds, "fastdds_profile": args.profile or "defaults",
        "shadow_settings": shadow_settings, "perception_settings": perception,
        "shadow_gate_of_identical_model": [{key: round(gate.get(key, 0.0), 2) for key in latency_keys}
                                           for gate in shadow_gates],
        "steady": steady, "swap": swap, "rollback": rollback, "shadow_running": shadow,
        "ratios": {
            "swap_gap_in_frame_intervals_max": round(swap["gap_ms_max"] / interval_ms, 2),
            "swap_p99_to_steady_p99": round(swap["p99_ms"] / steady["p99_ms"], 2),
            "rollback_p99_to_steady_p99": round(rollback["p99_ms"] / steady["p99_ms"], 2),
            "shadow_p99_to_steady_p99": round(shadow["p99_ms"] / steady["p99_ms"], 2),
            "shadow_p50_to_steady_p50": round(shadow["p50_ms"] / steady["p50_ms"], 2),
        },
    }
    rollback_each = rollback["request_to_first_old_result_ms_each"]
    goals = [
        ("steady: frames without a result", steady["without_result"], "== 0", steady["without_result"] == 0),
        ("swap: frames without a result", swap["without_result"], "== 0", swap["without_result"] == 0),
        ("swap gap, worst (frame intervals)", results["ratios"]["swap_gap_in_frame_intervals_max"], "<= 1",
         results["ratios"]["swap_gap_in_frame_intervals_max"] <= 1.0),
        ("swap p99 / steady p99", results["ratios"]["swap_p99_to_steady_p99"], "<= 1.1",
         results["ratios"]["swap_p99_to_steady_p99"] <= 1.1),
        ("rollback: frames without a result", rollback["without_result"], "== 0", rollback["without_result"] == 0),
        (f"rollbacks under {ROLLBACK_LIMIT_MS:g} ms (request -> old result)",
         f"{sum(t < ROLLBACK_LIMIT_MS for t in rollback_each)}/{len(rollback_each)}", "all",
         all(t < ROLLBACK_LIMIT_MS for t in rollback_each)),
        ("shadow running: live p99 / steady p99", results["ratios"]["shadow_p99_to_steady_p99"], "<= 1.05",
         results["ratios"]["shadow_p99_to_steady_p99"] <= 1.05),
    ]
    results["goals"] = [{"what": what, "measured": value, "goal": goal, "met": met} for what, value, goal, met in goals]
    if not args.json:
        print(f"efficientnet-lite0, 640x480 rgb8 at {args.rate:g} Hz, {args.rounds} rounds, Fast DDS "
              f"{results['fastdds_profile']}, nodes as {PARAMS_FILE.name}; load {results['machine']['load']}")
        print(f"{'window':16} {'frames':>7} {'no result':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for name in ("steady", "swap", "rollback", "shadow_running"):
            w = results[name]
            print(f"{name:16} {w['frames']:7d} {w['without_result']:9d} {w['p50_ms']:8.2f} {w['p99_ms']:8.2f}")
        print(f"swap gaps (ms): {swap['gap_ms_each']}")
        print(f"rollback request -> first old-model result (ms): {rollback_each} (includes waiting for the next "
              "frame and its inference)")
        print(f"{'goal':50} {'measured':>9} {'goal':>8} {'met':>4}")
        for what, value, goal, met in goals:
            print(f"{what:50} {value!s:>9} {goal:>8} {'yes' if met else 'NO':>4}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
