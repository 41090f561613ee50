"""What the robot answered, as plain data: the client returns these, the command prints them.

No rclpy here, so scripts (the Mender update module) and the command's exit
codes can rely on these types wherever the client runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

DEFAULT_TIMEOUT_S = 10.0  # seconds the client waits for each answer of the robot
EXIT_DONE = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2  # also a usage error (argparse's own code)

# Called with (stage, fraction 0..1, message); stage is "upload" while pushing, else a deployment stage.
StageProgress = Callable[[str, float, str], None]

RUNNING_STAGES = ("verify", "stage", "optimize", "shadow", "swap", "probation", "commit", "rollback")
LIVE_STAGES = ("probation", "commit")  # the candidate serves from the swap's end on


class RobotUnreachable(RuntimeError):
    """No manager answered in time (wrong namespace or domain, graph down, robot gone): exit code 2."""


class RobotRefused(RuntimeError):
    """The manager answered no (an upload quota, an unknown id or version): exit code 1."""


class Until(str, Enum):
    """How long ``deploy`` waits: for the swap (the goal keeps running on the robot) or for the result."""

    LIVE = "live"
    DONE = "done"


class Outcome(str, Enum):
    """How a deployment ended, as the robot's status ``last_outcome`` says it (LIVE: still in probation)."""

    DEPLOYED = "deployed"
    LIVE = "live"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class DeployOutcome:
    """The robot's answer to one deployment. ``accepted``: deployed (or, with ``until=live``, serving now)."""

    accepted: bool
    reason: str
    outcome: Outcome
    version: str = ""  # name@version, when the robot got that far
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_DONE if self.accepted else EXIT_REFUSED


@dataclass(frozen=True)
class RobotAnswer:
    """The answer to a rollback or a cancel: whether it was done, and what the robot said."""

    ok: bool
    message: str
    version: str = ""  # the version that serves afterwards (rollback)

    @property
    def exit_code(self) -> int:
        return EXIT_DONE if self.ok else EXIT_REFUSED
