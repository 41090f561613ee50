"""`rmd robot` without a robot: the missing-ROS line, usage errors, the status dict, the stage bars."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from robot_model_deployer.msg import DeploymentStatus, ModelInfo
from robot_model_deployer.robot.command import StageBars
from robot_model_deployer.robot.main import main
from robot_model_deployer.robot.views import status_dict, status_lines


def test_without_rclpy_it_says_so_in_one_line_and_exits_2() -> None:
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from robot_model_deployer.robot.main import main\n"
            "sys.exit(main(['robot', 'status']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs ROS 2" in lines[0] and "source scripts/env.sh" in lines[0], done.stderr


def test_the_other_command_groups_still_run_without_rclpy(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from robot_model_deployer.robot.main import main\n"
            f"sys.exit(main(['keys', 'generate', '--out', {str(tmp_path)!r}, '--name', 'k']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k.pub").is_file()


@pytest.mark.parametrize("args, says", [
    (["robot", "deploy"], "give either PATH_ON_ROBOT or --upload-id"),
    (["robot", "deploy", "/x.tar", "--upload-id", "abc"], "give either PATH_ON_ROBOT or --upload-id"),
    (["robot", "push", "/nonexistent/b.tar"], "is not a file"),
])
def test_usage_errors_exit_2_before_any_ros(args: list[str], says: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    assert says in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    for args in (["robot", "--timeout", "-1", "status"], ["robot", "deploy", "--until", "soon", "x"], ["robot"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2


def test_status_json_says_what_a_script_needs() -> None:
    status = DeploymentStatus(active=ModelInfo(name="m", version="1.0.0"), stage="probation",
                              candidate=ModelInfo(name="m", version="2.0.0"), message="watching",
                              last_outcome="rolled_back", last_version="m@1.5.0", last_reason="NaN")
    view = status_dict(status)
    assert view["active"]["ref"] == "m@1.0.0" and view["previous"] is None
    assert view["deployment"] == {"stage": "probation", "message": "watching"}
    assert view["last"] == {"outcome": "rolled_back", "version": "m@1.5.0", "reason": "NaN"}
    assert "running   m@2.0.0: probation: watching" in status_lines(view)
    assert status_dict(DeploymentStatus(stage="failed"))["deployment"] is None


def test_stage_bars_print_one_bar_per_stage_and_its_message() -> None:
    stream = io.StringIO()
    bars = StageBars("b.tar", stream)
    bars("upload", 0.0, "")
    bars("upload", 1.0, "")
    bars("verify", 0.0, "verifying b.tar")
    bars("shadow", 0.5, "15/30 frames")
    assert stream.getvalue().splitlines() == ["upload b.tar   0%", "upload b.tar 100%", "verify: verifying b.tar",
                                              "deploy verify   0%", "shadow: 15/30 frames", "deploy shadow  50%"]
