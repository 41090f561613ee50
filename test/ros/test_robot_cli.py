"""`rmd robot` as a user runs it: a separate process talking to the real node graph over DDS.

Exit codes are the contract: 0 deployed or done, 1 refused by the robot,
2 could not reach it or usage error.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from robot_model_deployer.testing.models import colour_classifier
from robot_model_deployer.testing.robot_graph import QUICK_ACCEPTANCE, RobotGraph
from robot_model_deployer.testing.ros_graph import wait_for


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    graph = RobotGraph.start(tmp_path)
    yield graph
    graph.close()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(graph.logs())


def rmd(graph: RobotGraph, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_model_deployer.robot.main", "robot", *args],
                          env={**os.environ, "ROS_DOMAIN_ID": str(graph.domain)}, capture_output=True, text=True,
                          timeout=timeout)


def status(graph: RobotGraph) -> dict:
    done = rmd(graph, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_push_deploy_until_live_and_a_rollback_the_robot_did_itself(graph: RobotGraph) -> None:
    first = rmd(graph, "--timeout", "30", "push", str(graph.bundle("1.0.0")), "--deploy")
    assert first.returncode == 0, first.stderr
    assert "deployed: colour_classifier 1.0.0 is live" in first.stdout
    assert "upload bundle-1.0.0.tar 100%" in first.stderr and "deploy commit 100%" in first.stderr

    # Green frames: the candidate agrees in shadow; once it serves, red frames make it emit NaN.
    nan = graph.bundle("2.0.0", model=colour_classifier(nan_unless="green"),
                       acceptance={**QUICK_ACCEPTANCE, "probation_seconds": 15.0})
    graph.camera.colour = "green"
    live = rmd(graph, "push", str(nan), "--deploy", "--until", "live")
    assert live.returncode == 0, live.stderr
    assert "live: colour_classifier@2.0.0 is live; probation goes on" in live.stdout, live.stdout
    during = status(graph)  # probation (15 s) still runs after rmd returned
    assert during["active"]["version"] == "2.0.0" and during["deployment"]["stage"] == "probation", during
    graph.camera.colour = "red"
    wait_for(lambda: status(graph)["deployment"] is None, 60.0, "the deployment to end")
    after = status(graph)
    assert after["last"]["outcome"] == "rolled_back" and after["last"]["version"] == "colour_classifier@2.0.0"
    assert "NaN" in after["last"]["reason"], after["last"]
    assert after["active"]["version"] == "1.0.0" and after["previous"] is None, after

    listed = rmd(graph, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {(m["version"], m["slot"], m["bad"]) for m in json.loads(listed.stdout)} == {
        ("1.0.0", "active", False), ("2.0.0", "", True)}
    report = rmd(graph, "report", "colour_classifier@2.0.0")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["deployment"]["rolled_back"] is True


def test_the_robot_refusing_exits_1_and_says_why(graph: RobotGraph) -> None:
    unsigned = rmd(graph, "push", str(graph.bundle("1.0.0", signed=False)), "--deploy")
    assert unsigned.returncode == 1, unsigned.stderr
    assert "refused" in unsigned.stderr and "sign" in unsigned.stderr, unsigned.stderr
    assert "the live model is unchanged" in unsigned.stderr
    nothing = rmd(graph, "rollback")
    assert nothing.returncode == 1 and "no previous version" in nothing.stderr, nothing.stderr
    unknown = rmd(graph, "report", "9.9.9")
    assert unknown.returncode == 1 and "rmd robot list" in unknown.stderr, unknown.stderr
    idle = rmd(graph, "cancel")
    assert idle.returncode == 0 and "nothing to cancel" in idle.stdout, idle.stderr


def test_a_manual_rollback_and_a_cancel(graph: RobotGraph) -> None:
    assert rmd(graph, "push", str(graph.bundle("1.0.0")), "--deploy").returncode == 0
    assert rmd(graph, "push", str(graph.bundle("2.0.0")), "--deploy").returncode == 0
    back = rmd(graph, "rollback", "--reason", "operator said so")
    assert back.returncode == 0, back.stderr
    assert status(graph)["last"]["outcome"] == "rolled_back"
    assert status(graph)["active"]["version"] == "1.0.0"

    slow = graph.bundle("3.0.0", acceptance={**QUICK_ACCEPTANCE, "shadow_frames": 3000})
    deploying = subprocess.Popen([sys.executable, "-m", "robot_model_deployer.robot.main", "robot", "push",
                                  str(slow), "--deploy"], env={**os.environ, "ROS_DOMAIN_ID": str(graph.domain)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (status(graph)["deployment"] or {}).get("stage") == "shadow", 60.0, "the shadow stage")
        cancel = rmd(graph, "cancel")
        assert cancel.returncode == 0 and "cancel sent" in cancel.stdout, cancel.stderr
        _, stderr = deploying.communicate(timeout=60.0)
    finally:
        deploying.kill()
    assert deploying.returncode == 1 and "cancelled" in stderr, stderr
    assert status(graph)["last"]["outcome"] == "cancelled" and status(graph)["active"]["version"] == "1.0.0"


def test_watch_follows_the_status_until_ctrl_c(graph: RobotGraph) -> None:
    watch = subprocess.Popen([sys.executable, "-m", "robot_model_deployer.robot.main", "robot", "status", "--watch"],
                             env={**os.environ, "ROS_DOMAIN_ID": str(graph.domain)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        assert rmd(graph, "push", str(graph.bundle("1.0.0")), "--deploy").returncode == 0
        # Whether it saw the idle state first depends on how fast it started; it must follow it to the end.
        wait_for(lambda: any("active    colour_classifier@1.0.0" in line for line in list(lines)), 30.0,
                 "the watch to show the deployed version")
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=20.0)
    finally:
        watch.kill()
    assert watch.returncode == 0


def test_unreachable_robot_or_bad_usage_exits_2(graph: RobotGraph, tmp_path: Path) -> None:
    away = rmd(graph, "--namespace", "elsewhere", "--timeout", "2", "status")
    assert away.returncode == 2 and "cannot reach the robot" in away.stderr and "--namespace" in away.stderr
    for args, says in ((["deploy"], "give either PATH_ON_ROBOT or --upload-id"),
                       (["push", str(tmp_path / "missing.tar")], "is not a file"),
                       (["--timeout", "0", "status"], "must be a number of seconds above 0"),
                       (["frobnicate"], "invalid choice")):
        done = rmd(graph, *args)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
