"""One service call that survives the lost first answer of a new client.

A server answers over a writer that must first discover the client's
response reader; rmw_fastrtps waits only 100 ms for that, then drops the
answer (ros2/rmw_fastrtps#390, #467). A client made just before its call,
on a loaded robot, can so wait its whole timeout for an answer that was
never sent. A request that is safe to repeat (a query) is therefore sent
again every ``resend_s`` until one copy is answered.
"""
from __future__ import annotations

import threading
import time
from typing import Any

RESEND_S = 1.0  # how long a query waits for an answer before it is sent again


def answer_of(client: Any, request: Any, timeout: float, resend_s: float | None = None) -> Any | None:
    """The answer to ``request`` on rclpy ``client`` within ``timeout`` s, else None.

    ``resend_s``: send the request again each time this long passes without an answer (only for requests
    that may run twice); None sends it once.
    """
    deadline = time.monotonic() + timeout
    answered = threading.Event()
    sent = []
    while True:
        future = client.call_async(request)
        future.add_done_callback(lambda _: answered.set())
        sent.append(future)
        left = max(0.0, deadline - time.monotonic())
        if answered.wait(min(left, resend_s) if resend_s else left) or time.monotonic() >= deadline:
            break
    for future in sent:
        if not future.done():
            client.remove_pending_request(future)
    done = [future for future in sent if future.done()]
    return done[0].result() if done else None
