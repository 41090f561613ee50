"""Target profiles: the shipped config loads, and every bad field fails naming itself."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robot_model_deployer.optimize.targets import (
    Accelerator, Precision, TargetConfigError, TargetProfile, load_target_profile,
    load_target_profiles,
)


def write_targets(tmp_path: Path, targets: dict) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": targets}), encoding="utf-8")
    return path


def test_shipped_targets_file_loads_every_profile() -> None:
    profiles = load_target_profiles(Path(__file__).resolve().parents[2] / "robot_model_deployer" / "optimize" / "targets.yaml")
    assert {"x86_cpu", "x86_openvino", "arm_cpu", "jetson_orin"} <= set(profiles)
    jetson = profiles["jetson_orin"]
    assert jetson.accelerators[0] is Accelerator.TENSORRT
    assert (Accelerator.CUDA, Precision.INT8) not in jetson.plan()  # CUDA EP has no INT8 path here.
    assert (Accelerator.TENSORRT, Precision.INT8) in jetson.plan()


def test_plan_keeps_profile_order(tmp_path: Path) -> None:
    path = write_targets(tmp_path, {"r": {"accelerators": ["openvino", "cpu"], "precisions": ["fp16", "int8"]}})
    plan = load_target_profile("r", path).plan()
    assert plan == [(Accelerator.OPENVINO, Precision.FP16), (Accelerator.OPENVINO, Precision.INT8),
                    (Accelerator.CPU, Precision.INT8)]


@pytest.mark.parametrize("entry, words", [
    ({"accelerators": ["npu"], "precisions": ["int8"]}, "accelerators"),
    ({"accelerators": ["cpu"], "precisions": []}, "precisions"),
    ({"accelerators": ["cpu"], "precisions": ["fp16"]}, "supports none"),
    ({"accelerators": ["cpu", "cpu"], "precisions": ["fp32"]}, "repeat"),
    ({"accelerators": ["cpu"], "precisions": ["fp32"], "time_limit_s": 0}, "time_limit_s"),
    ({"accelerators": ["cpu"], "precisions": ["fp32"], "max_memory_mb": -1}, "max_memory_mb"),
    ({"accelerators": ["cpu"], "precisions": ["fp32"], "benchmark_runs": 2.5}, "benchmark_runs"),
    ({"accelerators": ["cpu"], "precisions": ["fp32"], "warmup_runs": True}, "warmup_runs"),
    ({"accelerators": ["cpu"], "precisions": ["fp32"], "speed": "max"}, "unknown field"),
])
def test_bad_profile_fields_are_named(tmp_path: Path, entry: dict, words: str) -> None:
    path = write_targets(tmp_path, {"robot": entry})
    with pytest.raises(TargetConfigError, match=words) as error:
        load_target_profiles(path)
    assert "robot" in str(error.value)


def test_unknown_profile_lists_known_names(tmp_path: Path) -> None:
    path = write_targets(tmp_path, {"alpha": {"accelerators": ["cpu"], "precisions": ["fp32"]}})
    with pytest.raises(TargetConfigError, match="known: alpha"):
        load_target_profile("beta", path)


def test_file_without_targets_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text("robots: {}\n", encoding="utf-8")
    with pytest.raises(TargetConfigError, match="targets"):
        load_target_profiles(path)
    with pytest.raises(TargetConfigError, match="cannot read"):
        load_target_profiles(tmp_path / "missing.yaml")


def test_environment_variable_overrides_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_targets(tmp_path, {"only": {"accelerators": ["cpu"], "precisions": ["fp32"]}})
    monkeypatch.setenv("RMD_TARGETS_FILE", str(path))
    assert set(load_target_profiles()) == {"only"}


def test_profile_checks_itself_when_built_in_code() -> None:
    with pytest.raises(TargetConfigError, match="device_id"):
        TargetProfile("x", (Accelerator.CUDA,), (Precision.FP16,), device_id=-1)
