"""Where vision_msgs comes from, and an environment without it (a robot that lacks the package).

scripts/test.sh puts the test stand-in (test/vision_msgs_standin) on the
paths when no real vision_msgs is installed; a ROS install may have the
real one. Either way, when it lives in a prefix of its own, a child process
can be started without it by dropping that prefix from every search path.
"""
from __future__ import annotations

import os
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory

STANDIN_MARK = "TEST STAND-IN"  # in the stand-in's package.xml description
_SEARCH_PATHS = ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PATH")


def vision_msgs_prefix() -> Path | None:
    """The install prefix that provides vision_msgs, or None when none does."""
    try:
        return Path(get_package_prefix("vision_msgs"))
    except PackageNotFoundError:
        return None


def is_standin() -> bool:
    """True when the vision_msgs found is this project's test stand-in, not the real package."""
    try:
        manifest = Path(get_package_share_directory("vision_msgs")) / "package.xml"
    except PackageNotFoundError:
        return False
    return STANDIN_MARK in manifest.read_text(encoding="utf-8")


def environment_without_vision_msgs() -> dict[str, str] | None:
    """Search paths with vision_msgs' prefix left out, to pass to a child process.

    {} when vision_msgs is not installed at all (nothing to leave out); None
    when its prefix also holds ROS itself (one /opt/ros/<distro>), which
    cannot be left out without rclpy.
    """
    prefix = vision_msgs_prefix()
    if prefix is None:
        return {}
    try:
        if Path(get_package_prefix("rclpy")) == prefix:
            return None
    except PackageNotFoundError:
        pass
    environment = {}
    for name in _SEARCH_PATHS:
        entries = [entry for entry in os.environ.get(name, "").split(os.pathsep)
                   if entry and not Path(entry).is_relative_to(prefix)]
        environment[name] = os.pathsep.join(entries)
    return environment
