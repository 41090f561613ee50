"""INT8 recipes as data: named ways to quantize, listed per target in targets.yaml.

A recipe says which tool quantizes (ort or nncf), what stays float and how
ranges are calibrated; the signedness scheme for ORT comes from the CPU
(hardware.int8_advice), the exclusions from the bundle's manifest. The
stage tries a target's recipes in order and the gate keeps those that
still say what FP32 says, so adding a recipe is an edit to targets.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from robot_model_deployer.bundle.fields import FieldReader
from robot_model_deployer.inference.accelerators import Accelerator
from robot_model_deployer.optimize.quantize import (CalibrationMethod, FloatRegion, Int8Scheme, QuantizationConfig,
                                                    QuantTool)

# NNCF writes OpenVINO IR, which only the OpenVINO runtime serves.
TOOL_ACCELERATORS = {QuantTool.ORT: frozenset(Accelerator), QuantTool.NNCF: frozenset({Accelerator.OPENVINO})}


class RecipeError(ValueError):
    """A recipe in targets.yaml has a bad field; the message names it."""


@dataclass(frozen=True)
class Int8Recipe:
    """One named way to quantize; checked when read (a QuantizationConfig is built as a probe)."""

    name: str
    tool: QuantTool = QuantTool.ORT
    float_region: FloatRegion = FloatRegion.DECODE_TAIL
    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    percentile: float = QuantizationConfig.percentile
    accelerators: tuple[Accelerator, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        wrong = [a.value for a in self.accelerators if a not in TOOL_ACCELERATORS[self.tool]]
        if wrong:
            raise RecipeError(f"int8_recipes.{self.name}: tool {self.tool.value} cannot build for "
                              f"{', '.join(wrong)} (nncf builds OpenVINO IR: openvino only)")
        try:
            self.config(Int8Scheme.S8S8)
        except ValueError as exc:
            raise RecipeError(f"int8_recipes.{self.name}: {exc}") from None

    def serves(self, accelerator: Accelerator) -> bool:
        """Whether this recipe is tried for ``accelerator`` (its list, else all its tool builds for)."""
        return accelerator in (self.accelerators or TOOL_ACCELERATORS[self.tool])

    def config(self, scheme: Int8Scheme, symmetric: bool = False, exclude_nodes: Sequence[str] = ()
               ) -> QuantizationConfig:
        ort = self.tool is QuantTool.ORT
        return QuantizationConfig(scheme=scheme, calibration=self.calibration, percentile=self.percentile,
                                  symmetric_activations=symmetric and ort, float_region=self.float_region,
                                  exclude_nodes=tuple(exclude_nodes), tool=self.tool)


def recipes_from_dict(data: Any, source: str) -> dict[str, Int8Recipe]:
    """The ``int8_recipes:`` mapping of targets.yaml, by name."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: int8_recipes must be a mapping of recipe names to fields")
    recipes = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise RecipeError(f"{source}: int8_recipes.{name} must be a mapping of fields")
        r = FieldReader(entry, source, schema=Int8Recipe, error=RecipeError, prefix=f"int8_recipes.{name}.")
        fields = dict(name=str(name), tool=r.enum("tool", QuantTool), float_region=r.enum("float_region", FloatRegion),
                      calibration=r.enum("calibration", CalibrationMethod),
                      percentile=r.number("percentile", minimum=50.0, maximum=100.0),
                      accelerators=r.enums("accelerators", Accelerator), description=r.string("description"))
        r.reject_unknown()
        recipes[str(name)] = Int8Recipe(**fields)
    return recipes

