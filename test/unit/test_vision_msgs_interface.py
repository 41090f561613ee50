"""The vision_msgs on the path has upstream's interface, field for field.

A RIHS01 type hash (REP 2011) is a sha256 over a message's field names and
types and those of every nested type, not its comments, so two definitions
with one field named, typed or ordered differently get different hashes.
UPSTREAM holds the hashes that ros-perception/vision_msgs 4.1.1 (tag 4.1.1,
commit e77fa2d, the version ROS 2 distributions ship) gets from Kilted's
rosidl, read from share/vision_msgs/msg/*.json after building that source
with colcon. The test stand-in (test/vision_msgs_standin) must match them,
and so must a real vision_msgs 4.1.1 on a Kilted robot.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

from robot_model_deployer.nodes.vision_conversions import vision_msgs_missing

UPSTREAM = {
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

pytestmark = pytest.mark.skipif(vision_msgs_missing() is not None,
                                reason="vision_msgs is not importable: scripts/test.sh builds a test stand-in")


def type_hash(share: Path, name: str) -> str:
    description = json.loads((share / "msg" / f"{name}.json").read_text(encoding="utf-8"))
    (own,) = [entry for entry in description["type_hashes"] if entry["type_name"] == f"vision_msgs/msg/{name}"]
    return own["hash_string"]


def share_directory() -> Path:
    try:
        return Path(get_package_share_directory("vision_msgs"))
    except PackageNotFoundError:
        pytest.skip("vision_msgs imports but has no share directory in AMENT_PREFIX_PATH")


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_each_message_hashes_like_upstream_vision_msgs(name: str) -> None:
    share = share_directory()
    if not (share / "msg" / f"{name}.json").exists():
        pytest.skip(f"{share} has no type descriptions (a ROS 2 older than Iron)")
    assert type_hash(share, name) == UPSTREAM[name], f"vision_msgs/msg/{name} in {share} differs from upstream 4.1.1"


def test_the_hash_changes_when_one_field_does(tmp_path: Path) -> None:
    """The check can fail: a LabelInfo whose threshold is float64 instead of float32 hashes differently."""
    calculate_type_hash = pytest.importorskip("rosidl_generator_type_description").calculate_type_hash
    share = share_directory()
    description = json.loads((share / "msg" / "LabelInfo.json").read_text(encoding="utf-8"))
    fields = description["type_description_msg"]["type_description"]["fields"]
    (threshold,) = [field for field in fields if field["name"] == "threshold"]
    assert calculate_type_hash(description["type_description_msg"]) == UPSTREAM["LabelInfo"]
    threshold["type"]["type_id"] = 11  # FIELD_TYPE_DOUBLE; upstream's is 10, FLOAT
    assert calculate_type_hash(description["type_description_msg"]) != UPSTREAM["LabelInfo"]
