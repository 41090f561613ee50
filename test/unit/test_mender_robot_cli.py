"""The update module's view of ``rmd robot``: exit codes 0, 1 and 2 and ``status --json`` mapped to answers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from robot_model_deployer.fleet.robot_cli import RobotCli, RobotUnreachable

# Stands in for `rmd`: prints its arguments as JSON, then what RMD_FAKE_* ask for.
FAKE = """
import json, os, sys
args = sys.argv[1:]
out, err, code = os.environ.get("RMD_FAKE_OUT", ""), os.environ.get("RMD_FAKE_ERR", ""), os.environ["RMD_FAKE_CODE"]
print(out or json.dumps(args)); print("verify: checking", file=sys.stderr); print(err, file=sys.stderr)
sys.exit(int(code))
"""


def _robot(monkeypatch: pytest.MonkeyPatch, code: int, out: str = "", err: str = "", **options) -> RobotCli:
    monkeypatch.setenv("RMD_FAKE_CODE", str(code))
    monkeypatch.setenv("RMD_FAKE_OUT", out)
    monkeypatch.setenv("RMD_FAKE_ERR", err)
    return RobotCli(command=(sys.executable, "-c", FAKE), **options)


def test_commands_carry_namespace_timeout_and_deploy_until_live(monkeypatch: pytest.MonkeyPatch) -> None:
    robot = _robot(monkeypatch, 0, namespace="amr7", timeout=12.5)
    assert robot.status() == ["robot", "--timeout", "12.5", "--namespace", "amr7", "status", "--json"]
    reply = robot.deploy(Path("/var/lib/rmd-model/x.tar"))
    assert reply.done
    assert json.loads(reply.message) == ["robot", "--timeout", "12.5", "--namespace", "amr7", "deploy",
                                         "/var/lib/rmd-model/x.tar", "--until", "live"]
    assert json.loads(robot.rollback("Mender rolls back a").message)[-3:] == ["rollback", "--reason",
                                                                            "Mender rolls back a"]


def test_exit_1_is_a_refusal_with_the_robots_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = _robot(monkeypatch, 1, err="rmd robot: refused: shadow: agreement 0.2").deploy(Path("/x.tar"))
    assert not reply.done and reply.message == "rmd robot: refused: shadow: agreement 0.2"


@pytest.mark.parametrize("code, out, words", [(2, "", "exited 2: no manager answered"),
                                              (0, "not json", "printed no JSON"),
                                              (1, "", "status exited 1")])
def test_status_that_is_not_an_answer_is_unreachable(monkeypatch: pytest.MonkeyPatch, code: int, out: str,
                                                     words: str) -> None:
    robot = _robot(monkeypatch, code, out=out, err="no manager answered")
    with pytest.raises(RobotUnreachable, match=words):
        robot.status()


def test_a_missing_command_is_unreachable() -> None:
    with pytest.raises(RobotUnreachable, match="could not run /no/such/rmd"):
        RobotCli(command=("/no/such/rmd",)).cancel()
