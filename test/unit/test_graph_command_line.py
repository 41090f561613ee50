"""The graph command (no ros2 launch): the launch file's nodes, names and files; nothing started here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from robot_model_deployer.nodes.graph import (GraphOptions, check_files, graph_commands, graph_environment,
                                              override_parameters, socket_buffer_warning)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "deployer.launch.py"


def launch_nodes() -> set[tuple[str, str]]:
    """(executable, node name) of every Node/LifecycleNode in the launch file, read from its source."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            constants[node.targets[0].id] = [element.value for element in node.value.elts]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("Node", "LifecycleNode"):
            keywords = {k.arg: k.value for k in node.keywords}
            executable = keywords["executable"].value
            name = keywords["name"]
            names = [name.value] if isinstance(name, ast.Constant) else constants["perception_names"]
            found |= {(executable, n) for n in names}
    return found


def options(tmp_path: Path, **changes) -> GraphOptions:
    params = tmp_path / "deployer.yaml"
    params.write_text("{}")
    return GraphOptions(**{"params_file": params, "fastdds_profile": "", **changes})


def test_the_graph_starts_the_launch_files_nodes_under_the_same_names(tmp_path):
    commands = graph_commands(options(tmp_path, demo_camera=True), Path("/lib/pkg"), tmp_path / "o.yaml")
    started = {(Path(c.argv[0]).name, c.name) for c in commands}
    assert started == launch_nodes()
    assert {c.name for c in commands if c.essential} == {"perception_a", "perception_b", "model_manager"}
    without_camera = graph_commands(options(tmp_path), Path("/lib/pkg"), tmp_path / "o.yaml")
    assert "demo_camera" not in {c.name for c in without_camera}


def test_every_node_gets_the_params_file_then_the_overrides_its_name_namespace_and_topics(tmp_path):
    opts = options(tmp_path, namespace="robot1", image_topic="/camera/image_raw", results_topic="seen")
    manager = next(c for c in graph_commands(opts, Path("/lib/pkg"), tmp_path / "o.yaml") if c.name == "model_manager")
    argv = list(manager.argv)
    assert argv[:4] == ["/lib/pkg/manager_node", "--ros-args", "-r", "__node:=model_manager"]
    assert ["-r", "__ns:=/robot1"] == argv[4:6]
    assert "image:=/camera/image_raw" in argv and "results:=seen" in argv
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--params-file"]
    assert files == [str(opts.params_file), str(tmp_path / "o.yaml")]  # later files win, as in launch


def test_the_overrides_are_the_launch_files_typed_manager_arguments(tmp_path):
    opts = options(tmp_path, store_dir="/data/store #2", trust_dir="/etc/keys", initial_bundle="/b.tar",
                   allow_unsigned=True, use_sim_time=True)
    parsed = yaml.safe_load(yaml.safe_dump(override_parameters(opts)))
    assert parsed["/**/model_manager"]["ros__parameters"] == {
        "initial_bundle": "/b.tar", "store_dir": "/data/store #2", "trust_dir": "/etc/keys", "allow_unsigned": True}
    assert parsed["/**"]["ros__parameters"] == {"use_sim_time": True}


def test_the_profile_is_set_for_every_node_or_removed_for_fast_dds_defaults(tmp_path):
    profile = tmp_path / "profile.xml"
    profile.write_text("<dds/>")
    base = {"FASTDDS_DEFAULT_PROFILES_FILE": "/other.xml", "PATH": "/bin"}
    assert graph_environment(options(tmp_path, fastdds_profile=str(profile)), base)[
        "FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile)
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in graph_environment(options(tmp_path), base)


def test_a_missing_params_file_or_profile_is_refused_naming_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"^--params-file .* is not a file: pass a YAML"):
        check_files(GraphOptions(params_file=tmp_path / "missing.yaml", fastdds_profile=""))
    with pytest.raises(ValueError, match=r"^--fastdds-profile .* is not a file.*'' for Fast DDS's defaults"):
        check_files(options(tmp_path, fastdds_profile=str(tmp_path / "missing.xml")))
    check_files(options(tmp_path))


def _limits(tmp_path: Path, rmem: int, wmem: int) -> Path:
    limits = tmp_path / "core"
    limits.mkdir(parents=True)
    (limits / "rmem_max").write_text(f"{rmem}\n")
    (limits / "wmem_max").write_text(f"{wmem}\n")
    return limits


def test_the_shipped_profile_warns_when_the_kernel_caps_its_socket_buffers(tmp_path: Path) -> None:
    profile = str(ROOT / "config" / "fastdds_large_data.xml")
    warning = socket_buffer_warning(profile, _limits(tmp_path, 212992, 212992))
    assert "sudo sysctl -w net.core.rmem_max=4194304 net.core.wmem_max=4194304" in warning, warning
    assert socket_buffer_warning(profile, _limits(tmp_path / "big", 4194304, 8388608)) == ""


def test_a_profile_without_socket_buffers_or_no_profile_warns_of_nothing(tmp_path: Path) -> None:
    plain = tmp_path / "plain.xml"
    plain.write_text('<dds xmlns="http://www.eprosima.com"><profiles/></dds>')
    limits = _limits(tmp_path, 1, 1)
    assert socket_buffer_warning(str(plain), limits) == ""
    assert socket_buffer_warning("", limits) == ""
