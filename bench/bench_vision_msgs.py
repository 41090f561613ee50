#!/usr/bin/env python3
"""What publishing vision_msgs beside InferenceResult costs the perception node per frame.

The node builds both messages on its executor thread and rclpy serializes
each on publish. This times, in one run, for detectors with 0, 10 and 100
boxes and a top-5 classifier: building + serializing the InferenceResult,
the same for the vision_msgs message (Detection2DArray or Classification),
and their ratio (median of ``--repeats`` rounds).

    source scripts/env.sh   # and a vision_msgs: the real one, or the test stand-in:
    COLCON_CURRENT_PREFIX=$PWD/.colcon/vision_msgs_standin/install source .colcon/vision_msgs_standin/install/local_setup.sh
    python bench/bench_vision_msgs.py [--repeats 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.nodes.conversions import prediction_to_result
from robot_model_deployer.nodes.vision_conversions import prediction_to_vision_msg, vision_msgs_missing


def prediction(boxes: int, task: Task, seed: int = 0) -> Prediction:
    random = np.random.default_rng(seed)
    corners = np.sort(random.uniform(0, 640, (boxes, 2, 2)), axis=1).reshape(boxes, 4)[:, [0, 2, 1, 3]]
    return Prediction(class_ids=random.integers(0, 80, boxes).astype(np.int32),
                      scores=random.uniform(0, 1, boxes).astype(np.float32),
                      labels=tuple(f"class{i}" for i in range(boxes)),
                      boxes=corners.astype(np.float32) if task is Task.DETECTION else np.zeros((0, 4), np.float32))


def median_ms(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args()
    problem = vision_msgs_missing()
    if problem:
        raise SystemExit(f"vision_msgs is not importable ({problem}): source it first (see this script's help)")
    header = Header(frame_id="camera")
    rows = []
    for task, boxes in ((Task.DETECTION, 0), (Task.DETECTION, 10), (Task.DETECTION, 100), (Task.CLASSIFICATION, 5)):
        frame = prediction(boxes, task)
        ours = median_ms(lambda: serialize_message(
            prediction_to_result(frame, header, "model", "1.0.0", task.value, "perception")), args.repeats)
        vision = median_ms(lambda: serialize_message(prediction_to_vision_msg(frame, header, task)), args.repeats)
        rows.append({"task": task.value, "entries": boxes, "inference_result_ms": round(ours, 4),
                     "vision_msgs_ms": round(vision, 4), "ratio": round(vision / ours, 2)})
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_1min": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"build + serialize per frame, median of {args.repeats}; {machine}")
    print(f"{'task':<15}{'entries':>8}{'InferenceResult ms':>20}{'vision_msgs ms':>16}{'ratio':>8}")
    for row in rows:
        print(f"{row['task']:<15}{row['entries']:>8}{row['inference_result_ms']:>20.3f}"
              f"{row['vision_msgs_ms']:>16.3f}{row['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
