"""The rmd-model update module's states against a fake manager (the real one: test/ros/test_mender_rollout.py).

The fake keeps what the manager's status says (active, previous, candidate,
stage, last outcome) and moves it as a deployment would, so each state is
checked for what it asks the robot and what it answers Mender.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.fleet.identity import BundleIdentity, identify_bundle
from robot_model_deployer.fleet.mender_module import STATE_LOG, main
from robot_model_deployer.fleet.robot_cli import RobotReply, RobotUnreachable
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle

OLD = {"name": "colour_classifier", "version": "1.0.0", "model_sha256": "0" * 64}


class FakeRobot:
    """A manager's status that a deployment moves; ``script`` runs one step per status call."""

    def __init__(self, active: dict[str, Any] | None = OLD) -> None:
        self.active, self.previous, self.candidate = active, None, None
        self.stage, self.message, self.health = "idle", "", ""
        self.last = {"outcome": "", "version": "", "reason": ""}
        self.calls: list[str] = []
        self.refuse = ""
        self.script: list[Callable[[], None]] = []

    def status(self) -> dict[str, Any]:
        self.calls.append("status")
        if self.script:
            self.script.pop(0)()
        deployment = {"stage": self.stage, "message": self.message} if self.stage not in ("idle", "failed") else None
        return {"active": self.active, "previous": self.previous, "candidate": self.candidate, "stage": self.stage,
                "message": self.message, "health": self.health, "deployment": deployment, "last": dict(self.last)}

    def deploy(self, bundle: Path) -> RobotReply:
        self.calls.append(f"deploy {bundle.name}")
        identity = identify_bundle(bundle)
        model = {"name": identity.name, "version": identity.version, "model_sha256": identity.model_sha256}
        if self.refuse:
            self.stage, self.last = "failed", {"outcome": "refused", "version": identity.ref, "reason": self.refuse}
            return RobotReply(False, self.refuse)
        self.previous, self.active, self.candidate, self.stage = self.active, model, model, "probation"
        return RobotReply(True, f"{identity.ref} is live, probation runs")

    def end_probation(self, passed: bool, reason: str = "") -> None:
        ref = f"{self.candidate['name']}@{self.candidate['version']}"
        if passed:
            self.health, self.last = "probation: passed", {"outcome": "deployed", "version": ref, "reason": ""}
        else:
            self.active, self.previous = self.previous, self.active
            self.last = {"outcome": "rolled_back", "version": ref, "reason": reason}
        self.candidate, self.stage = None, "idle"

    def rollback(self, reason: str) -> RobotReply:
        self.calls.append("rollback")
        assert reason == "Mender rolls back artifact colour_classifier-2.0.0"
        self.active, self.previous = self.previous, self.active
        return RobotReply(True, "rolled back")

    def cancel(self) -> RobotReply:
        self.calls.append("cancel")
        self.script.append(lambda: self.end_probation(False, "cancelled by the caller"))
        return RobotReply(True, "cancel requested")

    @property
    def actions(self) -> list[str]:
        return [call for call in self.calls if call != "status"]


def _bundle(tmp_path: Path, version: str = "2.0.0") -> Path:
    """A signed colour-classifier bundle .tar."""
    key = generate_keypair(out_dir=tmp_path / "keys", name="k").private_key
    source = write_bundle(tmp_path / "b", colour_classifier(), classifier_manifest(version=version))
    output = tmp_path / "b.tar"
    create_bundle(source=source, output=output)
    sign_bundle(bundle=output, key=key)
    return output


def _tree(tmp_path: Path, bundle_sha256: str | None, artifact: str = "colour_classifier-2.0.0",
          current: str = "unprovisioned") -> Path:
    tree = tmp_path / "tree"
    (tree / "header").mkdir(parents=True, exist_ok=True)
    (tree / "header" / "artifact_name").write_text(artifact)
    meta = {"bundle_sha256": bundle_sha256} if bundle_sha256 else None
    (tree / "header" / "meta-data").write_text(json.dumps(meta))
    (tree / "current_artifact_name").write_text(current)
    return tree


class Setup:
    def __init__(self, tmp_path: Path, robot: FakeRobot, current: str = "unprovisioned") -> None:
        self.bundle = _bundle(tmp_path)
        self.identity: BundleIdentity = identify_bundle(self.bundle)
        self.model = {"name": self.identity.name, "version": self.identity.version,
                      "model_sha256": self.identity.model_sha256}
        self.spool = tmp_path / "spool"
        self.spool.mkdir()
        self.tree = _tree(tmp_path, self.identity.bundle_sha256, current=current)
        self.robot = robot
        self.environ = {"RMD_MENDER_SPOOL": str(self.spool), "RMD_MENDER_POLL": "0.001"}

    def spooled(self) -> Path:
        spooled = self.spool / f"{self.identity.bundle_sha256}.tar"
        spooled.write_bytes(self.bundle.read_bytes())
        return spooled

    def run(self, state: str) -> int:
        return main([state, str(self.tree)], self.environ, self.robot)


@pytest.fixture
def robot() -> FakeRobot:
    return FakeRobot()


@pytest.mark.parametrize("state, answer", [("SupportsRollback", "Yes"), ("NeedsArtifactReboot", "No")])
def test_queries_answer_rollback_yes_and_reboot_no(state: str, answer: str, capsys: pytest.CaptureFixture) -> None:
    assert main([state, "/nonexistent"], {}, FakeRobot()) == 0
    assert capsys.readouterr().out == f"{answer}\n"


def test_states_it_has_no_work_in_succeed_and_touch_nothing(tmp_path: Path, robot: FakeRobot) -> None:
    setup = Setup(tmp_path, robot)
    for state in ("ArtifactReboot", "ArtifactVerifyReboot", "SupportsAugmentedArtifacts", "ArtifactFailure"):
        assert setup.run(state) == 0
    assert robot.calls == []


def _feed_streams(tree: Path, streams: list[tuple[str, bytes]]) -> threading.Thread:
    """Play Mender's part of the Download protocol: stream-next names each FIFO, then an empty line."""
    os.mkfifo(tree / "stream-next")
    (tree / "streams").mkdir()

    def feed() -> None:
        for name, data in streams:
            os.mkfifo(tree / "streams" / name)
            with open(tree / "stream-next", "w") as announce:
                announce.write(f"streams/{name}\n")
            with open(tree / "streams" / name, "wb") as stream:
                stream.write(data)
        with open(tree / "stream-next", "w"):
            pass

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_download_keeps_the_bundle_in_the_spool_named_by_its_sha256(tmp_path: Path, robot: FakeRobot) -> None:
    setup = Setup(tmp_path, robot)
    feeder = _feed_streams(setup.tree, [("b.tar", setup.bundle.read_bytes())])
    assert setup.run("Download") == 0
    feeder.join(5.0)
    kept = setup.spool / f"{setup.identity.bundle_sha256}.tar"
    assert kept.read_bytes() == setup.bundle.read_bytes()
    assert kept.stat().st_mode & 0o777 == 0o644
    assert robot.calls == [], "Download must not deploy"
    log = [json.loads(line) for line in (setup.spool / STATE_LOG).read_text().splitlines()]
    assert log[-1]["state"] == "Download" and log[-1]["exit"] == 0
    assert log[-1]["artifact"] == "colour_classifier-2.0.0"
    assert log[-1]["bundle_sha256"] == setup.identity.bundle_sha256


def test_download_refuses_a_bundle_whose_sha256_is_not_the_artifacts(tmp_path: Path, robot: FakeRobot,
                                                                     capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    feeder = _feed_streams(setup.tree, [("b.tar", setup.bundle.read_bytes() + b"tampered")])
    assert setup.run("Download") == 1
    feeder.join(5.0)
    assert "its meta-data says" in capsys.readouterr().err
    assert list(setup.spool.glob("*.tar*")) == [], "a tampered bundle was kept"


def test_download_refuses_two_files_and_an_artifact_without_the_bundle_sha256(tmp_path: Path, robot: FakeRobot,
                                                                             capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    feeder = _feed_streams(setup.tree, [("b.tar", setup.bundle.read_bytes()), ("c.tar", b"more")])
    assert setup.run("Download") == 1
    feeder.join(5.0)
    assert "more than one file" in capsys.readouterr().err
    setup.tree = _tree(tmp_path / "other", None)
    assert setup.run("Download") == 1
    assert "no bundle_sha256 in its meta-data: build it with `rmd mender artifact`" in capsys.readouterr().err


def test_install_deploys_the_spooled_bundle_and_returns_once_it_serves(tmp_path: Path, robot: FakeRobot,
                                                                       capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    spooled = setup.spooled()
    assert setup.run("ArtifactInstall") == 0
    assert robot.actions == [f"deploy {spooled.name}"]
    assert robot.active == setup.model and robot.stage == "probation"
    assert "colour_classifier@2.0.0 serves; probation runs until commit" in capsys.readouterr().err


def test_install_fails_when_the_robot_refuses_and_says_why(tmp_path: Path, robot: FakeRobot,
                                                           capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    setup.spooled()
    robot.refuse = "shadow: top-1 class agreement with the live model is 0.0%"
    assert setup.run("ArtifactInstall") == 1
    assert "the robot refused colour_classifier@2.0.0: shadow: top-1" in capsys.readouterr().err
    assert robot.active == OLD


def test_install_again_after_a_restart_waits_for_the_running_deployment_instead_of_starting_one(
        tmp_path: Path, robot: FakeRobot, capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    setup.spooled()
    robot.stage = "verify"  # the status names no candidate until the bundle is staged, then no sha256 until it serves

    def staged() -> None:
        robot.candidate, robot.stage = {**setup.model, "model_sha256": ""}, "shadow"

    def swapped() -> None:
        robot.previous, robot.active, robot.stage = robot.active, setup.model, "probation"

    robot.script = [lambda: None, staged, lambda: None, swapped]
    assert setup.run("ArtifactInstall") == 0
    assert "the deployment of colour_classifier@2.0.0 that was already running serves now (stage probation)" in \
        capsys.readouterr().err
    assert robot.actions == [], "a second deployment was started"
    assert robot.active == setup.model


def test_install_is_idempotent_when_the_bundle_already_serves(tmp_path: Path, robot: FakeRobot,
                                                              capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    setup.spooled()
    robot.active = setup.model
    assert setup.run("ArtifactInstall") == 0
    assert robot.actions == []
    assert "already serves: nothing to install" in capsys.readouterr().err


def test_a_bundle_of_the_same_version_with_another_model_is_not_this_one(tmp_path: Path, robot: FakeRobot) -> None:
    identity = identify_bundle(_bundle(tmp_path))
    model = {"name": identity.name, "version": identity.version, "model_sha256": identity.model_sha256}
    assert identity.matches(model) and identity.matches({**model, "model_sha256": ""})
    assert not identity.matches({**model, "model_sha256": "f" * 64})
    assert not identity.matches({**model, "version": "2.0.1"}) and not identity.matches(None)


def test_install_refuses_while_another_bundle_deploys(tmp_path: Path, robot: FakeRobot,
                                                      capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    setup.spooled()
    robot.candidate, robot.stage = {**OLD, "version": "3.0.0"}, "optimize"
    assert setup.run("ArtifactInstall") == 1
    assert robot.actions == []
    assert "busy deploying colour_classifier@3.0.0 (stage optimize); deploy this artifact again" in \
        capsys.readouterr().err


def test_install_without_its_spooled_bundle_fails_and_says_to_deploy_again(tmp_path: Path, robot: FakeRobot,
                                                                          capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    assert setup.run("ArtifactInstall") == 1
    assert "is missing from" in capsys.readouterr().err and robot.actions == []


def test_commit_waits_for_probation_and_succeeds_when_it_passes(tmp_path: Path, robot: FakeRobot) -> None:
    setup = Setup(tmp_path, robot)
    spooled = setup.spooled()
    robot.deploy(spooled)
    robot.script = [lambda: None, lambda: None, lambda: robot.end_probation(True)]
    assert setup.run("ArtifactCommit") == 0
    assert robot.calls.count("status") == 3 and robot.active == setup.model


def test_commit_fails_when_the_robot_rolled_the_model_back(tmp_path: Path, robot: FakeRobot,
                                                           capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    robot.deploy(setup.spooled())
    robot.script = [lambda: robot.end_probation(False, "2 of 30 outputs were NaN")]
    assert setup.run("ArtifactCommit") == 1
    err = capsys.readouterr().err
    assert "the robot rolled colour_classifier@2.0.0 back: rolled_back: 2 of 30 outputs were NaN" in err
    assert "colour_classifier@1.0.0 serves" in err


def test_rollback_after_the_robot_rolled_back_says_so_and_does_nothing(tmp_path: Path, robot: FakeRobot,
                                                                      capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    robot.deploy(setup.spooled())
    robot.end_probation(False, "NaN outputs")
    robot.calls.clear()
    for _ in range(2):
        assert setup.run("ArtifactRollback") == 0
        assert "already rolled back" in capsys.readouterr().err
    assert robot.actions == [] and robot.active == OLD


def test_rollback_restores_the_previous_model_once(tmp_path: Path, robot: FakeRobot,
                                                   capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    robot.deploy(setup.spooled())
    robot.end_probation(True)
    robot.calls.clear()
    assert setup.run("ArtifactRollback") == 0
    assert "rolled colour_classifier@2.0.0 back: colour_classifier@1.0.0 serves" in capsys.readouterr().err
    assert setup.run("ArtifactRollback") == 0  # run again (Mender restarted): nothing more happens
    assert "already rolled back" in capsys.readouterr().err
    assert robot.actions == ["rollback"] and robot.active == OLD


def test_rollback_cancels_a_deployment_still_running(tmp_path: Path, robot: FakeRobot) -> None:
    setup = Setup(tmp_path, robot)
    robot.deploy(setup.spooled())
    robot.calls.clear()
    assert setup.run("ArtifactRollback") == 0
    assert robot.actions == ["cancel"] and robot.active == OLD


def test_rollback_of_an_artifact_installed_again_leaves_it_serving(tmp_path: Path, robot: FakeRobot,
                                                                  capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot, current="colour_classifier-2.0.0")
    setup.spooled()
    robot.active = setup.model
    assert setup.run("ArtifactRollback") == 0
    assert robot.actions == [] and "served before this update and still does" in capsys.readouterr().err


def test_rollback_when_the_bundle_never_arrived_is_already_done(tmp_path: Path, robot: FakeRobot,
                                                                capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, robot)
    assert setup.run("ArtifactRollback") == 0
    assert "already rolled back: the bundle never reached the robot" in capsys.readouterr().err
    assert robot.calls == []


def test_cleanup_drops_the_spooled_bundle(tmp_path: Path, robot: FakeRobot) -> None:
    setup = Setup(tmp_path, robot)
    spooled = setup.spooled()
    assert setup.run("Cleanup") == 0 and not spooled.exists()
    assert setup.run("Cleanup") == 0


def test_an_unreachable_robot_fails_the_state_with_exit_2_and_says_what_to_check(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    class Unreachable(FakeRobot):
        def status(self) -> dict[str, Any]:
            raise RobotUnreachable("no manager answered within 30 s")

    setup = Setup(tmp_path, Unreachable())
    setup.spooled()
    assert setup.run("ArtifactInstall") == 2
    assert "could not reach the robot's manager: no manager answered within 30 s; check that it runs" in \
        capsys.readouterr().err


@pytest.mark.parametrize("environ, words", [({"RMD_ROBOT_TIMEOUT": "soon"}, "must be numbers"),
                                            ({"RMD_MENDER_SPOOL": "relative/dir"}, "an absolute path")])
def test_a_bad_setting_fails_with_what_to_fix(tmp_path: Path, environ: dict[str, str], words: str,
                                              capsys: pytest.CaptureFixture) -> None:
    setup = Setup(tmp_path, FakeRobot())
    setup.environ.update(environ)
    assert setup.run("ArtifactInstall") == 1
    err = capsys.readouterr().err
    assert words in err and "/etc/default/rmd-model" in err


SCRIPT = Path(__file__).resolve().parents[2] / "mender" / "rmd-model"


def test_the_shipped_script_runs_the_module_with_the_configured_python(tmp_path: Path) -> None:
    env = dict(os.environ, RMD_PYTHON=sys.executable, RMD_MODULE_DEFAULTS="/nonexistent")
    done = subprocess.run([str(SCRIPT), "SupportsRollback", str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "Yes\n"), done.stderr


def test_the_shipped_script_says_what_to_set_when_python_lacks_the_package(tmp_path: Path) -> None:
    isolated = tmp_path / "python"
    isolated.write_text(f"#!/bin/sh\nexec {sys.executable} -I \"$@\"\n")  # -I: no PYTHONPATH, no site-packages
    isolated.chmod(0o755)
    defaults = tmp_path / "defaults"
    defaults.write_text(f"RMD_PYTHON={isolated}\n")
    env = dict(os.environ, RMD_MODULE_DEFAULTS=str(defaults))
    done = subprocess.run([str(SCRIPT), "ArtifactInstall", str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "rmd-model: cannot import robot_model_deployer" in done.stderr
    assert "set RMD_ENV or RMD_PYTHON in /etc/default/rmd-model" in done.stderr
