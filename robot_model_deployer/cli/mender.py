"""``rmd mender``: build the Mender artifact that rolls a bundle out to a fleet (docs/fleet.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_model_deployer.fleet.artifact import ArtifactError, build_artifact


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("mender", help="fleet rollout through Mender")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    artifact = verbs.add_parser("artifact", help="wrap a signed bundle in a Mender artifact of type rmd-model")
    artifact.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle .tar (signed with rmd bundle sign)")
    artifact.add_argument("-o", "--output", type=Path, required=True, help="the artifact to write (X.mender)")
    artifact.add_argument("--device-type", action="append", required=True, dest="device_types", metavar="T",
                          help="a device type the artifact installs on (the robots' device_type); repeatable")
    artifact.add_argument("--key", type=Path, help="Mender artifact signing key (PEM private key); the robots' "
                                                   "mender.conf ArtifactVerifyKey holds its public half")
    artifact.add_argument("--name", help="artifact name (default: NAME-VERSION of the bundle's model)")
    artifact.set_defaults(run=_artifact)


def _artifact(args: argparse.Namespace) -> int:
    try:
        built = build_artifact(bundle=args.bundle, output=args.output, device_types=args.device_types,
                               key=args.key, name=args.name)
    except ArtifactError as exc:
        print(f"rmd: error: {exc}", file=sys.stderr)
        return 1
    print(f"artifact   {built.path}")
    print(f"name       {built.name}  (type rmd-model, for {', '.join(built.device_types)})")
    print(f"bundle     {built.bundle.ref}  sha256 {built.bundle.bundle_sha256}")
    print("signed     " + ("yes (Mender key); the bundle's own signature is checked by the robot" if built.signed
                           else "no: robots whose mender.conf sets ArtifactVerifyKey refuse it"))
    return 0
