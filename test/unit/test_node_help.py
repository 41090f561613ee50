"""Node --help text, the manager's ready line and Deploy feedback only on change."""
from __future__ import annotations

import pytest

from robot_model_deployer.bundle.signing import TrustStore, generate_keypair
from robot_model_deployer.demo.camera_node import PARAMETERS as CAMERA
from robot_model_deployer.nodes.deploy_feedback import FeedbackGate
from robot_model_deployer.nodes.manager_node import PARAMETERS as MANAGER
from robot_model_deployer.nodes.manager_ready import ready_line
from robot_model_deployer.nodes.parameters import parameters_help
from robot_model_deployer.nodes.perception_node import PARAMETERS as PERCEPTION
from robot_model_deployer.nodes.shadow_node import PARAMETERS as SHADOW


@pytest.mark.parametrize("specs", [MANAGER, PERCEPTION, SHADOW, CAMERA], ids=["manager", "perception", "shadow",
                                                                            "camera"])
def test_help_lists_every_declared_parameter_with_type_default_range_and_description(specs):
    text = parameters_help("node", "Does things.", specs)
    assert text.startswith("usage: node [--ros-args")
    for spec in specs:
        entry = next(line for line in text.splitlines() if line.startswith(f"  {spec.name} ("))
        assert f"default {spec.default!r}" in entry
        if spec.choices:
            assert ", ".join(spec.choices) in entry
        if spec.minimum is not None:
            assert f">= {spec.minimum}" in entry
        assert " ".join(spec.description.split()[:4]) in text


def test_help_names_the_type_as_ros_does():
    text = parameters_help("perception_node", "", PERCEPTION)
    assert "  warmup_runs (integer, default 3; >= 1 and <= 100)" in text
    assert "  providers (string array, default ['CPUExecutionProvider'])" in text


def test_the_ready_line_names_services_action_status_and_trust_store(tmp_path):
    keys = generate_keypair(out_dir=tmp_path, name="fleet")
    trust = TrustStore.load(tmp_path)
    line = ready_line("/robot1/model_manager", trust, allow_unsigned=False)
    for name in ("deploy", "rollback", "list_models", "get_status"):
        assert f"/robot1/model_manager/{name}" in line
    assert "action /robot1/model_manager/deploy_bundle" in line and "status /robot1/model_manager/status" in line
    assert f"trust store {tmp_path} (1 key(s): {trust.key_ids[0]})" in line
    assert keys.public_key.exists()
    assert "every signed bundle is refused" in ready_line("/model_manager", None, allow_unsigned=False)
    assert "unsigned bundles accepted" in ready_line("/model_manager", None, allow_unsigned=True)


def test_feedback_goes_out_when_stage_or_wording_changes_or_progress_moves_a_step():
    gate = FeedbackGate(step=0.1, clock=lambda: 0.0)
    sent = [gate.changed(*update) for update in [
        ("probation", 0.00, "warming_up, 0/0 frames answered"), ("probation", 0.02, "warming_up, 1/1 frames answered"),
        ("probation", 0.09, "warming_up, 9/9 frames answered"), ("probation", 0.10, "healthy, 10/10 frames answered"),
        ("probation", 0.15, "healthy, 15/15 frames answered"), ("probation", 0.20, "healthy, 20/20 frames answered"),
        ("probation", 0.21, "unhealthy, 20/21 frames answered (NaN)"), ("swap", 0.21, "loading"),
        ("swap", 0.99, "loading"), ("swap", 1.0, "loading"), ("swap", 1.0, "loading")]]
    assert sent == [True, False, False, True, False, True, True, True, True, True, False]


def test_counts_alone_go_out_again_after_the_refresh_interval_so_a_long_stage_shows_them_moving():
    now = [0.0]
    gate = FeedbackGate(step=0.1, refresh_s=2.0, clock=lambda: now[0])
    assert gate.changed("shadow", 0.0, "shadow: 0 frames judged")
    now[0] = 1.0
    assert not gate.changed("shadow", 0.001, "shadow: 3 frames judged")
    now[0] = 2.5
    assert gate.changed("shadow", 0.002, "shadow: 6 frames judged")
    now[0] = 9.0
    assert not gate.changed("shadow", 0.002, "shadow: 6 frames judged")  # nothing new, however long
