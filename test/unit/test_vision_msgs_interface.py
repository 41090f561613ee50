"""The vision_msgs on the path has upstream's interface, field for field.

A RIHS01 type hash (REP 2011) is a sha256 over a message's field names and
types and those of every nested type, not its comments, so two definitions
with one field named, typed or ordered differently get different hashes.
The test stand-in (test/vision_msgs_standin) must match upstream's
(UPSTREAM_TYPE_HASHES says where they come from), and so must a real
vision_msgs 4.1.1 on a Kilted robot.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

from robot_model_deployer.nodes.vision_conversions import vision_msgs_missing
from robot_model_deployer.testing.vision_msgs_env import UPSTREAM_TYPE_HASHES as UPSTREAM

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
