"""Manifest schema: typed fields with defaults, and errors that name the bad field."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from robot_model_deployer.bundle.manifest import (
    AcceptanceSpec, ColorOrder, DetectionFormat, Layout, Manifest, ManifestError, ResizeMode, Task, TensorType,
    manifest_from_dict, parse_manifest,
)
from robot_model_deployer.bundle.semver import SemVer
from robot_model_deployer.testing.models import classifier_manifest, detector_manifest

MINIMAL = {
    "schema_version": 1, "name": "tiny", "version": "0.1.0", "task": "classification",
    "model": "model.onnx", "input": {"width": 32, "height": 24},
}


def minimal(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def with_section(section: str, **fields: Any) -> dict[str, Any]:
    data = minimal()
    data[section] = {**data.get(section, {}), **fields}
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict(data)
    return str(info.value)


# Valid manifests -------------------------------------------------------------

def test_minimal_manifest_gets_documented_defaults() -> None:
    manifest = parse_manifest(yaml.safe_dump(MINIMAL))
    assert isinstance(manifest, Manifest)
    assert (manifest.name, manifest.task, manifest.model) == ("tiny", Task.CLASSIFICATION, "model.onnx")
    assert manifest.version == SemVer(0, 1, 0)
    spec = manifest.input
    assert (spec.width, spec.height, spec.name) == (32, 24, "")
    assert spec.resize is ResizeMode.STRETCH
    assert spec.color_order is ColorOrder.RGB
    assert spec.layout is Layout.NCHW
    assert spec.dtype is TensorType.FLOAT32
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert spec.letterbox_fill == 114
    assert spec.shape == (1, 3, 24, 32)
    assert manifest.classification.top_k == 5 and manifest.classification.softmax is False
    assert manifest.detection.format is DetectionFormat.YOLO
    assert manifest.detection.strides == (8, 16, 32)
    assert manifest.acceptance == AcceptanceSpec()
    assert manifest.quantization.allowed is True
    assert manifest.labels == "" and manifest.description == "" and manifest.target_hints == ()
    assert manifest.referenced_files() == ["model.onnx"]


def test_full_manifest_parses_every_section_into_typed_fields() -> None:
    text = """
schema_version: 1
name: yolo-nano_v2.1
version: 2.3.4-rc.1+build.7
task: Detection
model: models/net.onnx
labels: labels.txt
description: a detector
input:
  name: images
  width: 640
  height: 480
  resize: letterbox
  color_order: bgr
  layout: nhwc
  dtype: float16
  scale: 1.0
  mean: [1, 2, 3]
  std: [0.5, 0.25, 2]
  letterbox_fill: 0
classification: {top_k: 2, softmax: true, output_name: probs}
detection:
  format: yolox
  score_threshold: 0.5
  iou_threshold: 0.6
  max_detections: 10
  strides: [8, 16]
  class_agnostic_nms: true
  boxes_output: b
  scores_output: s
calibration: {images: [calib/a.png, ./calib/b.png]}
validation: {images: [val/1.png], expected: val/expected.yaml}
acceptance: {min_top1_agreement: 0.9, shadow_frames: 10, max_latency_ratio: 2}
quantization: {allowed: false, exclude_nodes: [head/Conv]}
target_hints: [cpu, cuda]
"""
    manifest = parse_manifest(text)
    assert manifest.name == "yolo-nano_v2.1"
    assert manifest.version == SemVer(2, 3, 4, ("rc", "1"), "build.7")
    assert str(manifest.version) == "2.3.4-rc.1+build.7"
    assert manifest.task is Task.DETECTION
    spec = manifest.input
    assert (spec.name, spec.resize, spec.color_order, spec.layout, spec.dtype) == (
        "images", ResizeMode.LETTERBOX, ColorOrder.BGR, Layout.NHWC, TensorType.FLOAT16)
    assert spec.scale == 1.0 and spec.mean == (1.0, 2.0, 3.0) and spec.std == (0.5, 0.25, 2.0)
    assert spec.letterbox_fill == 0
    assert spec.shape == (1, 480, 640, 3)
    assert manifest.classification.top_k == 2 and manifest.classification.softmax
    assert manifest.classification.output_name == "probs"
    det = manifest.detection
    assert det.format is DetectionFormat.YOLOX and det.strides == (8, 16) and det.class_agnostic_nms
    assert (det.score_threshold, det.iou_threshold, det.max_detections) == (0.5, 0.6, 10)
    assert (det.boxes_output, det.scores_output) == ("b", "s")
    assert manifest.calibration.images == ("calib/a.png", "calib/b.png")
    assert manifest.validation.expected == "val/expected.yaml"
    assert manifest.acceptance.min_top1_agreement == 0.9
    assert manifest.acceptance.shadow_frames == 10
    assert manifest.acceptance.max_latency_ratio == 2.0
    assert manifest.acceptance.min_detection_f1 == AcceptanceSpec().min_detection_f1
    assert manifest.quantization.allowed is False and manifest.quantization.exclude_nodes == ("head/Conv",)
    assert manifest.target_hints == ("cpu", "cuda")
    assert manifest.referenced_files() == [
        "models/net.onnx", "labels.txt", "calib/a.png", "calib/b.png", "val/1.png", "val/expected.yaml"]


def test_gray_input_has_one_channel_defaults() -> None:
    manifest = manifest_from_dict(with_section("input", color_order="gray", layout="nhwc"))
    assert manifest.input.channels == 1
    assert manifest.input.mean == (0.0,) and manifest.input.std == (1.0,)
    assert manifest.input.shape == (1, 24, 32, 1)


def test_testing_manifests_are_valid() -> None:
    assert manifest_from_dict(classifier_manifest()).task is Task.CLASSIFICATION
    assert manifest_from_dict(detector_manifest()).input.resize is ResizeMode.LETTERBOX


def test_null_optional_section_means_defaults() -> None:
    assert manifest_from_dict(minimal(detection=None)).detection.max_detections == 100


# Document-level errors ---------------------------------------------------------

def test_invalid_yaml_names_the_source() -> None:
    with pytest.raises(ManifestError, match=r"bundle/manifest.yaml is not valid YAML"):
        parse_manifest("name: [unclosed", "bundle/manifest.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", ""])
def test_manifest_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ManifestError, match="must be a YAML mapping"):
        parse_manifest(text)


@pytest.mark.parametrize("schema", [2, 99])
def test_unsupported_schema_version_says_what_this_robot_reads(schema: int) -> None:
    message = error_of(minimal(schema_version=schema))
    assert f"schema_version {schema} is not supported" in message
    assert "reads version 1" in message


@pytest.mark.parametrize("value, problem", [(0, "must be >= 1"), ("1", "must be an integer"),
                                            (True, "must be an integer"), (1.0, "must be an integer")])
def test_bad_schema_version_type_or_range(value: Any, problem: str) -> None:
    assert f"schema_version {problem}" in error_of(minimal(schema_version=value))


# Required fields -------------------------------------------------------------

@pytest.mark.parametrize("key", ["schema_version", "name", "version", "task", "model", "input"])
def test_missing_required_field_is_named(key: str) -> None:
    data = minimal()
    del data[key]
    assert f"{key} is required" in error_of(data)


@pytest.mark.parametrize("key", ["name", "model"])
def test_null_required_field_counts_as_missing(key: str) -> None:
    assert f"{key} is required" in error_of(minimal(**{key: None}))


@pytest.mark.parametrize("key", ["width", "height"])
def test_missing_required_input_field_is_named_with_its_section(key: str) -> None:
    data = minimal()
    del data["input"][key]
    assert f"input.{key} is required" in error_of(data)


def test_error_message_names_the_source_file() -> None:
    with pytest.raises(ManifestError, match=r"^/bundles/x/manifest.yaml: name is required"):
        manifest_from_dict({"schema_version": 1}, "/bundles/x/manifest.yaml")


# Wrong types -------------------------------------------------------------------

@pytest.mark.parametrize("data, field, problem", [
    (minimal(name=5), "name", "must be a string"),
    (minimal(version=1.2), "version", "must be a string"),
    (minimal(model=["a"]), "model", "must be a string"),
    (minimal(description=3), "description", "must be a string"),
    (minimal(input=[32, 24]), "input", "must be a mapping"),
    (minimal(detection="yolo"), "detection", "must be a mapping"),
    (minimal(target_hints="cpu"), "target_hints", "must be a list of strings"),
    (minimal(target_hints=["cpu", 1]), "target_hints", "must be a list of strings"),
    (with_section("input", width="32"), "input.width", "must be an integer"),
    (with_section("input", width=32.5), "input.width", "must be an integer"),
    (with_section("input", height=True), "input.height", "must be an integer"),
    (with_section("input", scale="0.1"), "input.scale", "must be a number"),
    (with_section("input", scale=True), "input.scale", "must be a number"),
    (with_section("input", mean=0.5), "input.mean", "must be a list of numbers"),
    (with_section("input", mean=[0, "a", 0]), "input.mean", "must be a list of numbers"),
    (with_section("input", std=[1, True, 1]), "input.std", "must be a list of numbers"),
    (with_section("input", name=7), "input.name", "must be a string"),
    (with_section("classification", softmax="yes"), "classification.softmax", "must be true or false"),
    (with_section("classification", top_k=2.0), "classification.top_k", "must be an integer"),
    (with_section("detection", class_agnostic_nms=1), "detection.class_agnostic_nms", "must be true or false"),
    (with_section("detection", strides=8), "detection.strides", "must be a non-empty list of integers"),
    (with_section("detection", strides=[]), "detection.strides", "must be a non-empty list of integers"),
    (with_section("quantization", allowed="no"), "quantization.allowed", "must be true or false"),
    (with_section("quantization", exclude_nodes=[1]), "quantization.exclude_nodes", "must be a list of strings"),
    (with_section("calibration", images="a.png"), "calibration.images", "must be a list of strings"),
    (with_section("acceptance", shadow_frames=1.5), "acceptance.shadow_frames", "must be an integer"),
])
def test_wrong_type_names_the_field(data: dict[str, Any], field: str, problem: str) -> None:
    assert f"{field} {problem}" in error_of(data)


# Ranges --------------------------------------------------------------------------

@pytest.mark.parametrize("data, field, problem", [
    (with_section("input", width=0), "input.width", "must be >= 1"),
    (with_section("input", height=8193), "input.height", "must be <= 8192"),
    (with_section("input", scale=0), "input.scale", "must be > 0.0"),
    (with_section("input", letterbox_fill=256), "input.letterbox_fill", "must be <= 255"),
    (with_section("input", letterbox_fill=-1), "input.letterbox_fill", "must be >= 0"),
    (with_section("classification", top_k=0), "classification.top_k", "must be >= 1"),
    (with_section("detection", score_threshold=1.5), "detection.score_threshold", "must be <= 1.0"),
    (with_section("detection", iou_threshold=-0.1), "detection.iou_threshold", "must be >= 0.0"),
    (with_section("detection", max_detections=0), "detection.max_detections", "must be >= 1"),
    (with_section("acceptance", max_latency_ratio=0), "acceptance.max_latency_ratio", "must be > 0.0"),
    (with_section("acceptance", min_top1_agreement=1.01), "acceptance.min_top1_agreement", "must be <= 1.0"),
    (with_section("acceptance", shadow_frames=-1), "acceptance.shadow_frames", "must be >= 0"),
])
def test_out_of_range_value_names_the_field_and_limit(data: dict[str, Any], field: str, problem: str) -> None:
    assert f"{field} {problem}" in error_of(data)


def test_range_limits_are_inclusive_where_documented() -> None:
    manifest = manifest_from_dict(with_section("input", width=8192, height=1, letterbox_fill=255))
    assert (manifest.input.width, manifest.input.height, manifest.input.letterbox_fill) == (8192, 1, 255)


# Enums ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, field, choices", [
    (minimal(task="semantic"), "task", "classification, detection, segmentation, instance_segmentation, pose"),
    (with_section("input", resize="crop"), "input.resize", "stretch, letterbox, center_crop"),
    (with_section("input", color_order="rgba"), "input.color_order", "rgb, bgr, gray"),
    (with_section("input", layout="chw"), "input.layout", "nchw, nhwc"),
    (with_section("input", dtype="int8"), "input.dtype", "float32, float16, uint8"),
    (with_section("detection", format="ssd"), "detection.format", "yolo, yolox, boxes_scores"),
])
def test_bad_enum_value_lists_the_choices(data: dict[str, Any], field: str, choices: str) -> None:
    message = error_of(data)
    assert f"{field} must be one of {choices}" in message


def test_enum_values_are_case_insensitive() -> None:
    manifest = manifest_from_dict(minimal(task="CLASSIFICATION", input={"width": 1, "height": 1, "layout": "NHWC"}))
    assert manifest.task is Task.CLASSIFICATION and manifest.input.layout is Layout.NHWC


# Name and version --------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "model_1.2-x", "0abc", "a" * 64])
def test_good_names(name: str) -> None:
    assert manifest_from_dict(minimal(name=name)).name == name


@pytest.mark.parametrize("name", ["", "Model", "_lead", "-lead", "has space", "a/b", "a" * 65, "ünï"])
def test_bad_name_is_refused_with_the_rule(name: str) -> None:
    message = error_of(minimal(name=name))
    assert f"name '{name}' must be 1-64 characters" in message


def test_name_with_trailing_newline_is_refused() -> None:
    assert "name 'model\n' must be 1-64 characters" in error_of(minimal(name="model\n"))


@pytest.mark.parametrize("version", ["1.2.3\n", "1.2.\u0663", "1.2.3-rc.\u0661"])
def test_version_with_trailing_newline_or_non_ascii_digits_is_refused(version: str) -> None:
    assert "is not a semantic version" in error_of(minimal(version=version))


@pytest.mark.parametrize("version", ["1", "1.2", "01.2.3", "1.2.3-", "1.2.3-01", "v1.2.3", "1.2.3+", "1.2.3-a..b"])
def test_bad_version_is_refused_with_an_example(version: str) -> None:
    message = error_of(minimal(version=version))
    assert f"version: '{version}' is not a semantic version such as 1.2.0" in message


# Unknown fields --------------------------------------------------------------

def test_unknown_top_level_fields_are_all_named() -> None:
    message = error_of(minimal(modle="x.onnx", zeta=1))
    assert "unknown field(s) modle, zeta" in message
    assert "misspelt" in message


@pytest.mark.parametrize("section", ["input", "classification", "detection", "calibration", "validation",
                                     "acceptance", "quantization"])
def test_unknown_field_in_a_section_is_named_with_the_section(section: str) -> None:
    assert f"unknown field(s) {section}.colour" in error_of(with_section(section, colour=1))


def test_unknown_field_in_calibration_is_refused() -> None:
    assert "calibration.imagez" in error_of(with_section("calibration", imagez=["a.png"]))


# Channels, mean and std --------------------------------------------------------

@pytest.mark.parametrize("color, key, values, channels", [
    ("rgb", "mean", [0.5, 0.5], 3), ("bgr", "std", [1, 1, 1, 1], 3),
    ("gray", "mean", [0.5, 0.5, 0.5], 1), ("gray", "std", [], 1),
])
def test_mean_and_std_need_one_value_per_channel(color: str, key: str, values: list, channels: int) -> None:
    message = error_of(with_section("input", color_order=color, **{key: values}))
    assert f"input.{key} must have {channels} values (one per input channel), got {len(values)}" in message


@pytest.mark.parametrize("std", [[1, 0, 1], [1, 1, -0.5]])
def test_std_must_be_positive(std: list) -> None:
    assert "input.std values must all be > 0" in error_of(with_section("input", std=std))


def test_mean_may_be_negative_or_zero() -> None:
    assert manifest_from_dict(with_section("input", mean=[-1, 0, 2])).input.mean == (-1.0, 0.0, 2.0)


def test_std_nan_is_refused() -> None:
    assert "input.std" in error_of(with_section("input", std=[float("nan"), 1, 1]))


@pytest.mark.parametrize("data, field", [
    (with_section("input", mean=[float("inf"), 0, 0]), "input.mean values must all be finite numbers"),
    (with_section("input", scale=float("nan")), "input.scale must be a finite number"),
    (with_section("input", scale=float("inf")), "input.scale must be a finite number"),
    (with_section("detection", score_threshold=float("nan")), "detection.score_threshold must be a finite number"),
    (with_section("acceptance", probation_seconds=10 ** 400), "acceptance.probation_seconds must be a finite number"),
])
def test_non_finite_numbers_are_refused(data: dict[str, Any], field: str) -> None:
    assert field in error_of(data)


@pytest.mark.parametrize("strides", [[8, 0], [-8]])
def test_strides_must_be_positive(strides: list) -> None:
    assert "detection.strides values must all be > 0" in error_of(with_section("detection", strides=strides))


@pytest.mark.parametrize("strides", [[0.5], [8, 16.0]])
def test_fractional_strides_are_refused(strides: list) -> None:
    assert "detection.strides must be a non-empty list of integers" in error_of(with_section("detection", strides=strides))


# Relative paths ------------------------------------------------------------------

@pytest.mark.parametrize("data, field", [
    (minimal(model="../model.onnx"), "model"),
    (minimal(model="/etc/model.onnx"), "model"),
    (minimal(model="sub/../../model.onnx"), "model"),
    (minimal(model="sub\\model.onnx"), "model"),
    (minimal(model="."), "model"),
    (minimal(labels="/labels.txt"), "labels"),
    (minimal(labels="a/../../labels.txt"), "labels"),
    (with_section("calibration", images=["ok.png", "../secret.png"]), "calibration.images"),
    (with_section("validation", images=["/abs.png"]), "validation.images"),
    (with_section("validation", expected="../expected.yaml"), "validation.expected"),
])
def test_paths_must_stay_inside_the_bundle(data: dict[str, Any], field: str) -> None:
    message = error_of(data)
    assert f"{field} '" in message
    assert "must be a relative path inside the bundle" in message


def test_relative_paths_are_normalised() -> None:
    manifest = manifest_from_dict(minimal(model="./models//net.onnx"))
    assert manifest.model == "models/net.onnx"


def test_empty_model_path_is_refused() -> None:
    assert "model is required" in error_of(minimal(model=""))


def test_empty_optional_path_means_none() -> None:
    assert manifest_from_dict(minimal(labels="")).labels == ""


# SemVer ordering ---------------------------------------------------------------

SEMVER_ORDER = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0"]


def test_semver_ordering_follows_semver_org() -> None:
    versions = [SemVer.parse(v) for v in SEMVER_ORDER]
    for lower, higher in zip(versions, versions[1:]):
        assert lower < higher and higher > lower, (str(lower), str(higher))
        assert lower <= higher and higher >= lower
        assert not higher < lower
    assert [str(v) for v in sorted(reversed(versions))] == SEMVER_ORDER


def test_numeric_prerelease_identifiers_sort_numerically_and_before_alphanumeric() -> None:
    assert SemVer.parse("1.0.0-2") < SemVer.parse("1.0.0-10")
    assert SemVer.parse("1.0.0-10") < SemVer.parse("1.0.0-a")
    assert SemVer.parse("1.0.0-rc.9") < SemVer.parse("1.0.0-rc.10")


def test_build_metadata_is_kept_but_ignored_for_ordering() -> None:
    a, b = SemVer.parse("1.2.3+linux.1"), SemVer.parse("1.2.3+arm")
    assert a.build == "linux.1" and str(a) == "1.2.3+linux.1"
    assert not a < b and not b < a and a <= b and a >= b
    assert SemVer.parse("1.2.3-rc.1+x") < SemVer.parse("1.2.3")


def test_semver_equality_and_hash_ignore_build_metadata_like_ordering() -> None:
    a, b = SemVer.parse("1.2.3+linux.1"), SemVer.parse("1.2.3+arm")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != SemVer.parse("1.2.3-rc.1+linux.1") and a != SemVer.parse("1.2.4+linux.1")
    assert a != "1.2.3+linux.1"


def test_semver_parse_fields() -> None:
    version = SemVer.parse("10.20.30-rc.1.x-y+001")
    assert (version.major, version.minor, version.patch) == (10, 20, 30)
    assert version.prerelease == ("rc", "1", "x-y")
    assert version.build == "001"
    assert str(version) == "10.20.30-rc.1.x-y+001"


@pytest.mark.parametrize("field, value, problem", [
    ("probation_warm_up_s", -1, "must be >= 0.0"),
    ("probation_answer_grace_s", -0.1, "must be >= 0.0"),
    ("probation_window_s", 0, "must be > 0.0"),
    ("probation_min_frames", 0, "must be >= 1"),
    ("probation_min_answered", 1.5, "must be <= 1.0"),
    ("probation_stall_s", 0, "must be > 0.0"),
])
def test_probation_thresholds_are_read_and_checked(field: str, value: float, problem: str) -> None:
    assert f"acceptance.{field} {problem}" in error_of(with_section("acceptance", **{field: value}))
    good = {"probation_min_frames": 30} if field == "probation_min_frames" else {field: 0.7}
    assert getattr(manifest_from_dict(with_section("acceptance", **good)).acceptance, field) == next(
        iter(good.values()))
