"""Which INT8 configurations the stage tries for one accelerator: the target's recipes, or the defaults.

Kept apart from recipes.py because it needs the CPU's INT8 advice
(hardware.py), which itself reads target profiles.
"""
from __future__ import annotations

from typing import Sequence

from robot_model_deployer.inference.accelerators import Accelerator
from robot_model_deployer.optimize.hardware import HardwareInfo, int8_advice
from robot_model_deployer.optimize.quantize import FloatRegion, Int8Scheme, QuantizationConfig, QuantTool
from robot_model_deployer.optimize.targets import TargetProfile


def default_int8_configs(hardware: HardwareInfo, accelerator: Accelerator,
                         exclude_nodes: Sequence[str] = ()) -> list[QuantizationConfig]:
    """INT8 recipes to try in order, per ORT's hardware advice; later ones keep more of the graph float."""
    excludes = tuple(exclude_nodes)
    if accelerator is Accelerator.TENSORRT:
        # TensorRT's explicit quantization expects symmetric signed activations and weights.
        schemes: tuple[Int8Scheme, ...] = (Int8Scheme.S8S8,)
        symmetric = True
    else:
        schemes = int8_advice(hardware.cpu).schemes
        symmetric = False
    configs = []
    for scheme in schemes:
        for region in (FloatRegion.DECODE_TAIL, FloatRegion.HEADS):
            configs.append(QuantizationConfig(scheme=scheme, per_channel=True, symmetric_activations=symmetric,
                                              float_region=region, exclude_nodes=excludes))
    return configs


def target_int8_configs(target: TargetProfile, hardware: HardwareInfo, accelerator: Accelerator,
                        exclude_nodes: Sequence[str] = ()) -> list[QuantizationConfig]:
    """The target's INT8 recipes for ``accelerator``, in order (ORT ones per scheme); the defaults if it lists none."""
    if not target.int8_recipes:
        return default_int8_configs(hardware, accelerator, exclude_nodes)
    tensorrt = accelerator is Accelerator.TENSORRT
    schemes = (Int8Scheme.S8S8,) if tensorrt else int8_advice(hardware.cpu).schemes
    configs = []
    for recipe in target.int8_recipes:
        if not recipe.serves(accelerator):
            continue
        if recipe.tool is QuantTool.NNCF:
            configs.append(recipe.config(Int8Scheme.S8S8, exclude_nodes=exclude_nodes))
        else:
            configs.extend(recipe.config(s, symmetric=tensorrt, exclude_nodes=exclude_nodes) for s in schemes)
    return configs
