"""The manager over real DDS when things go wrong: busy action goals, cancels, shutdown mid-deployment, and
start-up deployments that fail. Whatever happens the manager says why and keeps answering.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from robot_model_deployer.action import Deploy
from robot_model_deployer.bundle.filelist import build_file_list
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import TrustStore, generate_keypair, load_private_key, sign_file_list
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle
from robot_model_deployer.testing.ros_graph import wait_for
from test_deploy_multiprocess import MANAGER, Camera, Graph, _graph, _serving, graph  # noqa: F401

LONG_SHADOW = {"shadow_frames": 100000, "probation_seconds": 2.0, "latency_slack_ms": 20.0}


def _manager(graph: Graph):
    return next(p for p in graph.processes if p.name == "model_manager")


def _start_long_deployment(graph: Graph, client) -> tuple[object, list[Deploy.Feedback]]:
    """A Deploy goal for v2 whose shadow run never ends on its own; returns its handle once in shadow."""
    feedback: list[Deploy.Feedback] = []
    sent = client.send_goal_async(Deploy.Goal(bundle_path=str(graph.bundle("v2", version="2.0.0",
                                                                           acceptance=LONG_SHADOW))),
                                  feedback_callback=lambda m: feedback.append(m.feedback))
    wait_for(lambda: sent.done(), 20.0, "the goal to be answered")
    handle = sent.result()
    assert handle.accepted
    wait_for(lambda: any(f.stage == "shadow" for f in feedback), 30.0, "shadow stage feedback")
    return handle, feedback


def test_a_goal_while_busy_is_rejected_with_the_reason_in_status_and_cancel_stops_the_running_one(
        graph: Graph) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    client = graph.client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
    assert client.wait_for_server(timeout_sec=20.0)
    v3 = graph.bundle("v3", version="3.0.0")
    with Camera(graph):
        _serving(graph, "1.0.0")
        handle, _ = _start_long_deployment(graph, client)

        second = client.send_goal_async(Deploy.Goal(bundle_path=str(v3)))
        wait_for(lambda: second.done(), 20.0, "the second goal to be answered")
        assert not second.result().accepted
        wait_for(lambda: "already running" in graph.status().refused, 10.0, "the refusal in status")
        status = graph.status()
        assert "Deploy goal for" in status.refused and "v3.tar" in status.refused, status.refused
        assert status.stage == "shadow"
        assert "Deploy goal for" in _manager(graph).log() and "refused" in _manager(graph).log()

        started = time.monotonic()
        cancelled = handle.cancel_goal_async()
        wait_for(lambda: cancelled.done(), 20.0, "the cancel answer")
        result_future = handle.get_result_async()
        wait_for(lambda: result_future.done(), 30.0, "the action result")
        assert time.monotonic() - started < 5.0, "the cancel did not stop the shadow run promptly"
        answer = result_future.result()
        assert answer.status == 5  # action_msgs/GoalStatus.STATUS_CANCELED
        assert not answer.result.accepted and "cancelled" in answer.result.reason
        status = graph.status()
        assert status.active.version == "1.0.0" and status.candidate.name == ""
        # The next deployment clears the refusal and runs.
        outcome = graph.deploy(v3)
        assert outcome.accepted, outcome.reason
    assert graph.status().refused == ""


def test_shutting_the_manager_down_cancels_and_joins_a_running_deployment(graph: Graph, tmp_path: Path) -> None:
    assert graph.deploy(graph.bundle("v1")).accepted
    client = graph.client.action_client(Deploy, f"{MANAGER}/deploy_bundle")
    assert client.wait_for_server(timeout_sec=20.0)
    _start_long_deployment(graph, client)
    manager = _manager(graph)

    started = time.monotonic()
    manager.process.send_signal(signal.SIGINT)
    manager.process.wait(30.0)
    took = time.monotonic() - started

    log = manager.log()
    # Ctrl-C shuts the context down at once; whichever sees it first (the manager's shutdown poll, or a stage whose
    # call to another node fails for it), the deployment ends cancelled, never as a refusal of the model.
    assert "rejected" not in log and "Traceback" not in log, log[-3000:]
    assert took < 10.0, f"the manager took {took:.1f} s to stop"
    state = json.loads((tmp_path / "store" / "state.json").read_text())
    assert state["active"] == "colour_classifier@1.0.0" and state["candidate"] is None and state["bad"] == []
    assert "cancelled by the caller" in state["history"][-1]["message"], state["history"][-1]


def _committed_store(tmp_path: Path) -> Path:
    """A store (at tmp_path/store, where the graph's manager looks) whose active v1 has lost its manifest."""
    keys = tmp_path / "prekeys"
    generate_keypair(out_dir=keys, name="signing")
    source = write_bundle(tmp_path / "v1", colour_classifier(), classifier_manifest(version="1.0.0"))
    file_list = build_file_list(source).to_bytes()
    bundle = tmp_path / "v1.tar"
    write_bundle_tar(output=bundle, root=source, file_list_bytes=file_list,
                     signature=sign_file_list(file_list, load_private_key(keys / "signing.key")))
    (keys / "trusted").mkdir()
    (keys / "trusted" / "signing.pub").write_bytes((keys / "signing.pub").read_bytes())
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(bundle, trust=TrustStore.load(keys / "trusted"), model_check=check_model)
    store.set_candidate(installed.ref)
    store.commit_candidate()
    (installed.bundle_dir / "manifest.yaml").unlink()
    return tmp_path / "store"


@pytest.fixture
def damaged_store_graph(tmp_path: Path, request: pytest.FixtureRequest):
    _committed_store(tmp_path)
    yield from _graph(tmp_path, request)


def test_a_committed_model_that_cannot_be_served_at_start_up_is_logged_and_shown(damaged_store_graph: Graph) -> None:
    graph = damaged_store_graph
    wait_for(lambda: graph.status().stage == "failed", 30.0, "the start-up failure in status")
    status = graph.status()
    assert "cannot serve the committed model" in status.message, status.message
    log = _manager(graph).log()
    assert "cannot serve the committed model" in log and "Traceback" in log, log[-3000:]
    # It keeps serving requests.
    assert graph.deploy(graph.bundle("v2", version="2.0.0")).accepted


@pytest.fixture
def missing_initial_bundle_graph(tmp_path: Path, request: pytest.FixtureRequest):
    yield from _graph(tmp_path, request, initial_bundle=str(tmp_path / "no-such-bundle.tar"))


def test_a_failing_initial_bundle_is_logged_and_shown_and_the_manager_keeps_serving(
        missing_initial_bundle_graph: Graph) -> None:
    graph = missing_initial_bundle_graph
    wait_for(lambda: graph.status().stage == "failed", 30.0, "the initial deployment's failure in status")
    status = graph.status()
    assert "no-such-bundle.tar" in status.message and "rejected" in status.message, status.message
    log = _manager(graph).log()
    assert "[ERROR]" in log and "no-such-bundle.tar" in log, log[-3000:]
    assert graph.deploy(graph.bundle("v1")).accepted
