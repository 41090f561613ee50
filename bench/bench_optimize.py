#!/usr/bin/env python3
"""The optimize stage on real models: INT8 against FP32 on this CPU.

For EfficientNet-Lite0 (ImageNet classifier), when the ddddocr wheel is
installed its YOLOX text detector (common_det.onnx), when
tau-fibrils-yolo and ultralytics are installed a trained YOLOv8n
(testing/trained_yolo.py), and when ultralytics is installed Ultralytics'
yolov8n-seg at 320 (testing/yolo_export.py: the real architecture with
seeded weights, its head driven so masks are decoded for real, as
bench/bench_dense.py builds it; its weights say nothing about the photos),
in one run:
- runs optimize_bundle for a target profile (default x86_openvino when the
  openvino package is installed, else x86_cpu) and times the whole stage;
- reports every variant (accepted or why not), the FP32 and best accepted
  INT8 latency (p50/p99 over interleaved runs), their ratio, top-1
  agreement / box F1 / mask IoU with FP32, and artifact sizes;
- per INT8 variant, its score against FP32 in the gate's own measure
  (validation.metrics.TASK_MEASURES) and its speed against
  FP32 on the CPU (the stage times accepted ones; refused ones are rebuilt
  outside the stage and timed interleaved with FP32, never served);
- for the classifier also the chosen INT8 model's top-1 agreement on
  unfiltered photo variants (near-ties included), which the bundle's
  validation set leaves out;
- measures ONNX Runtime dynamic quantization (quantize_dynamic) against FP32,
  which the stage does not use, to show whether it would pay here.
Prints a table per model and the whole result as JSON.

    source scripts/env.sh
    python bench/bench_optimize.py [--target NAME] [--models a,b] [--cache DIR] [--runs N] [--json] [--json-out FILE]

Goals (from the issues): the CNN >= 1.8x faster than FP32 with >= 99% top-1
agreement; the detectors: an INT8 variant with F1 >= 0.95 against FP32 at
>= 1.8x FP32 speed, or an honest statement that none does. The seeded
segmentation model has no goal: its rows show what INT8 does to a -seg graph.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.demo import zoo
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor
from robot_model_deployer.optimize.compile import compile_cpu, compile_openvino
from robot_model_deployer.optimize.hardware import HardwareInfo, detect_hardware
from robot_model_deployer.optimize.int8_plan import target_int8_configs
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, load_bundle_image, optimize_bundle
from robot_model_deployer.optimize.quantize import quantize_model
from robot_model_deployer.optimize.report import OptimizationReport, VariantResult, format_table
from robot_model_deployer.optimize.targets import Accelerator, Precision, load_target_profile
from robot_model_deployer.testing import trained_yolo
from robot_model_deployer.testing.quant_models import write_image_bundle
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, ultralytics_version
from robot_model_deployer.validation.dense_metrics import GateMeasure
from robot_model_deployer.validation.metrics import measure_for, percentile

CNN_GOAL_SPEEDUP = 1.8
CNN_GOAL_AGREEMENT = 0.99
DETECTOR_GOAL_F1 = 0.95
DETECTOR_GOAL_SPEEDUP = 1.8
SEG_IMGSZ = 320
SEG_NAME = "yolov8n-seg"
# Where each measure of TASK_MEASURES lands in a VariantResult.
SCORE_FIELDS = {GateMeasure.TOP1: "top1_agreement", GateMeasure.BOX_F1: "detection_f1",
                GateMeasure.MASK_IOU: "mask_iou", GateMeasure.KEYPOINT_OKS: "keypoint_oks"}


def yolov8n_seg_bundle(cache_dir: str | Path | None = None, calibration: int = 16, validation: int = 12) -> Path:
    """Ultralytics yolov8n-seg (seeded weights, driven head) on skimage photo crops, rewritten under the cache."""
    if ultralytics_version() is None:
        raise trained_yolo.TrainedModelUnavailable("yolov8n-seg is exported by ultralytics (test-time tool): "
                                                   "pip install --no-deps ultralytics")
    model = onnx.load(str(export_yolo(SEG_NAME, SEG_IMGSZ, nc=80, head=DrivenHead(class_id=0))))
    images = list(zoo.photo_variants(np.random.default_rng(0), calibration + validation))
    manifest = {"schema_version": 1, "name": SEG_NAME, "version": "1.0.0", "task": "instance_segmentation",
                "description": "Ultralytics yolov8n-seg architecture, seeded weights, head driven (not trained)",
                "model": "model.onnx",
                "input": {"width": SEG_IMGSZ, "height": SEG_IMGSZ, "resize": "letterbox", "letterbox_fill": 114},
                "detection": {"score_threshold": 0.5}, "instances": {"mask_coefficients": 32}}
    root = Path(cache_dir if cache_dir is not None else trained_yolo.ZOO_CACHE) / f"{SEG_NAME}-seeded-{SEG_IMGSZ}"
    if root.exists():
        shutil.rmtree(root)
    return write_image_bundle(root, model, manifest, images[:calibration], images[calibration:], labels=())


BUNDLES = {"efficientnet_lite0": zoo.efficientnet_lite0_bundle, "ddddocr_common_det": zoo.ddddocr_detector_bundle,
           "tau_fibrils_yolov8n": trained_yolo.tau_fibrils_bundle, SEG_NAME: yolov8n_seg_bundle}
WEIGHTS = {"efficientnet_lite0": "trained (ImageNet)", "ddddocr_common_det": "trained (ddddocr)",
           "tau_fibrils_yolov8n": "trained (tau-fibrils-yolo)",
           SEG_NAME: "architecture only (seeded, head driven): says nothing about the photos"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="target profile (default: x86_openvino if openvino is installed, else x86_cpu)")
    parser.add_argument("--cache", type=Path, default=None, help="zoo cache directory")
    parser.add_argument("--runs", type=int, default=100, help="benchmark runs per variant")
    parser.add_argument("--models", default=",".join(BUNDLES), help=f"comma-separated subset of {', '.join(BUNDLES)}")
    parser.add_argument("--json", action="store_true", help="print only the JSON result on stdout (tables to stderr)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(BUNDLES)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(BUNDLES)}")
    text = sys.stderr if args.json else sys.stdout

    hardware = detect_hardware()
    target_name = args.target or ("x86_openvino" if hardware.openvino_version else "x86_cpu")
    target = load_target_profile(target_name)
    target = type(target)(**{**target.__dict__, "benchmark_runs": args.runs})
    machine = {
        "cpu": hardware.cpu.model_name, "cores": os.cpu_count(), "python": platform.python_version(),
        "onnxruntime": ort.__version__, "openvino": hardware.openvino_version or "not installed",
        "int8_dot_product": hardware.cpu.int8_dot_product, "avx512_vnni": hardware.cpu.avx512_vnni,
        "amx_int8": hardware.cpu.amx_int8, "target": target.name, "load_1min": round(os.getloadavg()[0], 2),
    }
    print(f"machine: {machine}\n", file=text, flush=True)
    results: dict[str, Any] = {"machine": machine, "models": {}}

    bundles = {}
    for name in args.models.split(","):
        try:
            bundles[name] = BUNDLES[name](args.cache)
        except (zoo.ZooUnavailable, trained_yolo.TrainedModelUnavailable) as exc:
            print(f"{name} skipped: {exc}\n", file=text)
            results["models"][name] = {"skipped": str(exc)}

    for name, root in bundles.items():
        bundle = load_bundle_dir(root)
        # Quantizers print progress on stdout (NNCF's bars): keep it for the JSON.
        with tempfile.TemporaryDirectory(prefix="rmd-bench-optimize-") as scratch, contextlib.redirect_stdout(text):
            out = Path(scratch) / "out"
            started = time.monotonic()
            report = optimize_bundle(bundle, target, out, hardware=hardware,
                                     progress=lambda p: print(f"  [{p.fraction:4.0%}] {p.variant}: {p.message}",
                                                              file=sys.stderr, flush=True))
            wall = time.monotonic() - started
            task = bundle.manifest.task
            summary = {"weights": WEIGHTS[name], "measure": measure_for(task).name,
                       **summarise(report, wall, task)}
            if task is Task.CLASSIFICATION:
                summary["unfiltered_top1_agreement"] = unfiltered_agreement(bundle, report, out)
            if task is Task.INSTANCE_SEGMENTATION:
                summary["fp32_mask_fill"] = mask_fill(bundle)
            summary["refused_int8_speed"] = refused_speed(bundle, report, target, hardware, args.runs,
                                                          Path(scratch))
            summary["int8_per_variant"] = per_variant(summary, task)
            summary["dynamic_quantization"] = dynamic_quantization(bundle, args.runs, Path(scratch))
            summary["load_1min_after"] = round(os.getloadavg()[0], 2)  # other jobs share the CPU
        results["models"][name] = summary
        print(f"== {name} ({task.value}; weights {WEIGHTS[name]}), target {target.name}", file=text)
        print(format_table(report), file=text)
        print(variant_lines(summary), file=text)
        print(verdict(name, summary, task), file=text)
        print(file=text)
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def score_of(variant: dict[str, Any], task: Task) -> float | None:
    """A variant summary's score against FP32 in the gate's measure for ``task``."""
    return variant[SCORE_FIELDS[measure_for(task).measure]]


def summarise(report: OptimizationReport, wall: float, task: Task) -> dict[str, Any]:
    fp32 = report.variant(FP32_FALLBACK)
    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    accepted = [v for v in int8 if v.accepted]
    best = min(accepted, key=lambda v: v.p50_ms) if accepted else None
    best_rejected = max((v for v in int8 if v.status.value == "rejected"),
                        key=lambda v: score_of(variant_summary(v), task) or 0.0, default=None)
    return {
        "wall_seconds": round(wall, 1),
        "chosen": report.chosen,
        "fp32": variant_summary(fp32),
        "best_int8": variant_summary(best) if best else None,
        "best_rejected_int8": variant_summary(best_rejected) if best_rejected else None,
        "int8_speedup_p50": round(fp32.p50_ms / best.p50_ms, 2) if best else None,
        "chosen_speedup_p50": round(report.speedup_over(FP32_FALLBACK) or 0.0, 2),
        "variants": [variant_summary(v) for v in report.variants],
    }


def variant_summary(v: VariantResult) -> dict[str, Any]:
    return {"name": v.name, "status": v.status.value, "p50_ms": v.p50_ms, "p99_ms": v.p99_ms,
            "top1_agreement": v.top1_agreement, "detection_f1": v.detection_f1, "score_drift": v.score_drift,
            "mask_iou": v.mask_iou, "keypoint_oks": v.keypoint_oks, "size_bytes": v.size_bytes, "reason": v.reason}


def unfiltered_agreement(bundle: BundleDir, report: OptimizationReport, out: Path, count: int = 100) -> float | None:
    """Top-1 agreement of the fastest accepted INT8 variant on photo variants FP32 may find ambiguous."""
    accepted = [v for v in report.variants if v.precision is Precision.INT8 and v.accepted]
    if not accepted:
        return None
    best = min(accepted, key=lambda v: v.p50_ms)
    reference = InferenceEngine.from_bundle(bundle, warmup_runs=1)
    candidate = best.artifact.open_engine(out, bundle.manifest, bundle.labels, warmup_runs=1)
    images = list(zoo.photo_variants(np.random.default_rng(123), count))
    same = sum(int(reference.infer(i).class_ids[0]) == int(candidate.infer(i).class_ids[0]) for i in images)
    return same / len(images)


def mask_fill(bundle: BundleDir) -> dict[str, float]:
    """How much of its box FP32's mask covers, over the validation images.

    Masks that fill their boxes make mask IoU a box comparison: it then cannot
    tell a variant that keeps the masks from one that does not.
    """
    engine = InferenceEngine.from_bundle(bundle, warmup_runs=0)
    fills = []
    for path in bundle.manifest.validation.images:
        prediction = engine.infer(load_bundle_image(bundle.path(path)))
        for mask, (x1, y1, x2, y2) in zip(prediction.masks, prediction.boxes[:, :4]):
            box = mask[max(int(y1), 0):int(np.ceil(y2)), max(int(x1), 0):int(np.ceil(x2))]
            fills.append(float(box.mean()) if box.size else 0.0)
    return {"median": round(float(np.median(fills)), 3) if fills else 0.0,
            "share_over_95pct": round(float(np.mean(np.asarray(fills) > 0.95)), 3) if fills else 0.0,
            "masks": len(fills)}


def refused_speed(bundle: BundleDir, report: OptimizationReport, target: Any, hardware: HardwareInfo, runs: int,
                  scratch: Path) -> list[dict[str, Any]]:
    """What each refused INT8 variant would have gained: rebuilt outside the stage with the same recipe,
    timed interleaved with FP32 on the CPU, never served."""
    refused = [v for v in report.variants if v.precision is Precision.INT8 and v.status.value == "rejected"]
    if not refused:
        return []
    preprocess = Preprocessor(bundle.manifest.input)
    calibration = [preprocess(load_bundle_image(bundle.path(p)), PixelFormat.RGB8)[0]
                   for p in bundle.manifest.calibration.images]
    reference = InferenceEngine.from_bundle(bundle, warmup_runs=5)
    engines: dict[str, InferenceEngine] = {"fp32": reference}
    quantized: dict[str, Path] = {}
    for variant in refused:
        config = next(c for c in target_int8_configs(target, hardware, variant.accelerator,
                                                     bundle.manifest.quantization.exclude_nodes)
                      if c.label == variant.quantization)
        if config.label not in quantized:
            quantized[config.label] = quantize_model(bundle.model_path, scratch / f"{config.label}.onnx",
                                                     calibration, reference.input_name, config).path
        compile_variant = compile_openvino if variant.accelerator is Accelerator.OPENVINO else compile_cpu
        artifact = compile_variant(quantized[config.label], scratch, variant.name, Precision.INT8)
        engines[variant.name] = artifact.open_engine(scratch, bundle.manifest, bundle.labels, warmup_runs=5)
    timings: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.session.run(None, {engine.input_name: calibration[0]})
            timings[name].append((time.perf_counter() - start) * 1000.0)
    fp32_p50 = percentile(timings["fp32"], 50)
    scores = {v.name: score_of(variant_summary(v), bundle.manifest.task) for v in refused}
    return [{"name": name, "score": scores[name], "fp32_p50_ms": round(fp32_p50, 3),
             "int8_p50_ms": round(percentile(timings[name], 50), 3),
             "speedup_p50": round(fp32_p50 / percentile(timings[name], 50), 2)}
            for name in engines if name != "fp32"]


def per_variant(summary: dict[str, Any], task: Task) -> list[dict[str, Any]]:
    """Every INT8 variant: its score against FP32 and its speed against FP32 on the CPU, measured in this run."""
    fp32 = summary["fp32"]["p50_ms"]
    refused = {r["name"]: r for r in summary["refused_int8_speed"]}
    rows = []
    for v in summary["variants"]:
        if not v["name"].startswith("int8"):
            continue
        score = score_of(v, task)
        if v["name"] in refused:
            speedup, timed = refused[v["name"]]["speedup_p50"], "rebuilt outside the stage"
        elif v["p50_ms"]:
            speedup, timed = round(fp32 / v["p50_ms"], 2), "in the stage"
        else:
            speedup, timed = None, "not timed"
        rows.append({"name": v["name"], "status": v["status"], "score_vs_fp32": score, "speedup_vs_fp32_cpu": speedup,
                     "timed": timed, "reason": v["reason"]})
    return rows


def variant_lines(summary: dict[str, Any]) -> str:
    lines = [f"INT8 variants (score = {summary['measure']} against FP32; speed = FP32 CPU p50 / variant p50):"]
    for row in summary["int8_per_variant"]:
        score = "-" if row["score_vs_fp32"] is None else f"{row['score_vs_fp32']:.3f}"
        speed = "-" if row["speedup_vs_fp32_cpu"] is None else f"{row['speedup_vs_fp32_cpu']:.2f}x"
        lines.append(f"  {row['name']:<40} {row['status']:<9} score {score:<6} speed {speed:<6} ({row['timed']})")
    return "\n".join(lines)


def dynamic_quantization(bundle: BundleDir, runs: int, scratch: Path) -> dict[str, Any]:
    """quantize_dynamic (weights INT8, activations quantized at run time) against FP32, interleaved."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = scratch / "dynamic.onnx"
    started = time.monotonic()
    try:
        quantize_dynamic(str(bundle.model_path), str(target), weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        dynamic = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # Report it: dynamic quantization is only measured, never used.
        return {"error": str(exc).splitlines()[0]}
    fp32 = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    image = load_bundle_image(bundle.path(bundle.manifest.validation.images[0]))
    tensor = Preprocessor(bundle.manifest.input)(image, PixelFormat.RGB8)[0]
    name = fp32.get_inputs()[0].name
    timings: dict[str, list[float]] = {"fp32": [], "dynamic": []}
    for session in (fp32, dynamic):
        for _ in range(5):
            session.run(None, {name: tensor})
    for _ in range(runs):
        for key, session in (("fp32", fp32), ("dynamic", dynamic)):
            start = time.perf_counter()
            session.run(None, {name: tensor})
            timings[key].append((time.perf_counter() - start) * 1000.0)
    p50 = {k: percentile(v, 50) for k, v in timings.items()}
    return {"fp32_p50_ms": round(p50["fp32"], 3), "dynamic_p50_ms": round(p50["dynamic"], 3),
            "speedup_p50": round(p50["fp32"] / p50["dynamic"], 2), "size_bytes": target.stat().st_size,
            "quantize_seconds": round(time.monotonic() - started, 1)}


def verdict(name: str, summary: dict[str, Any], task: Task) -> str:
    best = summary["best_int8"]
    dynamic = summary["dynamic_quantization"]
    dyn = (f"dynamic INT8 {dynamic['speedup_p50']}x FP32 (not used by the stage)" if "speedup_p50" in dynamic
           else f"dynamic INT8 failed: {dynamic.get('error')}")
    if best is None:
        refused = summary.get("refused_int8_speed") or []
        would = "; ".join(f"refused {r['name']} (score {r['score']:.3f}) would run {r['speedup_p50']}x FP32 "
                          f"({r['fp32_p50_ms']:.2f} -> {r['int8_p50_ms']:.2f} ms)" for r in refused) \
            or "no INT8 variant was built"
        return (f"{name}: no INT8 variant passed the gate; {would}; FP32 serves "
                f"({summary['fp32']['p50_ms']:.2f} ms). {dyn}; stage wall time {summary['wall_seconds']} s")
    speedup = summary["int8_speedup_p50"]
    if task is Task.CLASSIFICATION:
        ok = speedup >= CNN_GOAL_SPEEDUP and best["top1_agreement"] >= CNN_GOAL_AGREEMENT
        goal = f"goal >= {CNN_GOAL_SPEEDUP}x at >= {CNN_GOAL_AGREEMENT:.0%} top-1: {'met' if ok else 'NOT met'}"
        quality = f"top-1 agreement {best['top1_agreement']:.3f} (unfiltered photos {summary['unfiltered_top1_agreement']:.3f})"
    elif task is not Task.DETECTION:
        goal = "no goal set for this task (seeded weights)"
        quality = f"{summary['measure']} {score_of(best, task):.3f}"
        fill = summary.get("fp32_mask_fill")
        if fill:
            quality += (f" (FP32 masks fill a median {fill['median']:.0%} of their box, "
                        f"{fill['share_over_95pct']:.0%} of {fill['masks']} masks over 95%: "
                        f"{'IoU mostly compares boxes' if fill['median'] > 0.95 else 'masks have shape'})")
    else:
        ok = best["detection_f1"] >= DETECTOR_GOAL_F1 and speedup >= DETECTOR_GOAL_SPEEDUP
        goal = (f"goal F1 >= {DETECTOR_GOAL_F1} at >= {DETECTOR_GOAL_SPEEDUP}x: {'met' if ok else 'NOT met'}")
        quality = f"box F1 {best['detection_f1']:.3f}, score drift {best['score_drift']:.3f}"
    return (f"{name}: best INT8 {best['name']} {speedup}x FP32 p50 ({summary['fp32']['p50_ms']:.2f} -> "
            f"{best['p50_ms']:.2f} ms), {quality}, {best['size_bytes'] / 1e6:.1f} MB vs "
            f"{summary['fp32']['size_bytes'] / 1e6:.1f} MB; {goal}; chosen {summary['chosen']}; {dyn}; "
            f"stage wall time {summary['wall_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
