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

# RIHS01 type hashes of ros-perception/vision_msgs 4.1.1 (tag 4.1.1, commit e77fa2d, the version ROS 2
# distributions ship) as Kilted's rosidl computes them: read from share/vision_msgs/msg/*.json after
# building that source with colcon here. Reference values for the tests, from upstream, not from the stand-in.
UPSTREAM_TYPE_HASHES = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
}
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
