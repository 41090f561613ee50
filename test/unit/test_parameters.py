"""Parameter specs: validation, descriptors, and declaring them on a real node with its own Context."""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import pytest
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from robot_model_deployer.nodes.parameters import ParameterSpec, ParameterValueError, declare_parameters

SPECS = (
    ParameterSpec("encoding", "rgb8", "Pixel encoding of the published images.", choices=("rgb8", "bgr8")),
    ParameterSpec("rate", 10.0, "Frames per second.", minimum=0.1, maximum=1000.0),
    ParameterSpec("width", 640, "Frame width in pixels.", minimum=8, maximum=8192),
    ParameterSpec("threads", 0, "Worker threads (0: automatic).", minimum=0),
    ParameterSpec("model_dir", "", "Bundle directory.", read_only=True),
    ParameterSpec("reliable", True, "Reliable QoS."),
    ParameterSpec("providers", ["CPUExecutionProvider"], "Execution providers in order of preference.",
                  check=lambda v: None if v else "must list at least one provider"),
)


# validate() without ROS -----------------------------------------------------------

def test_valid_values_pass() -> None:
    for spec, value in zip(SPECS, ["bgr8", 0.1, 8192, 0, "/x", False, ["A"]]):
        spec.validate(value)


@pytest.mark.parametrize("value", ["rgba8", "RGB8", ""])
def test_choices_are_exact_and_listed_in_the_error(value: str) -> None:
    with pytest.raises(ParameterValueError) as info:
        SPECS[0].validate(value)
    assert str(info.value) == f"parameter encoding must be one of rgb8, bgr8, got {value!r}"


@pytest.mark.parametrize("value, message", [
    (0.05, "parameter rate must be >= 0.1, got 0.05"),
    (1000.5, "parameter rate must be <= 1000.0, got 1000.5"),
])
def test_minimum_and_maximum(value: float, message: str) -> None:
    with pytest.raises(ParameterValueError) as info:
        SPECS[1].validate(value)
    assert str(info.value) == message


def test_limits_are_inclusive() -> None:
    SPECS[1].validate(0.1)
    SPECS[1].validate(1000.0)
    SPECS[2].validate(8)


def test_minimum_only() -> None:
    SPECS[3].validate(10**9)
    with pytest.raises(ParameterValueError, match="parameter threads must be >= 0, got -1"):
        SPECS[3].validate(-1)


def test_check_problem_is_appended_to_the_parameter_name() -> None:
    with pytest.raises(ParameterValueError) as info:
        SPECS[6].validate([])
    assert str(info.value) == "parameter providers must list at least one provider"


def test_parameter_value_error_is_a_value_error() -> None:
    assert issubclass(ParameterValueError, ValueError)


# Descriptors ---------------------------------------------------------------------

def test_descriptor_carries_description_and_choices() -> None:
    descriptor = SPECS[0].descriptor()
    assert isinstance(descriptor, ParameterDescriptor)
    assert descriptor.description == "Pixel encoding of the published images. One of: rgb8, bgr8."
    assert not descriptor.integer_range and not descriptor.floating_point_range


def test_float_descriptor_has_a_floating_point_range() -> None:
    descriptor = SPECS[1].descriptor()
    assert descriptor.description == "Frames per second."
    [span] = descriptor.floating_point_range
    assert (span.from_value, span.to_value, span.step) == (0.1, 1000.0, 0.0)
    assert not descriptor.integer_range


def test_integer_descriptor_has_an_integer_range() -> None:
    [span] = SPECS[2].descriptor().integer_range
    assert (span.from_value, span.to_value, span.step) == (8, 8192, 0)


def test_open_ended_integer_range_uses_int32_limit() -> None:
    [span] = SPECS[3].descriptor().integer_range
    assert (span.from_value, span.to_value) == (0, 2**31 - 1)


def test_bool_and_string_descriptors_have_no_range() -> None:
    flag = ParameterSpec("flag", False, "A flag.", minimum=0, maximum=1).descriptor()
    assert not flag.integer_range and not flag.floating_point_range
    assert not SPECS[4].descriptor().integer_range


def test_read_only_is_carried() -> None:
    assert SPECS[4].descriptor().read_only is True
    assert SPECS[0].descriptor().read_only is False


# declare_parameters on a real node ---------------------------------------------------

_names = itertools.count()


@pytest.fixture(scope="module")
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


@pytest.fixture
def make_node(context: Context) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(*overrides: tuple[str, Any]) -> Node:
        node = Node(f"parameters_test_{next(_names)}", context=context, start_parameter_services=False,
                    parameter_overrides=[Parameter(name, value=value) for name, value in overrides])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()


def test_defaults_are_declared_and_returned(make_node) -> None:
    node = make_node()
    values = declare_parameters(node, SPECS)
    assert values == {"encoding": "rgb8", "rate": 10.0, "width": 640, "threads": 0, "model_dir": "",
                      "reliable": True, "providers": ["CPUExecutionProvider"]}
    assert node.get_parameter("width").value == 640
    assert node.get_parameter("providers").value == ["CPUExecutionProvider"]


def test_valid_overrides_are_returned(make_node) -> None:
    node = make_node(("encoding", "bgr8"), ("rate", 30.0), ("width", 320), ("model_dir", "/opt/m"))
    values = declare_parameters(node, SPECS)
    assert (values["encoding"], values["rate"], values["width"], values["model_dir"]) == ("bgr8", 30.0, 320,
                                                                                          "/opt/m")


def test_declared_descriptors_are_visible_on_the_node(make_node) -> None:
    node = make_node()
    declare_parameters(node, SPECS)
    rate, width, model_dir = node.describe_parameters(["rate", "width", "model_dir"])
    assert rate.description == "Frames per second."
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (0.1, 1000.0)
    assert (width.integer_range[0].from_value, width.integer_range[0].to_value) == (8, 8192)
    assert model_dir.read_only is True


def test_invalid_choice_override_is_refused_naming_the_parameter(make_node) -> None:
    node = make_node(("encoding", "rgba8"))
    with pytest.raises(ParameterValueError, match=r"^parameter encoding must be one of rgb8, bgr8, got 'rgba8'$"):
        declare_parameters(node, SPECS)


def test_check_failure_on_override_is_refused(make_node) -> None:
    node = make_node(("providers", ["", "x"]))
    spec = ParameterSpec("providers", ["CPUExecutionProvider"], "Providers.",
                         check=lambda v: "must not contain empty names" if "" in v else None)
    with pytest.raises(ParameterValueError, match="^parameter providers must not contain empty names$"):
        declare_parameters(node, [spec])


def test_declaration_stops_at_the_first_invalid_parameter(make_node) -> None:
    node = make_node(("encoding", "yuv"))
    with pytest.raises(ParameterValueError):
        declare_parameters(node, SPECS)
    assert node.has_parameter("encoding")
    assert not node.has_parameter("rate")


@pytest.mark.parametrize("override", [("rate", 5000.0), ("width", 4)])
def test_out_of_range_override_raises_parameter_value_error(make_node, override: tuple[str, Any]) -> None:
    node = make_node(override)
    with pytest.raises(ParameterValueError, match=f"parameter {override[0]} "):
        declare_parameters(node, SPECS)


@pytest.mark.parametrize("override, bounds", [
    (("rate", 5000.0), ">= 0.1 and <= 1000.0"), (("width", 4), ">= 8 and <= 8192"), (("threads", -1), ">= 0"),
])
def test_out_of_range_override_is_refused_naming_the_parameter(make_node, override: tuple[str, Any],
                                                                bounds: str) -> None:
    node = make_node(override)
    with pytest.raises(ParameterValueError, match=f"^parameter {override[0]} is out of range: it must be {bounds} "):
        declare_parameters(node, SPECS)


@pytest.mark.parametrize("override, expected", [
    (("width", "wide"), "integer"), (("rate", 30), "double"), (("encoding", 3), "string"),
    (("providers", [1, 2]), "string array"),
])
def test_wrong_type_override_is_refused_naming_the_parameter_and_type(make_node, override: tuple[str, Any],
                                                                      expected: str) -> None:
    node = make_node(override)
    with pytest.raises(ParameterValueError, match=f"^parameter {override[0]} must be of type {expected}, "):
        declare_parameters(node, SPECS)
