"""Fleet rollout for real: the Mender client (standalone) installs rmd-model artifacts on the node graph.

The graph is test_deploy_multiprocess's (manager, two perception nodes and
the shadow node in their own processes over DDS, a camera in the test
process). ``mender --data DIR install | commit | rollback`` runs the
installed /usr/share/mender/modules/v3/rmd-model, which reaches the manager
through ``rmd robot`` on the graph's domain. Each scenario prints the Mender
states the module ran (its states.log), in order, with their exit codes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from robot_model_deployer.bundle.pack import sign_bundle
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.fleet.artifact import build_artifact
from robot_model_deployer.fleet.mender_module import STATE_LOG
from robot_model_deployer.srv import ListModels
from robot_model_deployer.testing.models import colour_classifier
from robot_model_deployer.testing.ros_graph import wait_for
from test_deploy_multiprocess import FAST_ACCEPTANCE, MANAGER, Camera, Graph, _graph, _serving

MODULE = Path("/usr/share/mender/modules/v3/rmd-model")
SHIPPED_MODULE = Path(__file__).resolve().parents[2] / "mender" / "rmd-model"
DEVICE_TYPE = "rmd-test-robot"
INSTALL_HINT = ("run scripts/setup.sh as root, or: sudo apt-get update && sudo apt-get install "
                "--no-install-recommends mender-client mender-artifact && sudo bash scripts/setup_mender.sh")


def _missing() -> str:
    if shutil.which("mender") is None or shutil.which("mender-artifact") is None:
        return "mender-client and mender-artifact are not installed"
    if not MODULE.is_file() or MODULE.read_bytes() != SHIPPED_MODULE.read_bytes():
        return f"{MODULE} is missing or not this checkout's mender/rmd-model"
    if not Path("/etc/mender/artifact_info").is_file():
        return "/etc/mender/artifact_info is missing (a standalone Mender client needs it)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"{_missing()}: {INSTALL_HINT}")


def _ec_key(directory: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 key pair in the PEM forms mender-artifact 3.9 reads."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True)
    private = ec.generate_private_key(ec.SECP256R1())
    key, pub = directory / "mender.key", directory / "mender.pub"
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


@dataclass
class Mender:
    """A standalone Mender client for the graph's robot: its data directory, config and artifact key."""

    graph: Graph
    data: Path
    config: Path
    key: Path
    spool: Path
    env: dict[str, str]
    _seen: int = 0

    def artifact(self, bundle: Path, key: Path | None = None) -> Path:
        output = bundle.with_suffix(".mender")
        build_artifact(bundle=bundle, output=output, device_types=[DEVICE_TYPE], key=key or self.key)
        return output

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        command = ["mender", "--no-syslog", "--config", str(self.config), "--fallback-config", "/nonexistent",
                   "--data", str(self.data), *args]
        start = time.monotonic()
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=400)
        print(f"mender {args[0]}: exit {done.returncode} after {time.monotonic() - start:.1f} s")
        return done

    def installed_artifact(self) -> str:
        return self("show-artifact").stdout.strip()

    def states(self) -> list[dict]:
        """The states the module ran since the last call, in order (its states.log)."""
        log = self.spool / STATE_LOG
        lines = log.read_text().splitlines() if log.exists() else []
        new, self._seen = lines[self._seen:], len(lines)
        records = [json.loads(line) for line in new]
        print("mender states: " + " -> ".join(f"{r['state']}({r['exit']})" for r in records))
        return records


def _sequence(records: list[dict]) -> list[str]:
    return [r["state"] for r in records]


def _message(records: list[dict], state: str) -> str:
    return next(r["message"] for r in records if r["state"] == state)


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    yield from _graph(tmp_path, request)


@pytest.fixture
def mender(graph: Graph, tmp_path: Path) -> Mender:
    data = tmp_path / "mender-data"
    data.mkdir()
    (data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
    key, pub = _ec_key(tmp_path / "mender-keys")
    config = tmp_path / "mender.conf"
    config.write_text(json.dumps({"ArtifactVerifyKey": str(pub), "ModuleTimeoutSeconds": 300}))
    spool = tmp_path / "spool"
    env = dict(os.environ, ROS_DOMAIN_ID=str(graph.client.context.get_domain_id()),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", RMD_PYTHON=sys.executable, RMD_MENDER_SPOOL=str(spool),
               RMD_MODULE_DEFAULTS="/nonexistent", RMD_ROBOT_TIMEOUT="20", RMD_MENDER_POLL="0.3")
    return Mender(graph, data, config, key, spool, env)


def _models(graph: Graph) -> set[tuple[str, str]]:
    listed = graph.client.call(ListModels, f"{MANAGER}/list_models", ListModels.Request(), query=True)
    return {(m.version, slot) for m, slot in zip(listed.models, listed.slots)}


def _deployments_started(graph: Graph) -> int:
    """How many deployments the status topic showed starting (each begins with verify)."""
    stages = [s.stage for s in list(graph.statuses)]
    return sum(1 for before, now in zip(["idle"] + stages, stages) if now == "verify" and before != "verify")


def test_a_good_model_is_committed_and_installing_it_again_changes_nothing(graph: Graph, mender: Mender) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    artifact = mender.artifact(graph.bundle("v2", version="2.0.0"))
    with Camera(graph):
        _serving(graph, "1.0.0")
        installed = mender("install", str(artifact))
        assert installed.returncode == 0, installed.stderr
        _serving(graph, "2.0.0")
        install_states = mender.states()
        committed = mender("commit")
        assert committed.returncode == 0, committed.stderr
        commit_states = mender.states()
    assert _sequence(install_states) == ["Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot"]
    assert all(r["exit"] == 0 for r in install_states + commit_states)
    assert _sequence(commit_states) == ["ArtifactCommit", "Cleanup"]
    assert "passed probation and is committed" in _message(commit_states, "ArtifactCommit")
    status = graph.status()
    assert (status.active.version, status.previous.version, status.stage) == ("2.0.0", "1.0.0", "idle")
    assert mender.installed_artifact() == "colour_classifier-2.0.0"
    assert not list(mender.spool.glob("*.tar")), "Cleanup left the spooled bundle"

    deployments = _deployments_started(graph)
    again = mender("install", str(artifact))
    assert again.returncode == 0, again.stderr
    assert mender("commit").returncode == 0
    states = mender.states()
    assert _sequence(states) == ["Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
                                 "ArtifactCommit", "Cleanup"]
    assert "already serves: nothing to install" in _message(states, "ArtifactInstall")
    assert _deployments_started(graph) == deployments, "installing the same artifact again deployed it again"
    assert graph.status().active.version == "2.0.0"
    assert mender.installed_artifact() == "colour_classifier-2.0.0"


def test_a_model_refused_in_shadow_fails_install_and_the_live_model_stays(graph: Graph, mender: Mender) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    artifact = mender.artifact(graph.bundle("wrong", version="2.0.0", model=colour_classifier(label_shift=1)))
    with Camera(graph):
        _serving(graph, "1.0.0")
        start = time.monotonic()
        installed = mender("install", str(artifact))
        during = graph.results_since(start)
    assert installed.returncode != 0
    states = mender.states()
    assert _sequence(states) == ["Download", "SupportsRollback", "ArtifactInstall", "SupportsRollback",
                                 "ArtifactRollback", "ArtifactFailure", "Cleanup"]
    install = next(r for r in states if r["state"] == "ArtifactInstall")
    assert install["exit"] == 1 and "the robot refused colour_classifier@2.0.0" in install["message"]
    assert "shadow" in install["message"] and "agreement" in install["message"], install["message"]
    assert "already rolled back" in _message(states, "ArtifactRollback")
    assert {r.model_version for r in during} == {"1.0.0"}, "the refused model served live"
    assert graph.status().active.version == "1.0.0"
    assert mender.installed_artifact() == "unprovisioned"


def test_a_model_failing_probation_fails_commit_and_mender_rolls_back(graph: Graph, mender: Mender) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    nan = graph.bundle("nan", version="2.0.0", model=colour_classifier(nan_unless="green"),
                       acceptance={**FAST_ACCEPTANCE, "probation_seconds": 8.0})
    artifact = mender.artifact(nan)
    with Camera(graph, colour="green") as camera:
        _serving(graph, "1.0.0")
        installed = mender("install", str(artifact))  # green frames: the candidate agrees in shadow
        assert installed.returncode == 0, installed.stderr
        install_states = mender.states()
        _serving(graph, "2.0.0")
        outcome: dict[str, subprocess.CompletedProcess] = {}
        committing = threading.Thread(target=lambda: outcome.setdefault("commit", mender("commit")))
        committing.start()
        camera.colour = "red"  # once live, red frames make it emit NaN
        committing.join(120.0)
        _serving(graph, "1.0.0")
    assert outcome["commit"].returncode != 0
    states = mender.states()
    assert _sequence(install_states) == ["Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot"]
    assert _sequence(states) == ["ArtifactCommit", "SupportsRollback", "ArtifactRollback", "ArtifactFailure",
                                 "Cleanup"]
    commit = states[0]
    assert commit["exit"] == 1 and "the robot rolled colour_classifier@2.0.0 back" in commit["message"]
    assert "NaN" in commit["message"], commit["message"]
    assert "already rolled back" in _message(states, "ArtifactRollback")
    status = graph.status()
    assert status.active.version == "1.0.0" and status.stage == "failed"  # rolled back in probation
    assert mender.installed_artifact() == "unprovisioned"


def test_an_unknown_mender_key_is_refused_by_mender_and_an_unknown_bundle_key_by_the_robot(
        graph: Graph, mender: Mender, tmp_path: Path) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    stranger_mender_key, _ = _ec_key(tmp_path / "stranger-mender")
    foreign_artifact = mender.artifact(graph.bundle("v2", version="2.0.0"), key=stranger_mender_key)
    stranger_bundle_key = generate_keypair(out_dir=tmp_path / "stranger-bundle", name="stranger").private_key
    foreign_bundle = graph.bundle("v3", version="3.0.0", sign=False)
    sign_bundle(bundle=foreign_bundle, key=stranger_bundle_key)
    foreign_bundle_artifact = mender.artifact(foreign_bundle)  # the right Mender key around it
    with Camera(graph):
        _serving(graph, "1.0.0")
        start = time.monotonic()
        refused_by_mender = mender("install", str(foreign_artifact))
        mender_states = mender.states()
        refused_by_robot = mender("install", str(foreign_bundle_artifact))
        robot_states = mender.states()
        during = graph.results_since(start)
    assert refused_by_mender.returncode != 0
    assert "signature" in refused_by_mender.stderr and "verification failed" in refused_by_mender.stderr
    assert mender_states == [], "a module state ran for an artifact Mender should have refused"
    assert refused_by_robot.returncode != 0
    install = next(r for r in robot_states if r["state"] == "ArtifactInstall")
    assert install["exit"] == 1 and "the robot refused colour_classifier@3.0.0" in install["message"]
    assert "trust" in install["message"], install["message"]
    assert _sequence(robot_states)[-3:] == ["ArtifactRollback", "ArtifactFailure", "Cleanup"]
    assert {r.model_version for r in during} == {"1.0.0"}
    assert _models(graph) == {("1.0.0", "active")}, "a refused bundle was installed"
    assert mender.installed_artifact() == "unprovisioned"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the module and its rmd robot child run in their own process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_crashed_mender_client_installs_again_without_a_second_deployment(graph: Graph, mender: Mender) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    long_shadow = graph.bundle("v2", version="2.0.0", acceptance={**FAST_ACCEPTANCE, "shadow_frames": 120})
    artifact = mender.artifact(long_shadow)
    command = ["mender", "--no-syslog", "--config", str(mender.config), "--fallback-config", "/nonexistent",
               "--data", str(mender.data), "install", str(artifact)]
    with Camera(graph):
        _serving(graph, "1.0.0")
        first = subprocess.Popen(command, env=mender.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: any(s.stage == "shadow" and s.candidate.version == "2.0.0" for s in graph.statuses), 120.0,
                 "the robot to shadow 2.0.0")
        # The client dies with its module and the module's rmd robot (as systemd would kill its cgroup).
        for pid in [first.pid, *_descendants(first.pid)]:
            os.kill(pid, signal.SIGKILL)
        first.wait()
        crashed = mender.states()
        assert graph.status().stage == "shadow", "the robot's deployment should outlive the client"
        again = mender("install", str(artifact))
        assert again.returncode == 0, again.stderr
        restarted = mender.states()
        committed = mender("commit")
        assert committed.returncode == 0, committed.stderr
        commit_states = mender.states()
    assert _sequence(crashed) == ["Download", "SupportsRollback"], "ArtifactInstall should not have logged an end"
    assert _sequence(restarted) == ["Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot"]
    assert "that was already running serves now" in _message(restarted, "ArtifactInstall")
    assert _sequence(commit_states) == ["ArtifactCommit", "Cleanup"]
    assert _deployments_started(graph) == 2, "v1 and one deployment of v2, not two"
    status = graph.status()
    assert (status.active.version, status.previous.version) == ("2.0.0", "1.0.0")
    assert mender.installed_artifact() == "colour_classifier-2.0.0"


def test_mender_rollback_during_probation_puts_the_previous_model_back(graph: Graph, mender: Mender) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    long_probation = graph.bundle("v2", version="2.0.0", acceptance={**FAST_ACCEPTANCE, "probation_seconds": 60.0})
    artifact = mender.artifact(long_probation)
    with Camera(graph):
        _serving(graph, "1.0.0")
        assert mender("install", str(artifact)).returncode == 0
        mender.states()
        _serving(graph, "2.0.0")
        rolled_back = mender("rollback")
        assert rolled_back.returncode == 0, rolled_back.stderr
        states = mender.states()
        _serving(graph, "1.0.0")
        again = mender("rollback")
    assert _sequence(states) == ["SupportsRollback", "ArtifactRollback", "Cleanup"]
    assert "cancelled colour_classifier@2.0.0; colour_classifier@1.0.0 serves" in _message(states, "ArtifactRollback")
    assert again.returncode == 2, "Mender has no update in progress after the rollback"
    assert mender.states() == []
    status = graph.status()
    assert status.active.version == "1.0.0" and status.stage == "cancelled"
    assert mender.installed_artifact() == "unprovisioned"
