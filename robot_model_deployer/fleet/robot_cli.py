"""The robot as the update module sees it: the ``rmd robot`` command, run as a child process.

A child process per call keeps rclpy (and a DDS participant) out of the
module, whose every state is a short-lived process Mender starts; the
command's exit codes and ``status --json`` are the contract.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from robot_model_deployer.bundle.text import one_line

# rmd robot's exit codes (robot/outcome.py, a layer above this one, defines them for the command).
EXIT_DONE = 0
EXIT_REFUSED = 1


class RobotUnreachable(RuntimeError):
    """``rmd robot`` could not reach the manager (exit code 2), or did not run at all."""


@dataclass(frozen=True)
class RobotReply:
    """What one ``rmd robot`` command answered: done (exit 0) or refused (exit 1), and its words."""

    done: bool
    message: str


class Robot(Protocol):
    """The manager's side of an update: what it serves and runs, and the three things it is asked to do."""

    def status(self) -> dict[str, Any]:
        """``rmd robot status --json``: active, previous, candidate, stage, deployment, last."""

    def deploy(self, bundle: Path) -> RobotReply:
        """Deploy ``bundle`` (a path on the robot) and return once it serves (probation runs on)."""

    def rollback(self, reason: str) -> RobotReply:
        """Serve the store's previous version again; ``reason`` goes into the store's history."""

    def cancel(self) -> RobotReply:
        """Stop the running deployment; the manager puts the live model back."""


class RobotCli:
    """Robot through ``rmd robot`` with a namespace and a per-call timeout (seconds)."""

    def __init__(self, *, namespace: str = "", timeout: float = 30.0,
                 command: Sequence[str] = (sys.executable, "-m", "robot_model_deployer.robot.main")) -> None:
        self._base = [*command, "robot", "--timeout", f"{timeout:g}"]
        if namespace:
            self._base += ["--namespace", namespace]

    def status(self) -> dict[str, Any]:
        code, out, err = self._call(("status", "--json"))
        if code != EXIT_DONE:
            raise RobotUnreachable(f"rmd robot status exited {code}: {_last_words(err) or _last_words(out)}")
        try:
            return json.loads(out)
        except ValueError:
            raise RobotUnreachable(f"rmd robot status --json printed no JSON: {one_line(out, 300)}") from None

    def deploy(self, bundle: Path) -> RobotReply:
        return self._reply("deploy", str(bundle), "--until", "live")

    def rollback(self, reason: str) -> RobotReply:
        return self._reply("rollback", "--reason", reason)

    def cancel(self) -> RobotReply:
        return self._reply("cancel")

    def _reply(self, *args: str) -> RobotReply:
        code, out, err = self._call(args)
        # The verdict: stdout when done, stderr (after any stage lines) when refused.
        return RobotReply(code == EXIT_DONE, _last_words(out if code == EXIT_DONE else err) or _last_words(out + err))

    def _call(self, args: Sequence[str]) -> tuple[int, str, str]:
        command = [*self._base, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
        except OSError as exc:
            raise RobotUnreachable(f"could not run {command[0]}: {exc}") from None
        if done.returncode not in (EXIT_DONE, EXIT_REFUSED):
            raise RobotUnreachable(f"rmd robot {args[0]} exited {done.returncode}: "
                                   f"{_last_words(done.stderr) or _last_words(done.stdout)}")
        return done.returncode, done.stdout, done.stderr


def _last_words(text: str) -> str:
    """The last non-empty line of a command's output (its verdict), as one printable line."""
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(lines[-1], 500) if lines else ""
