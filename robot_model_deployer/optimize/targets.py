"""Target profiles: what each robot may try when optimizing a model.

A profile (one per robot model, in targets.yaml beside this module) names the
accelerators and precisions worth trying there and the limits the optimize
stage must respect. It is read once and checked up front, so a typo fails
with the field named instead of silently trying nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from robot_model_deployer.bundle.fields import FieldReader
from robot_model_deployer.bundle.strict_yaml import StrictYamlError, load_strict_yaml
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.optimize.recipes import Int8Recipe, RecipeError, recipes_from_dict

TARGETS_FILE_ENV = "RMD_TARGETS_FILE"
_SHIPPED_TARGETS = "targets.yaml"


def default_targets_file() -> Path:
    """$RMD_TARGETS_FILE, else the profiles shipped as package data beside this module.

    Package data, so a pip install, a wheel and the colcon install space all
    find them, with or without ROS and the checkout. Each installs the package
    as plain directories, so the resource is a file with a path.
    """
    override = os.environ.get(TARGETS_FILE_ENV)
    if override:
        return Path(override)
    return Path(str(resources.files(__package__) / _SHIPPED_TARGETS))


class TargetConfigError(ValueError):
    """targets.yaml has a missing or bad field; the message names it."""


# Which precisions each accelerator can serve; anything else is a config error.
SUPPORTED_PRECISIONS: dict[Accelerator, frozenset[Precision]] = {
    Accelerator.CPU: frozenset({Precision.FP32, Precision.INT8}),
    Accelerator.OPENVINO: frozenset({Precision.FP32, Precision.FP16, Precision.INT8}),
    Accelerator.CUDA: frozenset({Precision.FP32, Precision.FP16}),
    Accelerator.TENSORRT: frozenset({Precision.FP32, Precision.FP16, Precision.INT8}),
}


@dataclass(frozen=True)
class TargetProfile:
    """One robot's optimization plan and limits.

    ``accelerators`` are tried in order, each with every precision in
    ``precisions`` it supports; FP32 on the CPU is always built as the
    fallback whatever the profile says. ``time_limit_s`` bounds the whole
    stage (variants not reached are reported as skipped);
    ``max_memory_mb`` rejects a variant whose loaded session grows the
    process by more than that. ``int8_recipes`` are tried in order for
    INT8 (empty: int8_plan.default_int8_configs).
    """

    name: str
    accelerators: tuple[Accelerator, ...]
    precisions: tuple[Precision, ...]
    time_limit_s: float = 600.0
    max_memory_mb: float = 0.0
    benchmark_runs: int = 50
    warmup_runs: int = 5
    device_id: int = 0
    description: str = ""
    int8_recipes: tuple[Int8Recipe, ...] = ()

    def __post_init__(self) -> None:
        where = f"target '{self.name}'"
        if not self.accelerators:
            raise TargetConfigError(f"{where}: accelerators must list at least one of "
                                    f"{', '.join(a.value for a in Accelerator)}")
        if not self.precisions:
            raise TargetConfigError(f"{where}: precisions must list at least one of "
                                    f"{', '.join(p.value for p in Precision)}")
        if len(set(self.accelerators)) != len(self.accelerators) or len(set(self.precisions)) != len(self.precisions):
            raise TargetConfigError(f"{where}: accelerators and precisions must not repeat entries")
        for accelerator in self.accelerators:
            if not SUPPORTED_PRECISIONS[accelerator] & set(self.precisions):
                supported = ", ".join(sorted(p.value for p in SUPPORTED_PRECISIONS[accelerator]))
                raise TargetConfigError(f"{where}: accelerator {accelerator.value} supports none of the listed "
                                        f"precisions; add one of {supported}")
        if self.time_limit_s <= 0:
            raise TargetConfigError(f"{where}: time_limit_s must be > 0, got {self.time_limit_s}")
        if self.max_memory_mb < 0:
            raise TargetConfigError(f"{where}: max_memory_mb must be >= 0 (0 = no limit), got {self.max_memory_mb}")
        if self.benchmark_runs < 1:
            raise TargetConfigError(f"{where}: benchmark_runs must be >= 1, got {self.benchmark_runs}")
        if self.warmup_runs < 0:
            raise TargetConfigError(f"{where}: warmup_runs must be >= 0, got {self.warmup_runs}")
        if self.device_id < 0:
            raise TargetConfigError(f"{where}: device_id must be >= 0, got {self.device_id}")

    def plan(self) -> list[tuple[Accelerator, Precision]]:
        """(accelerator, precision) pairs in the order the profile lists them, unsupported pairs left out."""
        return [(a, p) for a in self.accelerators for p in self.precisions if p in SUPPORTED_PRECISIONS[a]]


def load_target_profiles(path: str | Path | None = None) -> dict[str, TargetProfile]:
    """Every profile in a targets YAML file (default: default_targets_file()), by name; raises TargetConfigError."""
    path = Path(path) if path is not None else default_targets_file()
    try:
        data = load_strict_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise TargetConfigError(f"cannot read target profiles {path}: {exc.strerror}") from None
    except StrictYamlError as exc:
        raise TargetConfigError(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict) or not data["targets"]:
        raise TargetConfigError(f"{path} must be a mapping with a non-empty 'targets:' mapping of profile names")
    unknown = set(data) - {"targets", "int8_recipes"}
    if unknown:
        raise TargetConfigError(f"{path}: unknown top-level field(s) {', '.join(sorted(map(str, unknown)))}; "
                                f"expected targets and int8_recipes")
    try:
        recipes = recipes_from_dict(data.get("int8_recipes"), str(path))
    except RecipeError as exc:
        raise TargetConfigError(str(exc)) from None
    return {str(name): profile_from_dict(str(name), entry, str(path), recipes)
            for name, entry in data["targets"].items()}


def load_target_profile(name: str, path: str | Path | None = None) -> TargetProfile:
    """One named profile; the error lists the names there are."""
    profiles = load_target_profiles(path)
    if name not in profiles:
        source = path if path is not None else default_targets_file()
        raise TargetConfigError(f"no target profile '{name}' in {source}; known: {', '.join(sorted(profiles))}")
    return profiles[name]


def profile_from_dict(name: str, entry: Any, source: str = "targets.yaml",
                      recipes: Mapping[str, Int8Recipe] | None = None) -> TargetProfile:
    """Build one profile from parsed YAML; errors name the file, the profile and the field.

    ``int8_recipes`` lists names of ``recipes`` (the file's int8_recipes)
    or inline recipe mappings with a ``name`` (as a child process gets them).
    """
    if not isinstance(entry, Mapping):
        raise TargetConfigError(f"{source}: targets.{name} must be a mapping of fields")
    entry = dict(entry)
    chosen = _resolve_recipes(name, entry.pop("int8_recipes", None), recipes or {}, source)
    r = FieldReader(entry, source, schema=TargetProfile, error=TargetConfigError, prefix=f"targets.{name}.")
    fields = dict(
        name=name,
        accelerators=r.enums("accelerators", Accelerator, required=True),
        precisions=r.enums("precisions", Precision, required=True),
        time_limit_s=r.number("time_limit_s"),
        max_memory_mb=r.number("max_memory_mb"),
        benchmark_runs=r.integer("benchmark_runs"),
        warmup_runs=r.integer("warmup_runs"),
        device_id=r.integer("device_id"),
        description=r.string("description"),
        int8_recipes=chosen,
    )
    r.reject_unknown()
    try:
        return TargetProfile(**fields)
    except TargetConfigError as exc:
        raise TargetConfigError(f"{source}: {exc}") from None


def _resolve_recipes(target: str, listed: Any, recipes: Mapping[str, Int8Recipe], source: str
                     ) -> tuple[Int8Recipe, ...]:
    if listed is None:
        return ()
    if not isinstance(listed, list):
        raise TargetConfigError(f"{source}: targets.{target}.int8_recipes must be a list of recipe names")
    chosen = []
    for item in listed:
        if isinstance(item, Mapping):
            fields = dict(item)
            inline_name = str(fields.pop("name", ""))
            try:
                chosen.append(recipes_from_dict({inline_name: fields}, source)[inline_name])
            except RecipeError as exc:
                raise TargetConfigError(str(exc)) from None
        elif isinstance(item, str) and item in recipes:
            chosen.append(recipes[item])
        else:
            known = ", ".join(sorted(recipes)) or "none defined"
            raise TargetConfigError(f"{source}: targets.{target}.int8_recipes names {item!r}, which is not in "
                                    f"int8_recipes (known: {known})")
    return tuple(chosen)
