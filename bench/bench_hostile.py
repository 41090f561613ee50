#!/usr/bin/env python3
"""Hostile bundles: how fast and in how much memory each class is refused, and a long fuzz run.

Every class is built here from a good signed colour-classifier bundle and fed,
each in a fresh child process (so peak RSS is its own), to what a robot and
an operator run on untrusted files: ``verify`` (``rmd bundle verify``),
``inspect`` (``rmd bundle inspect``, which checks no signature at all) and
``ingest`` (the store's ingest, as the manager calls it). A child's peak RSS
is printed beside that of a child that only imports the same modules.

    source scripts/env.sh
    python bench/bench_hostile.py                 # the table of classes
    python bench/bench_hostile.py --fuzz 100000   # mutated bundles: cases/s, outcomes, slowest case
    python bench/bench_hostile.py --json          # the same as JSON

Goals (issue 10): every unsigned or wrongly signed input refused in under
1 s and 150 MB peak RSS on a 2-core machine; a fuzz run with no outcome but
a BundleError or acceptance of intact signed contents.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from robot_model_deployer.bundle.filelist import build_file_list
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import generate_keypair, load_private_key, sign_file_list
from robot_model_deployer.testing.fuzz import (BLOCK, FuzzTarget, Member, inspect_outcome, join_archive, mutate,
                                               pax_record, resized, split_archive, ustar_header, verify_outcome)
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle

GOAL_SECONDS = 1.0
GOAL_RSS_MB = 150.0
TARGETS = ("verify", "inspect", "ingest")
# inspect checks no signature: these it shows (saying who signed, or that nobody did) rather than refuses.
INSPECT_SHOWS = ("unsigned bundle", "signed by an unknown key")


def _pax(body: bytes) -> bytes:
    return ustar_header(b"PaxHeader", b"x", len(body)) + body + bytes(-len(body) % BLOCK)


def _records(keyword: bytes, value: bytes, count: int = 1) -> bytes:
    return pax_record(b"%s=%s" % (keyword, value)) * count


class Bundles:
    """The good bundle and every hostile class, written once into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys = root / "keys"
        generate_keypair(out_dir=keys, name="release")
        generate_keypair(out_dir=keys, name="stranger")
        self.trust = root / "trust"
        self.trust.mkdir()
        (self.trust / "release.pub").write_bytes((keys / "release.pub").read_bytes())
        source = root / "source"
        write_bundle(source, colour_classifier(), classifier_manifest(version="2.0.0"))
        self.source = source
        self.file_list = build_file_list(source).to_bytes()
        self.good = self._pack("good.tar", keys / "release.key")
        self.stranger = self._pack("stranger.tar", keys / "stranger.key")
        self.unsigned = self._pack("unsigned.tar", None)

    def _pack(self, name: str, key: Path | None, file_list: bytes | None = None) -> bytes:
        file_list = file_list or self.file_list
        signature = sign_file_list(file_list, load_private_key(key)) if key is not None else None
        write_bundle_tar(output=self.root / name, root=self.source, file_list_bytes=file_list, signature=signature)
        return (self.root / name).read_bytes()

    def members(self) -> list[Member]:
        return split_archive(self.good)

    def classes(self) -> dict[str, Callable[[], bytes | Path]]:
        """Name -> a builder of the hostile input (archive bytes, or a path for directory/trust cases)."""
        members = self.members()
        first, rest = members[0], join_archive(members[1:])
        zero_tail = bytes(2 * BLOCK)
        return {
            "unsigned bundle": lambda: self.unsigned,
            "signed by an unknown key": lambda: self.stranger,
            "model byte flipped after signing": lambda: self._flipped(),
            "pax header of 1 MiB (one record)": lambda: _pax(_records(b"comment", b"x" * (1 << 20))) + self.good,
            "pax header of 1 MiB (100k tiny records)": lambda: _pax(_records(b"mtime", b"1", 90_000)) + self.good,
            "pax GNU.sparse keywords": lambda: _pax(_records(b"GNU.sparse.map", b"0,1" * 500)) + self.good,
            "GNU long name of 1 MiB":
                lambda: ustar_header(b"././@LongLink", b"L", 1 << 20) + bytes(1 << 20) + self.good,
            "GNU sparse member": lambda: ustar_header(b"files.json", b"S", 0) + zero_tail,
            "files.json claims 2 GiB": lambda: ustar_header(b"files.json", b"0", 2 << 30) + bytes(BLOCK * 4),
            "files.json nested 1 MiB deep": lambda: join_archive([resized(first, b"[" * ((1 << 20) - 1))]),
            "files.json with a duplicate key": lambda: join_archive(
                [resized(first, first.data.replace(b'{"files"', b'{"format":1,"files"', 1))] + members[1:]),
            "gzip bomb (1 GiB of zeros after the header)": lambda: self._gzip_bomb(),
            "gzip of 1 GiB of zeros": lambda: self._gzip_zeros(),
            "two gzip members": lambda: gzip.compress(self.good) + gzip.compress(self.good),
            "two archives concatenated": lambda: self.good + self.good,
            "garbage after the end": lambda: self.good + b"\x7fELF" + bytes(4096),
            "bad header checksum": lambda: self.good[:148] + b"0000000\x00" + self.good[156:],
            "truncated in the model": lambda: self.good[: len(self.good) // 2],
            "manifest: anchors and aliases (inspect)": lambda: self._unsigned_manifest(self._laughs()),
            "manifest: nested 10k deep (inspect)": lambda: self._unsigned_manifest(b"a: " + b"[" * 10_000),
            "FIFO named files.json (directory)": lambda: self._fifo_directory(),
            "trust store .pub links to /dev/zero": lambda: self._bad_trust("zero"),
            "trust store .pub of 1 GiB": lambda: self._bad_trust("huge"),
            "rest of the archive without files.json": lambda: rest,
        }

    def _flipped(self) -> bytes:
        data = bytearray(self.good)
        data[-3 * BLOCK] ^= 0x01  # inside model.onnx, the last member
        return bytes(data)

    def _gzip_bomb(self) -> bytes:
        path = self.root / "bomb.tar.gz"  # streamed, so the bomb never sits in memory inflated
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as out:
            out.write(split_archive(self.good)[0].header + bytes(1 << 20))
            zeros = bytes(16 << 20)
            for _ in range(64):
                out.write(zeros)
        return path.read_bytes()

    def _gzip_zeros(self) -> bytes:
        path = self.root / "zeros.tar.gz"
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as out:
            zeros = bytes(16 << 20)
            for _ in range(64):
                out.write(zeros)
        return path.read_bytes()

    @staticmethod
    def _laughs() -> bytes:
        lines = [b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        lines += [b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]" % ((98 + i, 98 + i) + (97 + i,) * 9)
                  for i in range(9)]
        return b"\n".join(lines) + b"\n"

    def _unsigned_manifest(self, manifest: bytes) -> bytes:
        """An unsigned bundle whose files.json matches a hostile manifest: inspect reads it all."""
        source = self.root / f"hostile-{len(manifest)}"
        write_bundle(source, colour_classifier(), classifier_manifest(version="2.0.0"))
        (source / "manifest.yaml").write_bytes(manifest)
        file_list = build_file_list(source).to_bytes()
        output = self.root / f"hostile-{len(manifest)}.tar"
        write_bundle_tar(output=output, root=source, file_list_bytes=file_list, signature=None)
        return output.read_bytes()

    def _fifo_directory(self) -> Path:
        directory = self.root / "fifo-bundle"
        write_bundle(directory, colour_classifier(), classifier_manifest(version="2.0.0"))
        os.mkfifo(directory / "files.json")
        return directory

    def _bad_trust(self, how: str) -> Path:
        trust = self.root / f"trust-{how}"
        trust.mkdir()
        if how == "zero":
            (trust / "evil.pub").symlink_to("/dev/zero")
        else:
            with open(trust / "evil.pub", "wb") as out:
                out.truncate(1 << 30)
        return trust


def _child(args: argparse.Namespace) -> None:
    """One case in this fresh process: feed the input to the target, print outcome, seconds and peak RSS."""
    from robot_model_deployer.bundle.errors import BundleError
    from robot_model_deployer.bundle.extract import inspect_bundle
    from robot_model_deployer.bundle.signing import KeyFileError, TrustStore
    from robot_model_deployer.bundle.verify import verify_bundle
    from robot_model_deployer.store.model_store import ModelStore

    def model_check(root: Path) -> None:  # reached only by a bundle that passed every check
        from robot_model_deployer.inference.model_check import check_model
        check_model(root)

    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    outcome = "accepted"
    try:
        if args.target == "imports":
            pass
        else:
            trust = TrustStore.load(Path(args.trust))
            path = Path(args.input)
            if args.target == "verify":
                verify_bundle(bundle=path, trust=trust, model_check=model_check)
            elif args.target == "inspect":
                inspect_bundle(bundle=path)
            else:
                store = ModelStore.open(Path(tempfile.mkdtemp(prefix="rmd-bench-store-")))
                store.ingest(path, trust=trust, model_check=model_check)
    except (BundleError, KeyFileError) as exc:
        outcome = f"refused: {type(exc).__name__}"
    except Exception as exc:  # what this benchmark hunts for
        outcome = f"ESCAPED {type(exc).__name__}: {exc}"[:200]
    seconds = time.perf_counter() - started
    print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(),
                      "rss_before_mb": rss_before}))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's from before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_child(target: str, input_path: Path, trust: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", "--target", target, "--input", str(input_path),
                           "--trust", str(trust)], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"outcome": f"CHILD DIED ({done.returncode}): {done.stderr.strip()[-200:]}", "seconds": float("nan"),
                "peak_rss_mb": float("nan")}
    return json.loads(lines[-1])


def run_classes(root: Path) -> list[dict[str, Any]]:
    bundles = Bundles(root)
    rows = []
    imports = _run_child("imports", bundles.root, bundles.trust)
    for name, build in bundles.classes().items():
        built = build()
        trust = bundles.trust
        if isinstance(built, bytes):
            path = root / "case.tar"
            path.write_bytes(built)
            targets = ("inspect",) if "(inspect)" in name else TARGETS
        elif name.startswith("trust store"):
            path, trust, targets = bundles.root / "good.tar", built, ("verify", "ingest")
        else:
            path, targets = built, TARGETS
        for target in targets:
            result = _run_child(target, path, trust)
            expected = "accepted" if target == "inspect" and name in INSPECT_SHOWS else "refused"
            rows.append({"class": name, "target": target, "input_mb": _size_mb(path), **result, "expected": expected,
                         "as_expected": result["outcome"].startswith(expected),
                         "imports_rss_mb": imports["peak_rss_mb"]})
    return rows


def _size_mb(path: Path) -> float:
    return path.stat().st_size / (1 << 20) if path.is_file() else 0.0


def run_fuzz(root: Path, cases: int, seed: int) -> dict[str, Any]:
    bundles = Bundles(root)
    from robot_model_deployer.bundle.signing import TrustStore
    scratch = root / "fuzz"
    scratch.mkdir()
    original = {p.relative_to(bundles.source).as_posix(): p.read_bytes() for p in bundles.source.rglob("*")
                if p.is_file()}
    target = FuzzTarget(TrustStore.load(bundles.trust), original, scratch)
    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    slowest = {"seconds": 0.0}
    started = time.perf_counter()
    for index in range(cases):
        data, how = mutate(bundles.good, rng)
        for check in (verify_outcome, inspect_outcome):
            began = time.perf_counter()
            outcome = check(data, target)
            took = time.perf_counter() - began
            outcomes[f"{check.__name__.removesuffix('_outcome')}: {outcome}"] += 1
            if took > slowest["seconds"]:
                slowest = {"seconds": took, "case": index, "mutators": how, "target": check.__name__}
        if (index + 1) % 10_000 == 0:
            print(f"  {index + 1} cases, {(index + 1) / (time.perf_counter() - started):.0f} cases/s",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    bad = {k: v for k, v in outcomes.items() if not k.endswith(("refused", "accepted intact"))}
    return {"cases": cases, "seed": seed, "seconds": elapsed, "cases_per_second": cases / elapsed,
            "outcomes": dict(outcomes.most_common()), "disallowed": bad, "slowest": slowest,
            "peak_rss_mb": _peak_rss_mb()}


def _print_classes(rows: list[dict[str, Any]]) -> None:
    print(f"{'class':45} {'target':8} {'outcome':28} {'seconds':>8} {'peak RSS MB':>12} {'imports':>8}"
          "   (imports: a child that only imports the same modules)")
    for row in rows:
        print(f"{row['class'][:45]:45} {row['target']:8} {row['outcome'][:28]:28} {row['seconds']:8.3f} "
              f"{row['peak_rss_mb']:12.1f} {row['imports_rss_mb']:8.1f}")
    worst_s = max(row["seconds"] for row in rows)
    worst_mb = max(row["peak_rss_mb"] for row in rows)
    unexpected = [row for row in rows if not row["as_expected"]]
    print(f"\nslowest {worst_s:.3f} s (goal < {GOAL_SECONDS} s), largest peak RSS {worst_mb:.1f} MB "
          f"(goal < {GOAL_RSS_MB} MB); outcomes not as expected: {len(unexpected)}"
          + "".join(f"\n  {row['class']} / {row['target']}: {row['outcome']}" for row in unexpected))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=0, metavar="N", help="run N mutated bundles instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--trust", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    # tmpfs when there is one: the verifier fsyncs what it unpacks, and disks are not what this measures.
    scratch_parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="rmd-bench-hostile-", dir=scratch_parent) as scratch:
        if args.fuzz:
            os.environ["TMPDIR"] = scratch
            tempfile.tempdir = scratch
            result: Any = run_fuzz(Path(scratch), args.fuzz, args.seed)
            if args.json:
                print(json.dumps({**machine, **result}, indent=1))
            else:
                print(f"{result['cases']} mutated bundles (seed {result['seed']}), each to verify and inspect, in "
                      f"{result['seconds']:.0f} s: {result['cases_per_second']:.0f} cases/s; peak RSS "
                      f"{result['peak_rss_mb']:.0f} MB")
                for outcome, count in result["outcomes"].items():
                    print(f"  {count:>8}  {outcome}")
                print(f"slowest case: {result['slowest']}")
                print(f"outcomes other than a BundleError or intact acceptance: {result['disallowed'] or 'none'}")
            return 1 if result["disallowed"] else 0
        rows = run_classes(Path(scratch))
    if args.json:
        print(json.dumps({**machine, "rows": rows}, indent=1))
    else:
        _print_classes(rows)
    return 0 if all(row["as_expected"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
