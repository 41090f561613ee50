"""``rmd optimize``: quantize, compile and measure a bundle's model for one target robot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.optimize.pipeline import OptimizeProgress, optimize_bundle
from robot_model_deployer.optimize.report import format_table
from robot_model_deployer.optimize.targets import load_target_profile


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "optimize", help="build INT8/compiled variants of a bundle's model, gate them, keep the fastest",
        description="Quantize and compile the model of an extracted bundle for a target profile "
                    "(shipped with the package, or --targets-file), check every variant against FP32 on the "
                    "bundle's validation images, measure the ones that pass and write the artifacts plus "
                    "optimization_report.json to --out.")
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="extracted bundle directory (with manifest.yaml)")
    parser.add_argument("--target", required=True, metavar="NAME", help="target profile name, e.g. x86_cpu")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="new or empty directory for the artifacts and the report")
    parser.add_argument("--targets-file", type=Path, metavar="PATH",
                        help="target profiles YAML (default: $RMD_TARGETS_FILE or the profiles the package ships)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.set_defaults(run=run_optimize)


def run_optimize(args: argparse.Namespace) -> int:
    """Runs the stage with progress on stderr; the report goes to stdout."""
    bundle = load_bundle_dir(args.bundle)
    target = load_target_profile(args.target, args.targets_file)

    def show(progress: OptimizeProgress) -> None:
        print(f"[{progress.fraction:4.0%}] {progress.variant}: {progress.message}", file=sys.stderr, flush=True)

    report = optimize_bundle(bundle, target, args.out, progress=show)
    if args.json:
        print(report.to_json())
    else:
        print(format_table(report))
        speedup = report.speedup_over("fp32-cpu")
        print(f"chosen {report.chosen}" + (f" ({speedup:.2f}x FP32 on the CPU)" if speedup else "")
              + f"; report {Path(args.out) / 'optimization_report.json'}; {report.wall_seconds:.1f} s")
    return 0
