"""The ``rmd`` entry point: cli's command groups plus those that talk to a robot over ROS 2.

The cli layer never imports rclpy (an import-linter contract); this layer
may, so the ROS groups are added here. A new group that needs ROS goes in
COMMANDS below; one that does not goes in cli.main.COMMANDS.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Sequence

from robot_model_deployer.cli import main as cli_main
from robot_model_deployer.robot import command as robot_command

COMMANDS: tuple[ModuleType, ...] = (robot_command,)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main.main(argv, cli_main.COMMANDS + COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
