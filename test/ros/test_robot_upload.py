"""Upload over DDS: a RobotClient in the test process, the manager and perception nodes in their own processes.

Covers push then deploy by id, verify on an uploaded bundle, resume after
the client disconnects and after the manager restarts, and refusals over
the wire leaving nothing in the staging area.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from robot_model_deployer.robot.client import RobotClient
from robot_model_deployer.robot.outcome import Outcome, RobotRefused
from robot_model_deployer.srv import DeployModel, UploadBegin, UploadChunk
from robot_model_deployer.store.model_store import STAGING_DIR, UPLOADS_DIR
from robot_model_deployer.testing.robot_graph import RobotGraph
from robot_model_deployer.testing.ros_graph import wait_for

BIG = 24 << 20  # big enough that a push takes a few hundred chunks' time on a loaded 2-core machine


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    graph = RobotGraph.start(tmp_path)
    yield graph
    graph.close()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(graph.logs())


@pytest.fixture
def robot(graph: RobotGraph):
    with RobotClient(timeout=30.0, domain_id=graph.domain) as client:
        yield client


def uploads_dir(graph: RobotGraph) -> Path:
    return graph.work / "store" / STAGING_DIR / UPLOADS_DIR


def test_a_pushed_bundle_deploys_by_its_id_and_serves(graph: RobotGraph, robot: RobotClient) -> None:
    bundle = graph.bundle("1.0.0")
    fractions: list[float] = []
    upload_id = robot.push(bundle, lambda stage, fraction, message: fractions.append(fraction))
    assert fractions[-1] == 1.0
    stored = uploads_dir(graph) / upload_id / "bundle.tar"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(bundle.read_bytes()).digest()
    outcome = robot.deploy(upload_id=upload_id)
    assert outcome.accepted and outcome.outcome is Outcome.DEPLOYED, outcome.reason
    assert outcome.version == "colour_classifier@1.0.0"
    start = time.monotonic()
    wait_for(lambda: "1.0.0" in graph.camera.versions_since(start), 20.0, "results of the pushed model")
    assert robot.status()["last"] == {"outcome": "deployed", "version": "colour_classifier@1.0.0",
                                      "reason": outcome.reason}
    # The upload services belong to a node of their own, spun on one thread at upload_nice (10 as shipped).
    served = {name for name, _ in robot.node.get_service_names_and_types_by_node("model_manager_uploads", "/")}
    assert {"/model_manager/upload_begin", "/model_manager/upload_chunk", "/model_manager/upload_status"} <= served
    nices = thread_nices(graph.manager.process.pid)
    assert nices.count(10) == 1 and set(nices) == {0, 10}, nices


def thread_nices(pid: int) -> list[int]:
    """The nice value of each thread of process ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    nices = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        nices.append(int(stat[stat.rindex(")") + 2:].split()[16]))
    return nices


def test_an_uploaded_bundle_is_verified_like_any_other(graph: RobotGraph, robot: RobotClient) -> None:
    """The upload checks only that the bytes arrived; the signature is checked when it is deployed."""
    assert robot.deploy(upload_id=robot.push(graph.bundle("1.0.0"))).accepted
    unsigned = robot.push(graph.bundle("2.0.0", signed=False))
    outcome = robot.deploy(upload_id=unsigned)
    assert not outcome.accepted and outcome.outcome is Outcome.REFUSED
    assert "sign" in outcome.reason, outcome.reason
    assert robot.status()["active"]["version"] == "1.0.0"


def test_refusals_over_the_wire_leave_nothing_behind(graph: RobotGraph, robot: RobotClient) -> None:
    data = b"x" * 5000
    begin = robot._call("upload_begin", UploadBegin.Request(name="b.tar", size=len(data),
                                                            sha256=hashlib.sha256(data).hexdigest()))
    assert begin.accepted and begin.max_chunk == 1 << 20
    part = uploads_dir(graph) / begin.upload_id / "data.part"
    bad = [UploadChunk.Request(upload_id=begin.upload_id, offset=0, data=data[:100], sha256="0" * 64),
           UploadChunk.Request(upload_id=begin.upload_id, offset=100, data=data[:100],
                               sha256=hashlib.sha256(data[:100]).hexdigest()),
           UploadChunk.Request(upload_id=begin.upload_id, offset=0, data=data + b"y",
                               sha256=hashlib.sha256(data + b"y").hexdigest()),
           UploadChunk.Request(upload_id="f" * 32, offset=0, data=data[:100],
                               sha256=hashlib.sha256(data[:100]).hexdigest())]
    reasons = []
    for request in bad:
        answer = robot._call("upload_chunk", request)
        assert not answer.accepted and answer.offset == 0
        reasons.append(answer.reason)
        assert part.stat().st_size == 0
    assert ["sha256" in reasons[0], "gap" in reasons[1], "overflows" in reasons[2],
            "unknown upload id" in reasons[3]] == [True] * 4, reasons
    assert sorted(p.name for p in uploads_dir(graph).iterdir()) == [begin.upload_id]
    unknown = robot.deploy(upload_id="f" * 32)
    assert not unknown.accepted and "unknown upload id" in unknown.reason, unknown.reason
    refused = robot.deploy(upload_id=begin.upload_id)
    assert not refused.accepted and "finish it first" in refused.reason
    by_service = graph.ros.call(DeployModel, "/model_manager/deploy", DeployModel.Request(upload_id="f" * 32))
    assert not by_service.accepted and "unknown upload id" in by_service.reason, by_service.reason
    robot.drop_upload(begin.upload_id)
    assert list(uploads_dir(graph).iterdir()) == []


def test_upload_quotas_are_manager_parameters(tmp_path: Path) -> None:
    graph = RobotGraph.start(tmp_path, upload_max_mb=1, upload_max_concurrent=1)
    try:
        with RobotClient(timeout=30.0, domain_id=graph.domain) as robot:
            with pytest.raises(RobotRefused, match="upload_max_mb"):
                robot.push(graph.bundle("1.0.0", padding_bytes=2 << 20))
            first = robot._call("upload_begin", UploadBegin.Request(name="a.tar", size=10, sha256="a" * 64))
            assert first.accepted
            with pytest.raises(RobotRefused, match="upload_max_concurrent"):
                robot.push(graph.bundle("1.0.1"))
            robot.drop_upload(first.upload_id)
            assert robot.deploy(upload_id=robot.push(graph.bundle("1.0.2"))).accepted
        assert list(uploads_dir(graph).iterdir()) != []  # the finished one stays until it expires
    finally:
        graph.close()


def test_a_push_resumes_after_the_client_disconnects(graph: RobotGraph, robot: RobotClient) -> None:
    bundle = graph.bundle("1.0.0", padding_bytes=BIG)
    uploader = subprocess.Popen([sys.executable, "-c", _UPLOADER, str(bundle)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "ROS_DOMAIN_ID": str(graph.domain)})
    try:
        for line in uploader.stdout:  # the child prints each acknowledged offset
            if int(line) > bundle.stat().st_size // 4:
                break
        uploader.send_signal(signal.SIGKILL)  # no goodbye: the manager keeps the part
    finally:
        uploader.kill()
        uploader.wait()
    fractions: list[float] = []
    upload_id = robot.push(bundle, lambda stage, fraction, message: fractions.append(fraction))
    assert fractions[0] > 0.25, "the second push started from the beginning instead of resuming"
    assert robot.deploy(upload_id=upload_id).accepted


def test_a_push_carries_on_across_a_manager_restart(graph: RobotGraph, robot: RobotClient) -> None:
    bundle = graph.bundle("1.0.0", padding_bytes=BIG)
    offsets: list[float] = []
    result: dict[str, object] = {}

    def slow_progress(stage: str, fraction: float, message: str) -> None:
        offsets.append(fraction)
        time.sleep(0.1)  # about 10 chunks a second, so the restart falls in the middle

    def push() -> None:
        try:
            result["id"] = robot.push(bundle, slow_progress)
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    pushing = threading.Thread(target=push)
    pushing.start()
    wait_for(lambda: offsets and offsets[-1] > 0.2, 60.0, "a fifth of the upload")
    graph.restart_manager()
    pushing.join(120.0)
    assert "error" not in result, result.get("error")
    before = (graph.work / "model_manager.before-restart.log").read_text()
    assert "started at offset 0" in before and "complete" not in before, "the restart did not fall mid-upload"
    assert "resumed" not in graph.manager.log()  # the client asked the offset, it did not start again
    assert offsets == sorted(offsets), "the push went back after the restart"
    outcome = robot.deploy(upload_id=str(result["id"]))
    assert outcome.accepted, outcome.reason
    assert robot.status()["active"]["version"] == "1.0.0"


_UPLOADER = """
import sys, time
from robot_model_deployer.robot.client import RobotClient

def report(stage, fraction, message):
    if "/" in message:
        print(message.split()[1].split("/")[0], flush=True)
        time.sleep(0.05)

with RobotClient(timeout=30.0) as client:
    client.push(sys.argv[1], report)
"""
