"""Over real DDS: status, ListModels and the rollback service agree after an automatic rollback, and a
restarted manager never serves the previous version, not even for a moment.

The graph and camera are those of test_deploy_multiprocess.py (one process per node).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from robot_model_deployer.action import Deploy
from robot_model_deployer.msg import DeploymentStatus
from robot_model_deployer.srv import DeployModel, ListModels, Rollback
from robot_model_deployer.testing.models import colour_classifier
from robot_model_deployer.testing.ros_graph import NodeProcess, wait_for
from test_deploy_multiprocess import FAST_ACCEPTANCE, MANAGER, Camera, Graph, _graph, _longest_unanswered, _serving


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    yield from _graph(tmp_path, request)


def _listed(graph: Graph) -> dict[str, tuple[str, bool, str, str]]:
    """version -> (slot, bad, bad_reason, model_sha256) as ListModels answers."""
    listed = graph.client.call(ListModels, f"{MANAGER}/list_models", ListModels.Request(), query=True)
    return {m.version: (slot, m.bad, m.bad_reason, m.model_sha256) for m, slot in zip(listed.models, listed.slots)}


def _rollback(graph: Graph, reason: str) -> Rollback.Response:
    return graph.client.call(Rollback, f"{MANAGER}/rollback", Rollback.Request(reason=reason))


def _rolled_back_in_probation(graph: Graph, camera: Camera, version: str) -> DeployModel.Response:
    """Deploy a candidate that agrees on green frames in shadow and emits NaN on red ones once live."""
    bundle = graph.bundle(f"nan-{version}", version=version, model=colour_classifier(nan_unless="green"))
    camera.colour = "green"
    statuses = len(graph.statuses)
    outcome: dict[str, DeployModel.Response] = {}
    deploying = threading.Thread(target=lambda: outcome.setdefault("r", graph.deploy(bundle)))
    deploying.start()
    wait_for(lambda: any(s.stage == "probation" for s in graph.statuses[statuses:]), 60.0, "probation to start")
    camera.colour = "red"
    deploying.join(60.0)
    response = outcome["r"]
    assert not response.accepted and "rolled back" in response.reason, response.reason
    return response


def test_after_an_automatic_rollback_status_list_models_and_rollback_agree(graph: Graph) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    with Camera(graph) as camera:
        _serving(graph, "1.0.0")
        # 1. The first upgrade fails probation: there is no previous, and everything says so.
        _rolled_back_in_probation(graph, camera, "2.0.0")
        status = graph.status()
        assert (status.active.version, status.previous.version, status.standby.version) == ("1.0.0", "", "")
        assert status.health == "" and status.stage == "failed"
        refused = _rollback(graph, "is there a previous?")
        assert not refused.success and "no previous" in refused.message

        # 2. A good 3.0.0 commits; 4.0.0 fails probation. previous is 1.0.0, warm again on the standby.
        camera.colour = "red"
        assert graph.deploy(graph.bundle("v3", version="3.0.0")).accepted
        _rolled_back_in_probation(graph, camera, "4.0.0")
        _serving(graph, "3.0.0")
        status = graph.status()
        assert (status.active.version, status.previous.version, status.standby.version) == \
            ("3.0.0", "1.0.0", "1.0.0")
        assert status.health == "" and "NaN" in status.message
        listed = _listed(graph)
        assert {v: (slot, bad) for v, (slot, bad, _, _) in listed.items()} == {
            "1.0.0": ("previous", False), "2.0.0": ("", True), "3.0.0": ("active", False), "4.0.0": ("", True)}
        assert all("NaN" in listed[v][2] for v in ("2.0.0", "4.0.0"))
        assert all(len(sha) == 64 for _, _, _, sha in listed.values())

        # 3. The rollback the status promises works, and serves what status called previous.
        start = time.monotonic()
        rolled = _rollback(graph, "operator")
        assert rolled.success and rolled.active.version == "1.0.0", rolled.message
        _serving(graph, "1.0.0")
        time.sleep(0.5)
        since = graph.results_since(start)
    assert {r.model_version for r in since} <= {"1.0.0", "3.0.0"}, "a rolled-back candidate served again"
    status = graph.status()
    assert (status.active.version, status.previous.version, status.standby.version) == ("1.0.0", "3.0.0", "3.0.0")


def test_a_restarted_manager_serves_the_active_version_and_never_the_previous(graph: Graph) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    v2 = graph.bundle("v2", version="2.0.0")
    manager = next(p for p in graph.processes if p.name == "model_manager")
    store = graph.work.parent / "store"
    restarted_logs = graph.work.parent / "restarted"
    restarted_logs.mkdir()
    with Camera(graph) as camera:
        _serving(graph, "1.0.0")
        assert graph.deploy(v2).accepted
        _serving(graph, "2.0.0")
        start = time.monotonic()
        manager.stop()
        statuses = len(graph.statuses)
        graph.processes.append(NodeProcess("manager_node", "model_manager", _domain(graph), restarted_logs,
                                           {"store_dir": str(store), "trust_dir": str(graph.keys)}))

        def resumed() -> list[DeploymentStatus]:
            return [s for s in graph.statuses[statuses:] if s.standby.version == "1.0.0"]

        wait_for(lambda: resumed(), 60.0, "the restarted manager to serve 2.0.0 with 1.0.0 warm")
        time.sleep(1.0)  # longer than _longest_unanswered's settle time
        during, gap = graph.results_since(start), _longest_unanswered(camera, graph, start)
    assert {r.model_version for r in during} == {"2.0.0"}, "the previous version served during the restart"
    assert gap < 0.25, f"results stopped for {gap:.2f} s during the restart"
    status = resumed()[-1]
    assert (status.active.version, status.previous.version, status.stage) == ("2.0.0", "1.0.0", "idle")
    assert "serving colour_classifier 2.0.0 from the store" in status.message
    rolled = _rollback(graph, "after the restart")
    assert rolled.success and rolled.active.version == "1.0.0", rolled.message


def test_a_cancelled_deployment_is_reported_as_cancelled_not_failed(graph: Graph) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    client = graph.client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
    assert client.wait_for_server(timeout_sec=20.0)
    long_shadow = graph.bundle("v2", version="2.0.0", acceptance={"shadow_frames": 100000})
    feedback: list[Deploy.Feedback] = []
    with Camera(graph):
        _serving(graph, "1.0.0")
        sent = client.send_goal_async(Deploy.Goal(bundle_path=str(long_shadow)),
                                      feedback_callback=lambda m: feedback.append(m.feedback))
        wait_for(lambda: sent.done(), 20.0, "the goal to be accepted")
        wait_for(lambda: any(f.stage == "shadow" for f in feedback), 30.0, "shadow stage feedback")
        cancelled = sent.result().cancel_goal_async()
        wait_for(lambda: cancelled.done(), 20.0, "the cancel answer")
        result = sent.result().get_result_async()
        wait_for(lambda: result.done(), 30.0, "the action result")
    status = graph.status()
    assert (status.stage, status.active.version, status.candidate.version) == ("cancelled", "1.0.0", ""), status
    assert "cancelled" in status.message and status.health == ""
    assert _listed(graph)["2.0.0"][:2] == ("", False)  # not marked bad: it can be deployed again


def _domain(graph: Graph) -> int:
    return graph.client.context.get_domain_id()


def _deploy_in_background(graph: Graph, bundle: Path) -> tuple[threading.Thread, dict[str, DeployModel.Response]]:
    outcome: dict[str, DeployModel.Response] = {}
    deploying = threading.Thread(target=lambda: outcome.setdefault("r", graph.deploy(bundle)))
    deploying.start()
    return deploying, outcome


def test_rollback_during_a_deployment_cancels_it_and_restores_what_status_promised(graph: Graph) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    with Camera(graph):
        _serving(graph, "1.0.0")
        assert graph.deploy(graph.bundle("v2", version="2.0.0")).accepted
        _serving(graph, "2.0.0")
        # On probation the candidate serves and previous is what a rollback serves: 2.0.0, the store's active.
        long_probation = {"probation_seconds": 120.0}
        statuses = len(graph.statuses)
        deploying, outcome = _deploy_in_background(
            graph, graph.bundle("v3", version="3.0.0", acceptance={**FAST_ACCEPTANCE, **long_probation}))
        wait_for(lambda: any(s.stage == "probation" for s in graph.statuses[statuses:]), 60.0, "probation")
        status = graph.status()
        assert (status.active.version, status.candidate.version, status.previous.version) == \
            ("3.0.0", "3.0.0", "2.0.0")
        rolled = _rollback(graph, "operator, during probation")
        assert rolled.success and rolled.active.version == "2.0.0", rolled.message
        deploying.join(30.0)
        assert not outcome["r"].accepted and "rolled back" in outcome["r"].reason
        _serving(graph, "2.0.0")
        status = graph.status()
        assert (status.stage, status.active.version, status.previous.version) == ("cancelled", "2.0.0", "1.0.0")
        assert _listed(graph)["3.0.0"][:2] == ("", False)  # cancelled, not judged bad

        # In shadow nothing was swapped yet: the deployment stops and the rollback goes to the previous, 1.0.0.
        statuses = len(graph.statuses)
        deploying, outcome = _deploy_in_background(
            graph, graph.bundle("v4", version="4.0.0", acceptance={**FAST_ACCEPTANCE, "shadow_frames": 100000}))
        wait_for(lambda: any(s.stage == "shadow" for s in graph.statuses[statuses:]), 60.0, "shadow")
        rolled = _rollback(graph, "operator, during shadow")
        assert rolled.success and rolled.active.version == "1.0.0", rolled.message
        deploying.join(30.0)
        assert not outcome["r"].accepted
        _serving(graph, "1.0.0")
