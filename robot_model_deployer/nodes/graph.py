"""Start the model deployer's node graph without ``ros2 launch``: one command, Ctrl-C stops it all.

The same nodes, node names, parameters file (config/deployer.yaml) and Fast
DDS profile (config/fastdds_large_data.xml) as launch/deployer.launch.py, with
its arguments as options, for machines where launch is not installed (ROS 2
from PyPI has no launch). Like launch, when the manager or a perception node
exits the whole graph stops (nothing serves without them); when the shadow
node or the demo camera exits, it says so and the rest keeps serving.

    graph [--trust-dir DIR] [--store-dir DIR] [--initial-bundle TAR] [--demo-camera] ...
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Sequence
from xml.etree import ElementTree

import yaml

PACKAGE = "robot_model_deployer"
PERCEPTION_NODES = ("perception_a", "perception_b")
DEFAULT_STORE = "~/.local/share/robot_model_deployer/store"
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GraphOptions:
    """The launch file's arguments (``ros2 launch ... --show-args``), with its defaults."""

    params_file: Path
    fastdds_profile: str  # '' keeps Fast DDS's defaults
    namespace: str = ""
    image_topic: str = "image"
    results_topic: str = "results"
    initial_bundle: str = ""
    store_dir: str = DEFAULT_STORE
    trust_dir: str = ""
    allow_unsigned: bool = False
    demo_camera: bool = False
    use_sim_time: bool = False


@dataclass(frozen=True)
class NodeCommand:
    """One node process: its name, command line, and whether the graph can serve without it."""

    name: str
    argv: tuple[str, ...]
    essential: bool
    without: str = field(default="", compare=False)


def share_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory  # only where the package is built

    return Path(get_package_share_directory(PACKAGE))


def check_files(options: GraphOptions) -> None:
    """ValueError naming the option when the parameters file or the profile is missing (nothing started yet)."""
    if not options.params_file.is_file():
        raise ValueError(f"--params-file {options.params_file} is not a file: pass a YAML with one ros__parameters "
                         "block per node, or leave it out for config/deployer.yaml")
    if options.fastdds_profile and not Path(options.fastdds_profile).is_file():
        raise ValueError(f"--fastdds-profile {options.fastdds_profile} is not a file: pass a Fast DDS XML profile, "
                         "or --fastdds-profile '' for Fast DDS's defaults")


def override_parameters(options: GraphOptions) -> dict:
    """What the launch file sets on top of the parameters file (its typed ParameterValues), as params YAML."""
    return {
        "/**": {"ros__parameters": {"use_sim_time": options.use_sim_time}},
        "/**/model_manager": {"ros__parameters": {
            "initial_bundle": options.initial_bundle, "store_dir": options.store_dir,
            "trust_dir": options.trust_dir, "allow_unsigned": options.allow_unsigned}},
    }


def graph_commands(options: GraphOptions, lib_dir: Path, overrides_file: Path) -> list[NodeCommand]:
    """The launch file's nodes as command lines (pure: nothing is started)."""
    def command(executable: str, name: str, remap_results: bool = True) -> tuple[str, ...]:
        argv = [str(lib_dir / executable), "--ros-args", "-r", f"__node:={name}"]
        if options.namespace:
            argv += ["-r", f"__ns:=/{options.namespace.strip('/')}"]
        argv += ["-r", f"image:={options.image_topic}"]
        if remap_results:
            argv += ["-r", f"results:={options.results_topic}"]
        return (*argv, "--params-file", str(options.params_file), "--params-file", str(overrides_file))

    nothing_serves = "nothing serves models without it"
    commands = [NodeCommand(name, command("perception_node", name), True, nothing_serves)
                for name in PERCEPTION_NODES]
    commands.append(NodeCommand("shadow", command("shadow_node", "shadow"), False,
                                "new models cannot be validated in shadow"))
    commands.append(NodeCommand("model_manager", command("manager_node", "model_manager"), True, nothing_serves))
    if options.demo_camera:
        commands.append(NodeCommand("demo_camera", command("demo_camera_node", "demo_camera", remap_results=False),
                                    False, "no more demo camera frames"))
    return commands


def graph_environment(options: GraphOptions, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the Fast DDS profile every node reads (none: Fast DDS's defaults)."""
    env = {key: value for key, value in base.items() if key != "FASTDDS_DEFAULT_PROFILES_FILE"}
    if options.fastdds_profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = options.fastdds_profile
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class RunningGraph:
    """The node processes; ``watch`` reports exits as launch does, ``stop`` ends them all."""

    def __init__(self, commands: Sequence[NodeCommand], env: Mapping[str, str], log_dir: Path | None = None,
                 say: IO[str] = sys.stderr) -> None:
        self._say = say
        self._logs: list[IO[bytes]] = []
        self.processes: dict[str, tuple[NodeCommand, subprocess.Popen]] = {}
        for node in commands:
            output = None
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                output = open(log_dir / f"{node.name}.log", "wb")
                self._logs.append(output)
            # In the graph's process group, as launch does: Ctrl-C in a terminal reaches every node at once
            # (and stop() forwards it, for a SIGTERM to the graph or a caller that stops it).
            process = subprocess.Popen(node.argv, env=dict(env), stdout=output,
                                       stderr=subprocess.STDOUT if output else None)
            self.processes[node.name] = (node, process)
        self._reported: set[str] = set()

    def watch(self) -> str | None:
        """Check exits once: the reason to stop the graph when an essential node has exited, else None."""
        for name, (node, process) in self.processes.items():
            code = process.poll()
            if code is None or name in self._reported:
                continue
            self._reported.add(name)
            reason = f"{name} exited with code {code}: {node.without}"
            if node.essential:
                return reason
            print(f"[graph] {reason}; the rest keeps running", file=self._say, flush=True)
        return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGINT to every node (rclpy shuts down cleanly), SIGKILL to those still running after ``timeout``."""
        for _, process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for name, (_, process) in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"[graph] {name} did not stop within {timeout:g} s; killing it", file=self._say, flush=True)
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


def start_graph(options: GraphOptions, work_dir: Path, log_dir: Path | None = None,
                say: IO[str] = sys.stderr) -> RunningGraph:
    """Start every node of ``options`` (ValueError before any starts when a file is missing)."""
    check_files(options)
    overrides = work_dir / "graph-overrides.yaml"
    overrides.write_text(yaml.safe_dump(override_parameters(options), sort_keys=False), encoding="utf-8")
    prefix = share_dir().parent.parent
    commands = graph_commands(options, prefix / "lib" / PACKAGE, overrides)
    warning = socket_buffer_warning(options.fastdds_profile)
    if warning:
        print(f"[graph] {warning}", file=say, flush=True)
    return RunningGraph(commands, graph_environment(options, os.environ), log_dir, say)


def socket_buffer_warning(profile: str, limits: Path = Path("/proc/sys/net/core")) -> str:
    """Why the kernel caps the UDP socket buffers ``profile`` asks for ('' when it does not).

    Linux caps SO_RCVBUF / SO_SNDBUF at net.core.rmem_max / wmem_max without an error: the
    profile's larger buffers then do nothing, and each participant joining (an ``rmd robot``
    command) drops discovery datagrams, which holds live results back (measured: the profile's comment).
    """
    if not profile:
        return ""
    try:
        root = ElementTree.parse(profile).getroot()
    except (OSError, ElementTree.ParseError):
        return ""  # check_files said what is wrong with the file
    wanted = {"receiveBufferSize": "rmem_max", "sendBufferSize": "wmem_max"}
    short = []
    for element in root.iter():
        limit = wanted.get(element.tag.rsplit("}", 1)[-1])
        if limit is None:
            continue
        try:
            size, cap = int((element.text or "").strip()), int((limits / limit).read_text())
        except (OSError, ValueError):
            continue
        if cap < size:
            short.append(f"net.core.{limit}={size}")
    if not short:
        return ""
    return (f"the kernel caps UDP socket buffers below what {Path(profile).name} asks for: a DDS participant "
            f"joining then drops datagrams and holds live results back; run `sudo sysctl -w "
            f"{' '.join(sorted(set(short)))}` (and put it in /etc/sysctl.d/ to keep it)")


def parse_options(argv: Sequence[str]) -> GraphOptions:
    share = share_dir()
    parser = argparse.ArgumentParser(prog="graph", description=__doc__.split("\n\n")[0],
                                     epilog="Every node's parameters: <node executable> --help (e.g. "
                                            "manager_node --help).")
    parser.add_argument("--params-file", type=Path, default=share / "config" / "deployer.yaml",
                        help="YAML with one ros__parameters block per node (default: %(default)s)")
    parser.add_argument("--fastdds-profile",
                        default=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE",
                                               str(share / "config" / "fastdds_large_data.xml")),
                        help="Fast DDS XML profile for every node (default: $FASTDDS_DEFAULT_PROFILES_FILE, else "
                             "config/fastdds_large_data.xml: camera frames over shared memory); '' for Fast DDS's "
                             "defaults")
    parser.add_argument("--namespace", default="", help="namespace for all nodes")
    parser.add_argument("--image-topic", default="image", help="camera topic (sensor_msgs/Image)")
    parser.add_argument("--results-topic", default="results", help="topic of InferenceResult messages")
    parser.add_argument("--initial-bundle", default="",
                        help="bundle deployed at start-up when the store has no active model")
    parser.add_argument("--store-dir", default=DEFAULT_STORE, help="on-robot model store (default: %(default)s)")
    parser.add_argument("--trust-dir", default="",
                        help="directory of trusted public keys (.pub) that bundles must be signed by")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="accept unsigned bundles (development only; logged as a warning)")
    parser.add_argument("--demo-camera", action="store_true", help="also start the demo camera (scikit-image photos)")
    parser.add_argument("--use-sim-time", action="store_true", help="use /clock instead of the wall clock")
    args = parser.parse_args(argv)
    return GraphOptions(params_file=args.params_file, fastdds_profile=args.fastdds_profile,
                        namespace=args.namespace, image_topic=args.image_topic, results_topic=args.results_topic,
                        initial_bundle=args.initial_bundle, store_dir=args.store_dir, trust_dir=args.trust_dir,
                        allow_unsigned=args.allow_unsigned, demo_camera=args.demo_camera,
                        use_sim_time=args.use_sim_time)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    stopping = False

    def request_stop(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with tempfile.TemporaryDirectory(prefix="rmd-graph-") as work:
        try:
            graph = start_graph(options, Path(work))
        except ValueError as exc:
            print(f"graph: {exc}", file=sys.stderr)
            return 1
        names = ", ".join(graph.processes)
        print(f"[graph] started {names} with {options.params_file} and Fast DDS profile "
              f"{options.fastdds_profile or '(Fast DDS defaults)'}; Ctrl-C stops them all", file=sys.stderr,
              flush=True)
        reason = None
        while not stopping and reason is None:
            reason = graph.watch()
            time.sleep(0.2)
        if reason is not None:
            print(f"[graph] {reason}; shutting the model deployer down", file=sys.stderr, flush=True)
        graph.stop()
    return 1 if reason is not None else 0
