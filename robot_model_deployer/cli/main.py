"""``rmd``: make keys, pack, sign, verify and inspect model bundles.

Each command group is a module with ``add_parser(subparsers)`` that sets
``run`` on its parsers; adding a group means adding its module to COMMANDS.
The work itself lives in plain keyword-only functions of the core modules.
"""
from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.manifest import ManifestError
from robot_model_deployer.bundle.signing import KeyFileError
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.cli import bundle, keys, mender, optimize, store
from robot_model_deployer.store.state import StoreError

COMMANDS: tuple[ModuleType, ...] = (
    keys,
    bundle,
    optimize,
    store,
    mender,
)

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser(commands: Sequence[ModuleType] | None = None) -> argparse.ArgumentParser:
    """The parser of ``commands`` (COMMANDS when None; robot.main adds the groups that talk ROS)."""
    parser = argparse.ArgumentParser(prog="rmd", description="Make keys; pack, sign, verify, inspect and optimize robot model bundles; look into a robot's store.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS if commands is None else commands:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, commands: Sequence[ModuleType] | None = None) -> int:
    """Run one ``rmd`` command; returns the process exit code (argparse exits 2 on bad usage)."""
    args = build_parser(commands).parse_args(argv)
    # Core modules log warnings (e.g. an unsigned bundle accepted); show them as rmd's own.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rmd: %(message)s"))
    package_log = logging.getLogger("robot_model_deployer")
    package_log.addHandler(handler)
    try:
        return args.run(args)
    except (BundleError, ManifestError, KeyFileError, StoreError, OSError, ValueError) as exc:
        # One printable line, whatever the underlying library or a hostile bundle put in the message.
        print(f"rmd: error: {one_line(' '.join(str(exc).split()), 1000)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rmd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        package_log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
