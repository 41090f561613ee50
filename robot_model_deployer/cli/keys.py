"""``rmd keys``: make the Ed25519 key pair that signs bundles."""
from __future__ import annotations

import argparse
from pathlib import Path

from robot_model_deployer.bundle.signing import generate_keypair


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("keys", help="manage signing keys")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    generate = verbs.add_parser("generate", help="make a new key pair (NAME.key, mode 0600, and NAME.pub)")
    generate.add_argument("--out", type=Path, required=True, help="directory for the key files")
    generate.add_argument("--name", default="signing", help="file name stem (default: signing)")
    generate.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    pair = generate_keypair(out_dir=args.out, name=args.name)
    print(f"key id     {pair.key_id}")
    print(f"private    {pair.private_key}  (keep secret; signs bundles)")
    print(f"public     {pair.public_key}  (copy into each robot's trust store)")
    return 0
