"""The manager's upload services: turn UploadBegin / UploadChunk / UploadStatus into UploadStore calls.

  ~/upload_begin   srv UploadBegin   declare a file (or find the upload of the same bytes, to resume)
  ~/upload_chunk   srv UploadChunk   one chunk (at most 1 MiB) at the upload's end
  ~/upload_status  srv UploadStatus  where an upload stands (its offset), or cancel it

The services belong to a side node (``<manager>_uploads``, same
namespace), spun by its own executor on one thread at a lower CPU priority
(``upload_nice``): taking a chunk from DDS, hashing and writing it never
delays the manager's status, deploy or rollback callbacks, and on a busy
robot the live perception node wins the CPU. Each answer waits for its
share of ``upload_max_mb_s``, which bounds what a transfer costs per second.
An idle upload expires (a steady-clock timer on the same thread).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from robot_model_deployer.nodes.parameters import ParameterSpec, ParameterValueError
from robot_model_deployer.nodes.side_node import SideNode
from robot_model_deployer.srv import UploadBegin, UploadChunk, UploadStatus
from robot_model_deployer.store.uploads import TransferPace, UploadError, UploadInfo, UploadLimits, UploadStore

_DEFAULTS = UploadLimits()
_MIB = 1 << 20
EXPIRY_CHECK_S = 30.0

PARAMETERS = (
    ParameterSpec("upload_max_mb", _DEFAULTS.max_bytes // _MIB,
                  "Largest bundle file (MiB) the upload services take.", minimum=1, maximum=1 << 20),
    ParameterSpec("upload_max_concurrent", _DEFAULTS.max_concurrent,
                  "Unfinished uploads allowed at once; one more is refused until one finishes, is cancelled or "
                  "expires.", minimum=1, maximum=64),
    ParameterSpec("upload_free_space_mb", _DEFAULTS.free_space_margin // _MIB,
                  "Disk space (MiB) that must stay free beside the store after every unfinished upload has "
                  "arrived; an upload that would leave less is refused at its start.", minimum=0, maximum=1 << 20),
    ParameterSpec("upload_idle_s", _DEFAULTS.idle_seconds,
                  "Seconds an upload (unfinished, or finished and not deployed) may stay untouched before it is "
                  "deleted.", minimum=10.0, maximum=30 * 86400.0),
    ParameterSpec("upload_max_mb_s", 20.0,
                  "Most MB/s the upload services take (0: as fast as the client sends): each chunk's answer waits "
                  "for its share, so a push costs the live path no more than a shadow run (bench/bench_upload.py).",
                  minimum=0.0, maximum=100000.0),
    ParameterSpec("upload_nice", 10,
                  "Nice increment of the thread that takes, hashes and writes upload chunks (0: the manager's own "
                  "priority); above 0 the live perception node wins the CPU over an upload.",
                  minimum=0, maximum=19, read_only=True),
)


def upload_limits(settings: dict[str, Any]) -> UploadLimits:
    return UploadLimits(max_bytes=settings["upload_max_mb"] * _MIB, max_concurrent=settings["upload_max_concurrent"],
                        free_space_margin=settings["upload_free_space_mb"] * _MIB,
                        idle_seconds=settings["upload_idle_s"])


class UploadServer:
    """Owned by the manager; ``deployable(upload_id)`` gives the deploy flow the finished file."""

    def __init__(self, node: Node, root: Path, limits: UploadLimits, nice: int, pace: TransferPace) -> None:
        self._node = node  # its logger: the lines are the manager's
        self.store = UploadStore(root, limits)
        self._pace = pace
        self._side = SideNode(node, "uploads", nice)
        prefix = node.get_fully_qualified_name()
        self._side.node.create_service(UploadBegin, f"{prefix}/upload_begin", self._on_begin)
        self._side.node.create_service(UploadChunk, f"{prefix}/upload_chunk", self._on_chunk)
        self._side.node.create_service(UploadStatus, f"{prefix}/upload_status", self._on_status)
        self._side.node.create_timer(EXPIRY_CHECK_S, self._expire, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._side.start()

    def bundle_path(self, request: Any) -> tuple[str, str]:
        """The bundle a deploy request names (its path, or its finished upload's file), or why it names none."""
        if not request.upload_id:
            return request.bundle_path, ""
        if request.bundle_path:
            return "", "give a bundle_path or an upload_id, not both"
        try:
            return str(self.store.deployable(request.upload_id)), ""
        except UploadError as exc:
            return "", str(exc)

    def close(self) -> None:
        self._side.close()

    def _on_begin(self, request: UploadBegin.Request, response: UploadBegin.Response) -> UploadBegin.Response:
        response.max_chunk = self.store.limits.max_chunk
        try:
            info = self.store.begin(request.name, request.size, request.sha256)
        except (UploadError, OSError) as exc:
            return self._refuse(response, f"upload of {request.name} refused: {exc}")
        response.accepted = True
        response.upload_id, response.offset, response.complete = info.upload_id, info.offset, info.complete
        verb = "resumed" if info.offset or info.complete else "started"
        self._node.get_logger().info(f"upload {info.upload_id} of {info.name} ({info.size} bytes) {verb} at "
                                     f"offset {info.offset}")
        return response

    def _on_chunk(self, request: UploadChunk.Request, response: UploadChunk.Response) -> UploadChunk.Response:
        try:
            info = self.store.write(request.upload_id, request.offset, memoryview(request.data), request.sha256)
        except (UploadError, OSError) as exc:
            self._refuse(response, str(exc))
            response.offset = self._offset_of(request.upload_id)
            return response
        response.accepted, response.offset, response.complete = True, info.offset, info.complete
        time.sleep(self._pace.delay(len(request.data), time.monotonic()))  # the upload thread only
        if info.complete:
            self._node.get_logger().info(f"upload {info.upload_id} of {info.name} complete ({info.size} bytes, "
                                         "sha256 matches); deployable by its id")
        return response

    def _on_status(self, request: UploadStatus.Request, response: UploadStatus.Response) -> UploadStatus.Response:
        try:
            info = self.store.drop(request.upload_id) if request.cancel else self.store.info(request.upload_id)
        except UploadError as exc:
            response.found, response.reason = False, str(exc)
            return response
        _fill(response, info)
        response.found = True
        response.reason = f"upload {info.upload_id} cancelled and deleted" if request.cancel else ""
        return response

    def _offset_of(self, upload_id: str) -> int:
        try:
            return self.store.info(upload_id).offset
        except UploadError:
            return 0

    def _refuse(self, response: Any, reason: str) -> Any:
        self._node.get_logger().warning(reason)
        response.accepted, response.reason = False, reason
        return response

    def _expire(self) -> None:
        for upload_id in self.store.expire():
            self._node.get_logger().info(f"upload {upload_id} expired (idle over {self.store.limits.idle_seconds:g} "
                                         "s) and was deleted")


def upload_server(node: Node, root: Path, settings: dict[str, Any]) -> UploadServer:
    try:
        return UploadServer(node, root, upload_limits(settings), settings["upload_nice"],
                            TransferPace(settings["upload_max_mb_s"] * 1e6))
    except OSError as exc:
        raise ParameterValueError(f"parameter store_dir: cannot open the upload area {root}: {exc}") from None


def _fill(response: UploadStatus.Response, info: UploadInfo) -> None:
    response.name, response.size, response.sha256 = info.name, info.size, info.sha256
    response.offset, response.complete = info.offset, info.complete
