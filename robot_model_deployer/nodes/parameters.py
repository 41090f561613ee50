"""Declaring node parameters with descriptions and validating them in one place."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter


class ParameterValueError(ValueError):
    """A parameter has a value the node cannot work with."""


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its default, what it means and which values are valid."""

    name: str
    default: Any
    description: str
    choices: Sequence[str] = ()
    minimum: float | None = None
    maximum: float | None = None
    read_only: bool = False
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        descriptor = ParameterDescriptor(description=text, read_only=self.read_only)
        if self.minimum is not None or self.maximum is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(self.minimum if self.minimum is not None else -2**31),
                    to_value=int(self.maximum if self.maximum is not None else 2**31 - 1), step=0)]
            elif isinstance(self.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.minimum if self.minimum is not None else -1e300),
                    to_value=float(self.maximum if self.maximum is not None else 1e300), step=0.0)]
        return descriptor

    def bounds(self) -> str:
        """The allowed range in words, e.g. ">= 0.1 and <= 1000.0"."""
        limits = [f">= {self.minimum}"] if self.minimum is not None else []
        limits += [f"<= {self.maximum}"] if self.maximum is not None else []
        return " and ".join(limits) or "any value"

    def validate(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ParameterValueError(f"parameter {self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ParameterValueError(f"parameter {self.name} must be >= {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ParameterValueError(f"parameter {self.name} must be <= {self.maximum}, got {value!r}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ParameterValueError(f"parameter {self.name} {problem}")


def declare_parameters(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, Any]:
    """Declare every spec on the node and return the validated values by name.

    Raises ParameterValueError naming the parameter when a value is invalid,
    so a node refuses to start with a setting it would misuse.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        # rclpy applies the descriptor's range and the default's type to an override
        # before we see the value; its exceptions become ours, naming what is allowed.
        # (Other ParameterExceptions, such as a name declared twice, are bugs, not values.)
        try:
            value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except InvalidParameterValueException as exc:
            raise ParameterValueError(
                f"parameter {spec.name} is out of range: it must be {spec.bounds()} (rclpy: {exc})"
            ) from exc
        except InvalidParameterTypeException as exc:
            expected = Parameter.Type.from_parameter_value(spec.default).name.lower().replace("_", " ")
            raise ParameterValueError(
                f"parameter {spec.name} must be of type {expected}, like its default {spec.default!r} "
                f"(rclpy: {exc})"
            ) from exc
        spec.validate(value)
        values[spec.name] = value
    return values


def parameters_help(program: str, summary: str, specs: Sequence[ParameterSpec]) -> str:
    """``--help`` text of a node executable, generated from the specs it declares (one source)."""
    lines = [f"usage: {program} [--ros-args [-r __node:=NAME] [-r __ns:=/NAMESPACE] [--params-file FILE] "
             "[-p NAME:=VALUE ...]]", ""]
    if summary:
        lines += [summary, ""]
    lines.append("parameters (set with -p NAME:=VALUE or a --params-file YAML block for this node):")
    for spec in specs:
        kind = Parameter.Type.from_parameter_value(spec.default).name.lower().replace("_", " ")
        allowed = ""
        if spec.choices:
            allowed = f"; one of: {', '.join(spec.choices)}"
        elif spec.minimum is not None or spec.maximum is not None:
            allowed = f"; {spec.bounds()}"
        read_only = "; read-only" if spec.read_only else ""
        lines.append(f"  {spec.name} ({kind}, default {spec.default!r}{allowed}{read_only})")
        lines += [f"      {line}" for line in textwrap.wrap(spec.description, 90)]
    lines += ["", "A value the node cannot use ends it with exit code 1 and one line naming the parameter."]
    return "\n".join(lines)
