"""``rmd store``: look into a robot's model store (read-only; the manager owns it)."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.store.installed import DERIVED_SUBDIR
from robot_model_deployer.store.model_store import VERSIONS_DIR
from robot_model_deployer.store.state import StoreError, VersionRef
from robot_model_deployer.validation.samples import list_samples, samples_dir


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("store", help="look into a robot's model store")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    samples = verbs.add_parser("samples", help="list the frames on which a version disagreed with the live model "
                                               "in its shadow run (image and both outputs)")
    samples.add_argument("store_dir", type=Path, metavar="STORE_DIR", help="the robot's store directory")
    samples.add_argument("ref", metavar="NAME@VERSION", help="the candidate version, e.g. colour_classifier@2.0.0")
    samples.add_argument("--json", action="store_true", help="one JSON object per sample instead of a table")
    samples.set_defaults(run=_samples)


def _samples(args: argparse.Namespace) -> int:
    ref = VersionRef.parse(args.ref)
    version_dir = args.store_dir / VERSIONS_DIR / ref.name / str(ref.version)
    if not version_dir.is_dir():
        raise StoreError(f"{ref} is not installed in {args.store_dir}")
    directory = samples_dir(version_dir / DERIVED_SUBDIR)
    samples = list_samples(directory)
    if args.json:
        for sample in samples:
            print(json.dumps({**asdict(sample), "image": str(sample.image)}, sort_keys=True))
        return 0
    if not samples:
        print(f"no disagreement samples of {ref} in {directory} (none kept, or no shadow run yet)")
        return 0
    print(f"{len(samples)} disagreement sample(s) of {ref} in {directory}")
    for sample in samples:
        print(f"{sample.index:03d}  stamp {sample.stamp_ns / 1e9:.3f} s  {one_line(sample.reason, 200)}  "
              f"{sample.image.name}")
    return 0
