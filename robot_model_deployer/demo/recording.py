"""Recording the demo's topics as MCAP: the serialized ROS 2 messages, as rosbag2 stores them.

Subscriptions with ``raw=True`` hand over each message's CDR bytes (with
their encapsulation header); they are written unchanged, under a
``ros2msg`` schema: the message definition followed by each nested type's
(``MSG: pkg/msg/Type`` blocks), the layout Foxglove and rosbag2 read.
``check_recording`` reads the file back with mcap-ros2-support's decoder,
which parses those schemas and the CDR independently of rclpy.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ament_index_python.packages import get_package_share_directory
from rclpy.node import Node
from rclpy.qos import QoSProfile

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80
_CHUNK_BYTES = 4 << 20  # several camera frames per chunk, so zstd also finds what repeats between them


def _definition_text(type_name: str) -> str:
    package, _, name = type_name.split("/")
    return (Path(get_package_share_directory(package)) / "msg" / f"{name}.msg").read_text(encoding="utf-8")


def _field_types(text: str, package: str) -> list[str]:
    """The non-primitive types a .msg definition uses, as pkg/msg/Type."""
    types = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line:
            continue  # a constant (a primitive)
        kind = line.split()[0]
        kind = re.sub(r"\[.*\]$", "", kind)
        kind = re.sub(r"<=\d+$", "", kind)
        if kind in _PRIMITIVES:
            continue
        if "/" not in kind:
            kind = f"{package}/{kind}"
        owner, _, name = kind.rpartition("/")
        types.append(f"{owner}/msg/{name}" if "/msg/" not in kind else kind)
    return types


def ros2msg_schema(type_name: str) -> str:
    """``type_name`` (e.g. sensor_msgs/msg/Image) with every nested definition, as rosbag2 writes it."""
    order: list[str] = []

    def visit(name: str) -> None:
        for nested in _field_types(_definition_text(name), name.split("/")[0]):
            if nested not in order:
                order.append(nested)
                visit(nested)

    visit(type_name)
    parts = [_definition_text(type_name).rstrip("\n")]
    for nested in order:
        package, _, name = nested.split("/")
        parts.append(f"{_SEPARATOR}\nMSG: {package}/{name}\n{_definition_text(nested).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


def _type_name(message_type: Any) -> str:
    module = message_type.__module__.split(".")  # e.g. sensor_msgs.msg._image
    return f"{module[0]}/msg/{message_type.__name__}"


class McapRecorder:
    """Writes every message of the given topics to one MCAP file until ``close``.

    ``topics``: (topic, message type, QoS, at most this many messages per
    second, 0 for all). ``observers`` get (topic, raw bytes, receive time)
    of every message, recorded or not, for the demo's own bookkeeping.
    """

    def __init__(self, node: Node, path: Path, topics: Iterable[tuple[str, Any, QoSProfile, float]],
                 observer: Callable[[str, bytes, int], None] | None = None) -> None:
        from mcap.writer import CompressionType, Writer  # the demo extra

        self.path = path
        self._file = open(path, "wb")
        self._writer = Writer(self._file, chunk_size=_CHUNK_BYTES, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="robot_model_deployer demo")
        self._lock = threading.Lock()
        self._observer = observer
        self._closed = False
        self.counts: dict[str, int] = {}
        self._subscriptions = []
        for topic, message_type, qos, max_rate in topics:
            type_name = _type_name(message_type)
            schema = self._writer.register_schema(name=type_name, encoding="ros2msg",
                                                  data=ros2msg_schema(type_name).encode())
            channel = self._writer.register_channel(topic=node.resolve_topic_name(topic), message_encoding="cdr",
                                                    schema_id=schema)
            self.counts[topic] = 0
            self._subscriptions.append(node.create_subscription(
                message_type, topic, self._on_message(topic, channel, max_rate), qos, raw=True))

    def _on_message(self, topic: str, channel: int, max_rate: float) -> Callable[[bytes], None]:
        period_ns = int(1e9 / max_rate) if max_rate > 0 else 0
        last = [-period_ns]
        sequence = [0]

        def record(raw: bytes) -> None:
            now = time.time_ns()
            if self._observer is not None:
                self._observer(topic, raw, now)
            if now - last[0] < period_ns:
                return
            last[0] = now
            with self._lock:
                if self._closed:
                    return
                self._writer.add_message(channel_id=channel, log_time=now, publish_time=now, data=bytes(raw),
                                         sequence=sequence[0])
                sequence[0] += 1
                self.counts[topic] += 1

        return record

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.finish()
            self._file.close()


def check_recording(path: Path) -> dict[str, int]:
    """Messages per topic that decode as ROS 2 CDR with the file's own schemas (mcap-ros2-support)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    counts: dict[str, int] = {}
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _schema, channel, _message, _decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    return counts
