"""answer_of over DDS: a query whose first answer does not come is sent again, a command is sent once."""
from __future__ import annotations

import threading
import time

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from robot_model_deployer.nodes.service_call import answer_of
from robot_model_deployer.srv import GetStatus
from robot_model_deployer.testing.ros_graph import RosTestClient, next_domain_id

STALL_S = 3.0  # how long the server sits on the first request


class _StallingServer:
    """A GetStatus server in its own participant that answers its first request only after STALL_S."""

    def __init__(self, domain: int) -> None:
        self.requests = 0
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node("stalling_server", context=self.context)
        self.node.create_service(GetStatus, "/stalling/get_status", self._answer,
                                 callback_group=ReentrantCallbackGroup())
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _answer(self, request: GetStatus.Request, response: GetStatus.Response) -> GetStatus.Response:
        self.requests += 1
        response.status.message = f"answer {self.requests}"
        if self.requests == 1:
            time.sleep(STALL_S)
        return response

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=STALL_S + 1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


def _client_and_server():
    domain = next_domain_id()
    server, client = _StallingServer(domain), RosTestClient(domain)
    service = client.node.create_client(GetStatus, "/stalling/get_status")
    assert service.wait_for_service(timeout_sec=20.0)
    return server, client, service


def test_a_query_is_sent_again_and_the_first_answer_that_comes_wins() -> None:
    server, client, service = _client_and_server()
    try:
        started = time.monotonic()
        answer = answer_of(service, GetStatus.Request(), timeout=20.0, resend_s=0.5)
        took = time.monotonic() - started
        assert answer is not None and answer.status.message == "answer 2", answer
        assert took < STALL_S, f"the resent request was answered only after {took:.1f} s"
        assert server.requests == 2
    finally:
        client.close()
        server.close()


def test_a_request_sent_once_waits_for_its_answer_and_none_comes_after_the_timeout() -> None:
    server, client, service = _client_and_server()
    try:
        assert answer_of(service, GetStatus.Request(), timeout=1.0) is None
        assert server.requests == 1
    finally:
        client.close()
        server.close()
