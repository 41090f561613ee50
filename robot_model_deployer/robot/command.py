"""``rmd robot``: push a bundle to a robot, deploy it, watch it, roll it back, over ROS 2.

Exit codes scripts rely on: 0 deployed or done, 1 refused by the robot,
2 the robot could not be reached or the command was misused. rclpy is
imported only when a robot command runs, so ``rmd`` without ROS still
works and ``rmd robot`` says in one line what is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.cli.progress import StderrProgress
from robot_model_deployer.robot.outcome import (DEFAULT_TIMEOUT_S, EXIT_DONE, EXIT_REFUSED, EXIT_UNREACHABLE,
                                                DeployOutcome, Outcome, RobotRefused, RobotUnreachable, Until)
from robot_model_deployer.robot.views import status_lines

EXIT_INTERRUPTED = 130


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("robot", help="push, deploy, watch and roll back models on a robot over ROS 2",
                                   description="Talk to a robot's model manager over ROS 2 (needs rclpy; uses "
                                               "ROS_DOMAIN_ID). Exit codes: 0 done, 1 refused by the robot, "
                                               "2 robot not reached or usage error.")
    parser.add_argument("--namespace", default="", help="the robot's ROS namespace (its manager is "
                                                        "/<namespace>/model_manager)")
    parser.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for the robot to answer each request (default {DEFAULT_TIMEOUT_S:g})")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    push = verbs.add_parser("push", help="upload a bundle (.tar) to the robot; resumes an interrupted upload")
    push.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle file (rmd bundle pack makes one)")
    push.add_argument("--deploy", action="store_true", help="deploy it once uploaded")
    _deploy_options(push)
    push.set_defaults(verb_run=_push)

    deploy = verbs.add_parser("deploy", help="deploy a bundle already on the robot (a path there, or an upload id)")
    deploy.add_argument("path", nargs="?", metavar="PATH_ON_ROBOT", help="a bundle path on the robot's disk")
    deploy.add_argument("--upload-id", metavar="ID", help="a finished upload (what `rmd robot push` printed)")
    _deploy_options(deploy)
    deploy.set_defaults(verb_run=_deploy)

    status = verbs.add_parser("status", help="what serves, what runs, how the last deployment ended")
    status.add_argument("--watch", action="store_true", help="follow stage, progress, shadow figures and health "
                                                             "until Ctrl-C")
    status.add_argument("--json", action="store_true", help="one JSON object (with --watch: one per change)")
    status.set_defaults(verb_run=_status)

    listing = verbs.add_parser("list", help="the versions installed on the robot and their slots")
    listing.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    listing.set_defaults(verb_run=_list)

    rollback = verbs.add_parser("rollback", help="serve the previous model again")
    rollback.add_argument("--reason", default="", help="why (recorded in the robot's store history)")
    rollback.set_defaults(verb_run=_rollback)

    cancel = verbs.add_parser("cancel", help="cancel the running deployment (the live model stays live)")
    cancel.set_defaults(verb_run=_cancel)

    report = verbs.add_parser("report", help="everything the robot knows about one installed version (JSON)")
    report.add_argument("version", metavar="VERSION", help="name@version, or a version alone")
    report.set_defaults(verb_run=_report)
    parser.set_defaults(run=run)


def _deploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--until", choices=[u.value for u in Until], default=Until.DONE.value,
                        help="live: return once the model serves (probation goes on on the robot); "
                             "done (default): wait for probation and commit")
    parser.add_argument("--force", action="store_true", help="allow a version not newer than the installed one")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Open a client, run the verb, map what happened onto the exit codes."""
    usage = _usage_error(args)
    if usage:
        print(f"rmd robot {args.verb}: {usage}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        from robot_model_deployer.robot.client import RobotClient
    except ImportError as exc:
        print(f"rmd robot: needs ROS 2 (rclpy and this package's interfaces), which this Python cannot import "
              f"({exc}); run it where ROS 2 is set up (in a checkout: source scripts/env.sh)", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        with RobotClient(args.namespace, timeout=args.timeout) as client:
            return args.verb_run(client, args)
    except RobotUnreachable as exc:
        print(f"rmd robot: cannot reach the robot: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RobotRefused as exc:
        print(f"rmd robot: refused by the robot: {one_line(str(exc), 1000)}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        if args.verb == "status":
            return EXIT_DONE
        print("rmd robot: interrupted; a deployment already sent goes on on the robot (see `rmd robot status`)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _usage_error(args: argparse.Namespace) -> str:
    if args.verb == "push" and not args.bundle.is_file():
        return f"{args.bundle} is not a file: give a bundle .tar (rmd bundle pack makes one)"
    if args.verb == "deploy" and bool(args.path) == bool(args.upload_id):
        return "give either PATH_ON_ROBOT or --upload-id ID (what `rmd robot push` printed)"
    return ""


class StageBars:
    """A progress bar per stage on stderr (cli.progress), and each stage's message when it changes."""

    def __init__(self, upload_name: str = "bundle", stream: TextIO | None = None) -> None:
        self._upload_name = upload_name
        self._stream = stream or sys.stderr
        self._stage = ""
        self._bar: Callable[[str, float], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        with self._lock:
            if stage != self._stage:
                if self._bar is not None and self._stream.isatty():
                    self._stream.write("\n")
                self._stage, self._bar = stage, StderrProgress("upload" if stage == "upload" else "deploy",
                                                               self._stream)
                if stage != "upload" and message:
                    self._stream.write(f"{stage}: {one_line(message, 300)}\n")
            self._bar(self._upload_name if stage == "upload" else stage, fraction)


def _push(client: Any, args: argparse.Namespace) -> int:
    upload_id = client.push(args.bundle, StageBars(args.bundle.name))
    print(f"uploaded {args.bundle.name} as {upload_id}")
    if not args.deploy:
        print(f"deploy it with: rmd robot deploy --upload-id {upload_id}", file=sys.stderr)
        return EXIT_DONE
    return _print_outcome(client.deploy(upload_id=upload_id, until=args.until, force=args.force,
                                        progress=StageBars()))


def _deploy(client: Any, args: argparse.Namespace) -> int:
    return _print_outcome(client.deploy(bundle_path=args.path, upload_id=args.upload_id, until=args.until,
                                        force=args.force, progress=StageBars()))


def _print_outcome(outcome: DeployOutcome) -> int:
    if outcome.accepted:
        print(f"{outcome.outcome.value}: {outcome.reason}")
        return outcome.exit_code
    advice = {Outcome.ROLLED_BACK: "the previous model serves again",
              Outcome.CANCELLED: "the live model is unchanged"}.get(outcome.outcome, "the live model is unchanged")
    more = f"; details: rmd robot report {outcome.version}" if outcome.version else ""
    print(f"rmd robot: {outcome.outcome.value}: {one_line(outcome.reason, 1000)} ({advice}{more})", file=sys.stderr)
    return outcome.exit_code


def _status(client: Any, args: argparse.Namespace) -> int:
    if not args.watch:
        status = client.status()
        print(json.dumps(status, sort_keys=True) if args.json else "\n".join(status_lines(status)))
        return EXIT_DONE
    return _watch(client, args.json)


def _watch(client: Any, as_json: bool) -> int:
    """Print the status on every change, stage progress, and shadow figures (at most one line a second)."""
    bars = StageBars()
    last_shadow = [0.0]

    def on_status(status: dict[str, Any]) -> None:
        print(json.dumps(status, sort_keys=True) if as_json else "\n".join(status_lines(status)) + "\n", flush=True)

    def on_shadow(report: Any) -> None:
        if as_json or time.monotonic() - last_shadow[0] < 1.0:
            return
        last_shadow[0] = time.monotonic()
        print(f"shadow {report.candidate_name}@{report.candidate_version}: {report.outcome} "
              f"{report.frames_judged} frames, agreement {report.agreement:.3f}, p99 "
              f"{report.candidate_latency_p99_ms:.1f} ms vs live {report.live_latency_p99_ms:.1f} ms", flush=True)

    stop = client.watch(on_status, None if as_json else bars, on_shadow)
    try:
        while True:
            time.sleep(0.5)
    finally:
        stop()


def _list(client: Any, args: argparse.Namespace) -> int:
    models = client.list()
    if args.json:
        print(json.dumps(models, sort_keys=True))
        return EXIT_DONE
    if not models:
        print("no versions installed on the robot: push one with `rmd robot push BUNDLE --deploy`")
    for model in models:
        bad = f"  bad: {model['bad_reason']}" if model["bad"] else ""
        print(f"{model['ref']:<40} {model['slot'] or '-':<10} {model['model_sha256'][:12]}{bad}")
    return EXIT_DONE


def _rollback(client: Any, args: argparse.Namespace) -> int:
    answer = client.rollback(args.reason)
    print(answer.message, file=sys.stdout if answer.ok else sys.stderr)
    return answer.exit_code


def _cancel(client: Any, args: argparse.Namespace) -> int:
    answer = client.cancel()
    print(answer.message, file=sys.stdout if answer.ok else sys.stderr)
    return answer.exit_code


def _report(client: Any, args: argparse.Namespace) -> int:
    print(json.dumps(client.report(args.version), indent=2, sort_keys=True, default=str))
    return EXIT_DONE
