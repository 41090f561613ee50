"""The optimize stage end to end on tiny real models: gate, fallback, report, cancel, limits."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.deploy.serving import open_optimized_engine
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.openvino_session import openvino_available
from robot_model_deployer.optimize.hardware import HardwareInfo, detect_hardware, parse_cpu_features
from robot_model_deployer.optimize.pipeline import (
    FP32_FALLBACK, ModelRefusedError, OptimizationCancelled, OptimizeProgress, optimize_bundle,
)
from robot_model_deployer.optimize.report import OptimizationReport, VariantStatus
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.testing.models import COLOUR_LABELS, classifier_manifest, colour_classifier
from robot_model_deployer.testing.quant_models import (
    colour_images, conv_classifier, outlier_classifier, write_image_bundle,
)
from robot_model_deployer.validation.labelled import load_bundle_image

SIZE = 32
CPU_ONLY = TargetProfile("test_cpu", (Accelerator.CPU,), (Precision.INT8, Precision.FP32), benchmark_runs=5,
                         warmup_runs=1)


def make_bundle(root: Path, model: onnx.ModelProto, **manifest_changes: object) -> BundleDir:
    manifest = {**classifier_manifest(size=SIZE), **manifest_changes}
    write_image_bundle(root, model, manifest, colour_images(8, SIZE, seed=1), colour_images(12, SIZE, seed=2))
    return load_bundle_dir(root)


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_int8_passes_the_gate_and_the_report_records_every_variant(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    before = tree_digest(bundle.root)
    out = tmp_path / "out"
    report = optimize_bundle(bundle, CPU_ONLY, out)

    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    assert int8 and int8[0].status is VariantStatus.ACCEPTED and int8[0].top1_agreement == 1.0
    fp32 = report.variant(FP32_FALLBACK)
    assert fp32.accepted and fp32.p50_ms is not None and fp32.p99_ms >= fp32.p50_ms
    assert report.chosen in {v.name for v in report.variants if v.accepted}
    assert OptimizationReport.read(out).to_json() == report.to_json()
    for variant in report.variants:
        if variant.accepted:
            assert all((out / f).is_file() for f in variant.artifact.files())
    chosen = report.chosen_variant.artifact.open_engine(out, bundle.manifest, bundle.labels, warmup_runs=1)
    for index, image in enumerate(colour_images(3, SIZE, seed=9)):
        assert chosen.infer(image).labels[0] == COLOUR_LABELS[index]
    assert tree_digest(bundle.root) == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_broken_int8_is_rejected_and_fp32_is_chosen(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", outlier_classifier(SIZE))
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    assert int8 and all(v.status is VariantStatus.REJECTED for v in int8)
    assert all("top-1 agreement" in v.reason and v.top1_agreement < 0.99 for v in int8)
    assert report.chosen == FP32_FALLBACK
    assert not any((tmp_path / "out" / f).exists() for v in int8 for f in v.artifact.files())


def test_a_model_whose_own_fp32_outputs_nan_is_refused_whole_not_served_as_the_fallback(tmp_path: Path) -> None:
    # NaN unless the image is mostly green: FP32 breaks on two thirds of the validation images.
    bundle = make_bundle(tmp_path / "bundle", colour_classifier(SIZE, nan_unless="green"))
    with pytest.raises(ModelRefusedError, match=r"own FP32 output is NaN or infinite on 8 of 12 validation images "
                                                r"\(first: validation/000.png\)"):
        optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_model_below_its_stated_accuracy_is_refused(tmp_path: Path) -> None:
    # Labels say image i is colour i % 3; the model answers the next colour on every image.
    expected = "".join(f"validation/{i:03d}.png: {{class_id: {i % 3}}}\n" for i in range(12)).encode()
    for shift, refused in ((1, True), (0, False)):
        root = tmp_path / f"shift{shift}"
        manifest = {**classifier_manifest(size=SIZE), "acceptance": {"min_accuracy": 0.9},
                    "validation": {"expected": "expected.yaml"}}
        (root).mkdir()
        (root / "expected.yaml").write_bytes(expected)
        write_image_bundle(root, colour_classifier(SIZE, label_shift=shift), manifest,
                           colour_images(8, SIZE, seed=1), colour_images(12, SIZE, seed=2))
        bundle = load_bundle_dir(root)
        if refused:
            with pytest.raises(ModelRefusedError, match="top-1 accuracy against validation.expected is 0.000, "
                                                        "below the 0.900 its bundle states"):
                optimize_bundle(bundle, CPU_ONLY, tmp_path / f"out{shift}")
        else:
            assert optimize_bundle(bundle, CPU_ONLY, tmp_path / f"out{shift}").chosen


def test_cancel_stops_early_and_writes_nothing(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    before = tree_digest(bundle.root)
    cancel = threading.Event()
    seen: list[OptimizeProgress] = []

    def on_progress(step: OptimizeProgress) -> None:
        seen.append(step)
        if step.variant.startswith("int8"):
            cancel.set()

    with pytest.raises(OptimizationCancelled):
        optimize_bundle(bundle, CPU_ONLY, tmp_path / "out", progress=on_progress, cancel=cancel)
    assert seen and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert tree_digest(bundle.root) == before


def test_progress_is_monotonic_and_ends_complete(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    seen: list[OptimizeProgress] = []
    optimize_bundle(bundle, CPU_ONLY, tmp_path / "out", progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[-1].variant == "benchmark"


def test_time_limit_skips_variants_and_fp32_still_serves(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    hurried = TargetProfile("hurried", (Accelerator.CPU,), (Precision.INT8,), time_limit_s=1e-6, benchmark_runs=2,
                            warmup_runs=0)
    report = optimize_bundle(bundle, hurried, tmp_path / "out")
    assert report.time_limited
    skipped = [v for v in report.variants if v.status is VariantStatus.SKIPPED]
    assert skipped and all("time limit" in v.reason for v in skipped)
    assert report.chosen_variant.precision is Precision.FP32 and report.chosen_variant.accepted


def test_missing_accelerators_are_skipped_with_a_reason(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    cpu_only_machine = HardwareInfo(parse_cpu_features("flags : avx2 avx512_vnni\n", "x86_64"), "1.32.0",
                                    ("CPUExecutionProvider",))
    jetson = TargetProfile("jetson", (Accelerator.TENSORRT, Accelerator.CUDA), (Precision.FP16,), benchmark_runs=2,
                           warmup_runs=0)
    report = optimize_bundle(bundle, jetson, tmp_path / "out", hardware=cpu_only_machine)
    gpu = [v for v in report.variants if v.accelerator in (Accelerator.TENSORRT, Accelerator.CUDA)]
    assert len(gpu) == 2 and all(v.status is VariantStatus.SKIPPED and "ExecutionProvider" in v.reason for v in gpu)
    assert report.chosen == FP32_FALLBACK


def test_manifest_can_forbid_quantization(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE), quantization={"allowed": False})
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    assert len(int8) == 1 and int8[0].status is VariantStatus.SKIPPED and "allowed" in int8[0].reason


def test_memory_limit_rejects_a_variant_but_never_the_fallback(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    tiny = TargetProfile("tiny", (Accelerator.CPU,), (Precision.FP32,), max_memory_mb=1e-9, benchmark_runs=2,
                         warmup_runs=0)
    report = optimize_bundle(bundle, tiny, tmp_path / "out")
    assert report.chosen_variant.accepted
    for variant in report.variants:
        if variant.status is VariantStatus.REJECTED:
            assert "max_memory_mb" in variant.reason


def test_bad_inputs_are_refused_before_any_work(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        optimize_bundle(bundle, CPU_ONLY, busy)
    no_validation = make_bundle(tmp_path / "bundle2", conv_classifier(SIZE))
    stripped = BundleDir(no_validation.root, no_validation.manifest.__class__(
        **{**no_validation.manifest.__dict__, "validation": type(no_validation.manifest.validation)()}),
        no_validation.labels)
    with pytest.raises(ValueError, match="validation.images"):
        optimize_bundle(stripped, CPU_ONLY, tmp_path / "out")


def test_npy_and_grey_images_load_as_rgb(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.save(tmp_path / "grey.npy", grey)
    image = load_bundle_image(tmp_path / "grey.npy")
    assert image.shape == (3, 4, 3) and (image[:, :, 1] == grey).all()
    np.save(tmp_path / "float.npy", grey.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_bundle_image(tmp_path / "float.npy")


@pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed (pip extra 'openvino')")
def test_openvino_variants_are_built_gated_and_measured(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    target = TargetProfile("ov", (Accelerator.CPU, Accelerator.OPENVINO), (Precision.INT8, Precision.FP32),
                           benchmark_runs=3, warmup_runs=1)
    report = optimize_bundle(bundle, target, tmp_path / "out", hardware=detect_hardware())
    openvino = [v for v in report.variants if v.accelerator is Accelerator.OPENVINO and v.accepted]
    assert {v.precision for v in openvino} == {Precision.INT8, Precision.FP32}
    assert all(v.providers == ("OpenVINO:CPU",) and v.p50_ms is not None for v in openvino)


def test_node_opens_the_chosen_variant_and_falls_back_when_it_is_gone(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    out = tmp_path / "out"
    report = optimize_bundle(bundle, CPU_ONLY, out)
    variant, engine = open_optimized_engine(out, bundle, warmup_runs=1)
    assert variant.name == report.chosen
    for name in report.chosen_variant.artifact.files():
        (out / name).unlink()
    fallback, engine = open_optimized_engine(out, bundle, warmup_runs=1)
    assert fallback.name != report.chosen and fallback.accepted
    assert engine.infer(colour_images(1, SIZE)[0]).labels[0] == "red"


@pytest.mark.parametrize("flags, machine, first_scheme", [
    ("flags : avx2 avx512_vnni\n", "x86_64", "s8s8"),
    ("flags : avx2 fma\n", "x86_64", "s8s8_reduce_range"),
    ("Features : asimd asimddp\n", "aarch64", "s8s8"),
])
def test_int8_recipes_follow_the_cpu(tmp_path: Path, flags: str, machine: str, first_scheme: str) -> None:
    bundle = make_bundle(tmp_path / "bundle", conv_classifier(SIZE))
    hardware = HardwareInfo(parse_cpu_features(flags, machine), "1.32.0", ("CPUExecutionProvider",))
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out", hardware=hardware)
    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    assert int8[0].quantization.startswith(first_scheme + "-") and int8[0].accepted
