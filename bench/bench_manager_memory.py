#!/usr/bin/env python3
"""The manager's memory across deployments, and what the optimize stage's child needs.

1. ``--child``: optimizes EfficientNet-Lite0 (the zoo bundle) once in the optimize stage's child, as the
   manager does, and prints the child's peak address space (VmPeak, what RLIMIT_AS limits), peak resident
   memory and wall time, against the defaults in deploy.optimizer.OPTIMIZE_LIMITS.
2. ``--deployments N`` (default 5): starts a manager and two perception nodes (real processes, their own
   ROS domain), deploys N versions of EfficientNet-Lite0 through verify, stage, optimize (target x86_cpu),
   swap and commit, and prints the manager's resident memory (VmRSS) before the first and after each.
   The shadow stage and probation are off: they need a camera, and they are not where the memory went.

    source scripts/env.sh
    python bench/bench_manager_memory.py [--child] [--deployments N] [--cache DIR] [--json-out FILE]

Goal (issue 11): the manager's RSS returns to its baseline after a deployment (it used to keep about
670 MB after optimizing EfficientNet in-process).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def measured_optimize(**kwargs: Any) -> dict[str, Any]:
    """In the child: optimize_in_child, then this process's peaks (the child's entry for ``--child``)."""
    from robot_model_deployer.optimize.pipeline import optimize_in_child

    started = time.monotonic()
    report = optimize_in_child(**kwargs)
    return {"chosen": report["chosen"], "wall_s": round(time.monotonic() - started, 1),
            "vm_peak_mib": _status_kib("self", "VmPeak") >> 10, "vm_hwm_mib": _status_kib("self", "VmHWM") >> 10}


def _status_kib(pid: str, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def child_run(bundle_dir: Path) -> dict[str, Any]:
    from robot_model_deployer.deploy.optimizer import OPTIMIZE_LIMITS, profile_fields
    from robot_model_deployer.isolation.child import run_in_child
    from robot_model_deployer.optimize.targets import load_target_profile

    target = load_target_profile("x86_cpu")
    os.environ["PYTHONPATH"] = f"{BENCH_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory(prefix="rmd-bench-memory-") as scratch:
        started = time.monotonic()
        result = run_in_child("bench_manager_memory:measured_optimize",
                              {"bundle_dir": str(bundle_dir), "target_name": target.name,
                               "target": profile_fields(target), "out_dir": str(Path(scratch) / "out")},
                              OPTIMIZE_LIMITS)
        result["wall_with_start_s"] = round(time.monotonic() - started, 1)
    result["limits"] = {"memory_mb": OPTIMIZE_LIMITS.memory_mb, "seconds": OPTIMIZE_LIMITS.seconds}
    result["memory_margin"] = round(OPTIMIZE_LIMITS.memory_mb / result["vm_peak_mib"], 2)
    result["time_margin"] = round(OPTIMIZE_LIMITS.seconds / result["wall_with_start_s"], 1)
    return result


def versioned_bundle(zoo_dir: Path, work: Path, version: str, key: Path) -> Path:
    """The zoo bundle as version ``version``, packed and signed as a publisher would."""
    from robot_model_deployer.bundle.filelist import build_file_list
    from robot_model_deployer.bundle.pack import write_bundle_tar
    from robot_model_deployer.bundle.signing import load_private_key, sign_file_list

    source = work / f"efficientnet-{version}"
    shutil.copytree(zoo_dir, source, ignore=shutil.ignore_patterns(".zoo-build"))
    manifest = source / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}", 1))
    file_list = build_file_list(source).to_bytes()
    output = source.with_suffix(".tar")
    write_bundle_tar(output=output, root=source, file_list_bytes=file_list,
                     signature=sign_file_list(file_list, load_private_key(key)))
    shutil.rmtree(source)
    return output


def manager_run(zoo_dir: Path, deployments: int) -> dict[str, Any]:
    from robot_model_deployer.bundle.signing import generate_keypair
    from robot_model_deployer.srv import DeployModel, GetStatus
    from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, stop_all

    with tempfile.TemporaryDirectory(prefix="rmd-bench-manager-") as scratch:
        work = Path(scratch)
        generate_keypair(out_dir=work / "keys", name="signing")
        domain = next_domain_id()
        perception = {"image_qos": "reliable", "warmup_runs": 1}
        processes = [NodeProcess("perception_node", "perception_a", domain, work, perception),
                     NodeProcess("perception_node", "perception_b", domain, work, perception),
                     NodeProcess("manager_node", "model_manager", domain, work,
                                 {"store_dir": str(work / "store"), "trust_dir": str(work / "keys"),
                                  # an empty string as a ROS parameter override is spelled ''
                                  "shadow_node": "''", "probation": False, "optimize_target": "x86_cpu"})]
        manager = processes[-1]
        client = RosTestClient(domain)
        rows: list[dict[str, Any]] = []
        try:
            client.call(GetStatus, "/model_manager/get_status", GetStatus.Request(), timeout=60.0)
            time.sleep(2.0)
            baseline = _status_kib(str(manager.process.pid), "VmRSS") >> 10
            print(f"manager RSS at start: {baseline} MiB", flush=True)
            for index in range(deployments):
                bundle = versioned_bundle(zoo_dir, work, f"1.0.{index}", work / "keys" / "signing.key")
                started = time.monotonic()
                answer = client.call(DeployModel, "/model_manager/deploy", DeployModel.Request(bundle_path=str(bundle)),
                                     timeout=3600.0)
                wall = time.monotonic() - started
                time.sleep(2.0)
                rss = _status_kib(str(manager.process.pid), "VmRSS") >> 10
                rows.append({"deployment": index + 1, "accepted": answer.accepted, "wall_s": round(wall, 1),
                             "manager_rss_mib": rss, "reason": answer.reason})
                print(f"after deployment {index + 1}: accepted={answer.accepted} in {wall:.0f} s, manager RSS "
                      f"{rss} MiB ({rss - baseline:+d} MiB)  {answer.reason}", flush=True)
        finally:
            client.close()
            stop_all(processes)
    return {"baseline_rss_mib": baseline, "deployments": rows,
            "held_after_last_mib": rows[-1]["manager_rss_mib"] - baseline if rows else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help="measure the optimize stage's child only")
    parser.add_argument("--deployments", type=int, default=5, help="deployments through a manager (0: none)")
    parser.add_argument("--cache", type=Path, default=None, help="zoo cache directory")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    from robot_model_deployer.demo import zoo

    zoo_dir = Path(zoo.efficientnet_lite0_bundle(args.cache))
    results: dict[str, Any] = {"cores": os.cpu_count()}
    if args.child:
        results["child"] = child_run(zoo_dir)
        print(f"optimize child: {results['child']}", flush=True)
    if args.deployments and not args.child:
        results["manager"] = manager_run(zoo_dir, args.deployments)
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
