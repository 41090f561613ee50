"""``rmd bundle``: init, create, sign, verify and inspect bundle files; recompute expected outputs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_model_deployer.authoring.expected import recompute_expected
from robot_model_deployer.authoring.init import init_bundle
from robot_model_deployer.authoring.manifest_text import CHOICE
from robot_model_deployer.bundle.extract import inspect_bundle
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import TrustStore
from robot_model_deployer.bundle.text import one_line, shown
from robot_model_deployer.bundle.verify import verify_bundle
from robot_model_deployer.cli.progress import progress_for
from robot_model_deployer.inference.model_check import MODEL_CHECK_LIMITS, IsolatedModelCheck
from robot_model_deployer.isolation.child import ChildLimits


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("bundle", help="create, sign, verify and inspect model bundles")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    create = verbs.add_parser("create", help="pack a bundle directory into an (unsigned) bundle .tar")
    create.add_argument("directory", type=Path, help="directory with manifest.yaml, the model and its files")
    create.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    create.set_defaults(run=_create)

    sign = verbs.add_parser("sign", help="add or replace the bundle's signature")
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="private key file from rmd keys generate")
    sign.set_defaults(run=_sign)

    verify = verbs.add_parser("verify", help="run every check a robot makes before installing the bundle")
    verify.add_argument("bundle", type=Path, help="bundle .tar (or unpacked bundle directory)")
    verify.add_argument("--trust", type=Path, help="trust store: directory of trusted .pub key files")
    verify.add_argument("--allow-unsigned", action="store_true",
                        help="accept an unsigned bundle (development only; prints a warning)")
    verify.add_argument("--check-memory-mb", type=int, default=MODEL_CHECK_LIMITS.memory_mb, metavar="MIB",
                        help="address space the model check's child process may use (default: %(default)s)")
    verify.add_argument("--check-timeout", type=float, default=MODEL_CHECK_LIMITS.seconds, metavar="SECONDS",
                        help="time the model check may take to load and run the model (default: %(default)s)")
    verify.set_defaults(run=_verify)

    init = verbs.add_parser("init", help="write a bundle directory from an ONNX file and a folder of images")
    init.add_argument("model", type=Path, help="the ONNX file (Ultralytics, torchvision-style, TF exports, ...)")
    init.add_argument("--images", type=Path, required=True, help="folder of images, split into calibration and "
                      "validation sets")
    init.add_argument("--labels", type=Path, help="class names, one per line (default: the model's metadata)")
    init.add_argument("--truth", type=Path, help="ground truth: YAML/JSON mapping image paths (relative to "
                      "--images) to the validation.expected format; default: the model's own FP32 outputs")
    init.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to create (must not exist)")
    init.add_argument("--name", help="model name (default: from the model's file name)")
    init.add_argument("--version", default="0.1.0", help="bundle version (default: %(default)s)")
    init.add_argument("--calibration", type=int, default=32, metavar="N", help="calibration images (default: %(default)s)")
    init.add_argument("--validation", type=int, default=100, metavar="N", help="validation images (default: %(default)s)")
    init.set_defaults(run=_init)

    expected = verbs.add_parser("expected", help="recompute a bundle directory's validation.expected and files.json")
    expected.add_argument("directory", type=Path, help="bundle directory")
    expected.add_argument("--truth", type=Path, help="ground truth by bundle path (default: FP32 outputs)")
    expected.set_defaults(run=_expected)

    inspect = verbs.add_parser("inspect", help="show manifest, files and signer key (checks the files, not the signature)")
    inspect.add_argument("bundle", type=Path)
    inspect.set_defaults(run=_inspect)


def _create(args: argparse.Namespace) -> int:
    file_list = create_bundle(source=args.directory, output=args.output,
                              progress=progress_for(args.directory, "packing"))
    print(f"wrote {args.output}: {len(file_list.files)} files, {file_list.total_size} bytes, unsigned "
          f"(sign it with: rmd bundle sign {args.output} --key KEY)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    signature = sign_bundle(bundle=args.bundle, key=args.key)
    print(f"signed {args.bundle} with key {signature.key_id}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.trust is None and not args.allow_unsigned:
        print("rmd: error: give --trust DIR (directory of trusted .pub keys), or --allow-unsigned for "
              "development", file=sys.stderr)
        return 1
    try:
        limits = ChildLimits(memory_mb=args.check_memory_mb, seconds=args.check_timeout)
    except ValueError as exc:
        raise ValueError(f"--check-memory-mb / --check-timeout: {exc}") from None
    trust = TrustStore.load(args.trust) if args.trust is not None else None
    verified = verify_bundle(bundle=args.bundle, trust=trust, model_check=IsolatedModelCheck(limits),
                             allow_unsigned=args.allow_unsigned, progress=progress_for(args.bundle, "checking"))
    manifest = verified.manifest
    signer = f"signed by trusted key {verified.key_id}" if verified.signed else "UNSIGNED"
    print(f"OK {manifest.name} {manifest.version} ({manifest.task.value}): {len(verified.file_list.files)} files, "
          f"{verified.file_list.total_size} bytes, {signer}, model loads")
    return 0


def _init(args: argparse.Namespace) -> int:
    result = init_bundle(model=args.model, images=args.images, out=args.output, labels=args.labels, truth=args.truth,
                         name=args.name, version=args.version, calibration=args.calibration,
                         validation=args.validation)
    source = "ground truth" if result.expected_from_truth else "FP32 outputs"
    print(f"wrote {result.root}: {result.draft.task.value}, {result.draft.export}; {result.calibration} calibration "
          f"and {result.validation} validation images, expected outputs from {source}")
    guessed = f"{', '.join(result.choices)} and the thresholds" if result.choices else "the thresholds"
    print(f"check the lines marked {CHOICE} in {result.root / 'manifest.yaml'} ({guessed}); then "
          f"rmd bundle create {result.root} -o BUNDLE.tar")
    return 0


def _expected(args: argparse.Namespace) -> int:
    path, images, unsigned = recompute_expected(args.directory, args.truth)
    print(f"wrote {path} for {images} validation images and rewrote files.json"
          + ("; the old signature.json was removed (it signed the old files.json)" if unsigned else ""))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    info = inspect_bundle(bundle=args.bundle)
    manifest = info.manifest
    signature = (f"key {info.signature_key_id} (not checked; use rmd bundle verify)"
                 if info.signature_key_id else "none (unsigned)")
    print(f"bundle     {args.bundle}")
    print(f"model      {manifest.name} {manifest.version} ({manifest.task.value}), file {shown(manifest.model)}")
    print(f"input      {manifest.input.width}x{manifest.input.height} {manifest.input.color_order.value} "
          f"{manifest.input.layout.value} {manifest.input.dtype.value}")
    if manifest.description:
        print(f"about      {one_line(manifest.description)}")
    print(f"signature  {signature}")
    print(f"files      {len(info.file_list.files)}, {info.file_list.total_size} bytes")
    for entry in info.file_list.files:
        print(f"  {entry.size:>12}  {entry.sha256[:16]}  {entry.path}")
    return 0
