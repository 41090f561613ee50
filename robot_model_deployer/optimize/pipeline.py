"""The optimize stage: build variants, gate them against FP32, measure them, keep the fastest.

Meant to run in a worker thread (never an executor thread): it reports
progress per step through a callback, checks a ``threading.Event`` between
steps to stop early, and respects the target's time limit. It works in a
scratch directory beside ``out_dir`` and renames it into place only when it
finishes, so a failure or a cancel leaves neither the bundle nor ``out_dir``
changed. FP32 on the CPU is always among the results as the fallback, once
FP32 itself has passed check_reference (a broken model is refused whole).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.artifacts import CompiledArtifact
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.inference.preprocess import PixelFormat, Preprocessor
from robot_model_deployer.optimize.compile import CompileError, compile_cpu, compile_gpu, compile_openvino
from robot_model_deployer.optimize.gate import check_reference, check_variant
from robot_model_deployer.optimize.hardware import HardwareInfo, detect_hardware, int8_advice
from robot_model_deployer.optimize.quantize import (Int8Scheme, QuantizationConfig, QuantizationError,
                                                    QuantizedModel, QuantTool, quantize_model)
from robot_model_deployer.optimize.report import OptimizationReport, VariantResult, VariantStatus
from robot_model_deployer.isolation.child import report_progress
from robot_model_deployer.optimize.int8_plan import target_int8_configs
from robot_model_deployer.optimize.targets import TargetProfile, profile_from_dict
from robot_model_deployer.validation.labelled import load_bundle_image, load_expected_outputs
from robot_model_deployer.validation.metrics import percentile

FP32_FALLBACK = "fp32-cpu"


class OptimizationCancelled(RuntimeError):
    """The cancel event was set; nothing was written."""


class ModelRefusedError(ValueError):
    """The bundle's own FP32 model is broken on its validation set (NaN/Inf, or below its stated accuracy).

    Not a variant failure: no variant can be equivalent to a broken
    reference, and serving the model as shipped would serve the breakage.
    Nothing was written.
    """


@dataclass(frozen=True)
class OptimizeProgress:
    """One step of the stage, for action feedback or a status topic."""

    step: int
    total_steps: int
    variant: str
    message: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 1.0


ProgressCallback = Callable[[OptimizeProgress], None]


def optimize_bundle(bundle: BundleDir, target: TargetProfile, out_dir: str | Path, *,
                    hardware: HardwareInfo | None = None, progress: ProgressCallback | None = None,
                    cancel: threading.Event | None = None,
                    int8_configs: Callable[[HardwareInfo, Accelerator], list[QuantizationConfig]] | None = None,
                    ) -> OptimizationReport:
    """Optimize ``bundle`` for ``target``; artifacts and the report land in ``out_dir``.

    ``out_dir`` must not exist yet or be empty. Raises OptimizationCancelled
    when ``cancel`` is set (nothing written), ModelRefusedError when the
    bundle's own FP32 model is broken, ValueError for unusable inputs; a
    variant that fails is recorded in the report, never raised.
    """
    run = _Run(bundle, target, Path(out_dir), hardware or detect_hardware(), progress, cancel, int8_configs)
    return run.execute()


def optimize_in_child(bundle_dir: str, target_name: str, target: Mapping[str, Any], out_dir: str) -> dict[str, Any]:
    """optimize_bundle as the target of isolation.child.run_in_child: JSON-able arguments, the report as a dict.

    ``target`` holds the profile's fields as in targets.yaml. Progress goes to
    the parent as {"fraction", "message"}; a cancel is the parent killing this
    process (the scratch directory it leaves is removed by the next run).
    """
    def forward(step: OptimizeProgress) -> None:
        report_progress({"fraction": step.fraction, "message": f"{step.variant}: {step.message}"})

    report = optimize_bundle(load_bundle_dir(bundle_dir), profile_from_dict(target_name, target), out_dir,
                             progress=forward)
    return report.to_dict()


class _Run:
    """State of one optimize_bundle call."""

    def __init__(self, bundle: BundleDir, target: TargetProfile, out_dir: Path, hardware: HardwareInfo,
                 progress: ProgressCallback | None, cancel: threading.Event | None,
                 int8_configs: Callable[[HardwareInfo, Accelerator], list[QuantizationConfig]] | None) -> None:
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"output directory {out_dir} already exists and is not empty; choose a new one")
        manifest = bundle.manifest
        if not manifest.validation.images:
            raise ValueError(f"bundle {manifest.name} has no validation.images: the accuracy gate needs them")
        self.bundle, self.target, self.out_dir, self.hardware = bundle, target, out_dir, hardware
        self.progress, self.cancel = progress, cancel
        self.extra_feeds: dict[str, np.ndarray] = {}  # beside the image (RT-DETR's orig_target_sizes); set by _optimize
        excludes = manifest.quantization.exclude_nodes
        self.int8_configs = int8_configs or (lambda hw, acc: target_int8_configs(target, hw, acc, excludes))
        self.start = time.monotonic()
        self.deadline = self.start + target.time_limit_s
        self.time_limited = False
        self.step = 0
        plan = [(Accelerator.CPU, Precision.FP32)] + [p for p in target.plan() if p != (Accelerator.CPU, Precision.FP32)]
        self.plan = plan
        self.total_steps = len(plan) + 2
        self.quantized: dict[str, QuantizedModel] = {}
        self.engines: dict[str, InferenceEngine] = {}

    def execute(self) -> OptimizationReport:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        try:
            report = self._optimize(work)
            report.write(work)
            if self.out_dir.exists():
                self.out_dir.rmdir()
            work.rename(self.out_dir)
            return report
        finally:
            self.engines.clear()
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def _optimize(self, work: Path) -> OptimizationReport:
        manifest = self.bundle.manifest
        scratch = work / ".scratch"
        scratch.mkdir()
        self._report_step("reference", "loading images and running FP32 on the validation set")
        preprocess = Preprocessor(manifest.input)
        validation = [load_bundle_image(self.bundle.path(p)) for p in manifest.validation.images]
        reference_engine = InferenceEngine.from_bundle(self.bundle, warmup_runs=1)
        input_name = reference_engine.input_name
        self.extra_feeds = reference_engine.extra_feeds
        references = [reference_engine.infer(image) for image in validation]
        expected = None
        if manifest.validation.expected:
            expected = load_expected_outputs(self.bundle.path(manifest.validation.expected),
                                             manifest.validation.images, manifest.task)
        refusal, _ = check_reference(manifest.task, references, manifest.validation.images, manifest.acceptance,
                                     expected)
        if refusal:
            raise ModelRefusedError(refusal)
        calibration = [preprocess(load_bundle_image(self.bundle.path(p)), PixelFormat.RGB8)[0]
                       for p in manifest.calibration.images]
        bench_input = preprocess(validation[0], PixelFormat.RGB8)[0]
        del reference_engine

        results: list[VariantResult] = []
        for accelerator, precision in self.plan:
            self._check_cancel()
            name = f"{precision.value}-{accelerator.value}"
            self._report_step(name, f"building {precision.value} for {accelerator.value}")
            if not self.hardware.has(accelerator):
                results.append(VariantResult(name, accelerator, precision, VariantStatus.SKIPPED,
                                             self.hardware.why_missing(accelerator)))
                continue
            if precision is Precision.INT8 and not manifest.quantization.allowed:
                results.append(VariantResult(name, accelerator, precision, VariantStatus.SKIPPED,
                                             "the bundle's manifest sets quantization.allowed: false"))
                continue
            if precision is Precision.INT8:
                results.extend(self._int8_variants(accelerator, work, scratch, calibration, input_name,
                                                   validation, references, expected))
            else:
                results.append(self._float_variant(accelerator, precision, name, work, validation, references,
                                                   expected))
        if not any(r.name == FP32_FALLBACK and r.accepted for r in results):
            results.append(self._plain_fp32_fallback(work, validation, references, expected))

        self._check_cancel()
        accepted = [r for r in results if r.accepted]
        self._report_step("benchmark", f"measuring {len(accepted)} accepted variant(s)")
        self._benchmark(accepted, bench_input)
        chosen = min(accepted, key=lambda r: r.p50_ms if r.p50_ms is not None else float("inf"))
        self.engines.clear()
        shutil.rmtree(scratch, ignore_errors=True)
        self._remove_unused_files(work, results)
        advice = int8_advice(self.hardware.cpu)
        return OptimizationReport(
            bundle_name=manifest.name, bundle_version=str(manifest.version), target=self.target.name,
            chosen=chosen.name, variants=results, hardware=self.hardware.to_dict(),
            int8_advice=f"{', '.join(s.value for s in advice.schemes)}: {advice.reason}",
            wall_seconds=round(time.monotonic() - self.start, 3), time_limited=self.time_limited)

    def _int8_variants(self, accelerator: Accelerator, work: Path, scratch: Path, calibration: list[np.ndarray],
                       input_name: str, validation: list[np.ndarray], references: list[Prediction],
                       expected: list[Prediction] | None) -> list[VariantResult]:
        """Try the INT8 recipes in order; per scheme, stop at the first the gate accepts.

        Each scheme that passes is kept, so measurement picks between, say,
        S8S8 and U8S8 rather than the order of the list.
        """
        results = []
        passed: set[tuple[QuantTool, Int8Scheme]] = set()
        for config in self.int8_configs(self.hardware, accelerator):
            self._check_cancel()
            if (config.tool, config.scheme) in passed:
                continue
            name = f"int8-{accelerator.value}-{config.label}"
            result = VariantResult(name, accelerator, Precision.INT8, quantization=config.label)
            results.append(result)
            if self._out_of_time(result):
                break
            started = time.monotonic()
            self._report_step(name, f"quantizing ({config.label})", advance=False)
            try:
                quantized = self.quantized.get(config.label)
                if quantized is None:
                    quantized = quantize_model(self.bundle.model_path, scratch / f"{config.label}.onnx",
                                               calibration, input_name, config, extra_feeds=self.extra_feeds)
                    self.quantized[config.label] = quantized
                result.float_nodes, result.notes = quantized.float_nodes, quantized.notes
                self._check_cancel()
                artifact = self._compile(accelerator, Precision.INT8, quantized.path, work, name)
            except (QuantizationError, CompileError) as exc:
                result.status, result.reason = VariantStatus.FAILED, str(exc)
                continue
            self._evaluate(result, artifact, work, validation, references, expected, started)
            if result.accepted:
                passed.add((config.tool, config.scheme))
        return results


    def _float_variant(self, accelerator: Accelerator, precision: Precision, name: str, work: Path,
                       validation: list[np.ndarray], references: list[Prediction],
                       expected: list[Prediction] | None) -> VariantResult:
        result = VariantResult(name, accelerator, precision)
        if self._out_of_time(result):
            return result
        started = time.monotonic()
        try:
            artifact = self._compile(accelerator, precision, self.bundle.model_path, work, name)
        except CompileError as exc:
            result.status, result.reason = VariantStatus.FAILED, str(exc)
            return result
        self._evaluate(result, artifact, work, validation, references, expected, started)
        return result

    def _plain_fp32_fallback(self, work: Path, validation: list[np.ndarray], references: list[Prediction],
                             expected: list[Prediction] | None) -> VariantResult:
        """The bundle's own model, unchanged: FP32's answers by definition, so always usable."""
        name = "fp32-cpu-plain"
        shutil.copyfile(self.bundle.model_path, work / f"{name}.onnx")
        artifact = CompiledArtifact(Accelerator.CPU, Precision.FP32, f"{name}.onnx")
        result = VariantResult(name, Accelerator.CPU, Precision.FP32, notes=("fallback: the bundle's model as is",))
        self._evaluate(result, artifact, work, validation, references, expected, time.monotonic(), force=True)
        return result

    def _compile(self, accelerator: Accelerator, precision: Precision, model: Path, work: Path,
                 stem: str) -> CompiledArtifact:
        if accelerator is Accelerator.CPU:
            return compile_cpu(model, work, stem, precision)
        if accelerator is Accelerator.OPENVINO:
            return compile_openvino(model, work, stem, precision)
        device = self.hardware.gpus[self.target.device_id] if self.target.device_id < len(self.hardware.gpus) else "gpu"
        return compile_gpu(model, work, stem, accelerator, precision, self.target.device_id, device)

    def _evaluate(self, result: VariantResult, artifact: CompiledArtifact, work: Path, validation: list[np.ndarray],
                  references: list[Prediction], expected: list[Prediction] | None, started: float,
                  force: bool = False) -> None:
        """Load the artifact exactly as a node would, check memory, run the gate."""
        result.artifact = artifact
        result.size_bytes = sum((work / f).stat().st_size for f in artifact.files() if (work / f).exists())
        self._check_cancel()
        before = _rss_mb()
        try:
            engine = artifact.open_engine(work, self.bundle.manifest, self.bundle.labels,
                                          warmup_runs=max(1, self.target.warmup_runs))
        except (ModelLoadError, RuntimeError) as exc:
            result.status, result.reason = VariantStatus.FAILED, f"cannot load the artifact: {exc}"
            return
        after = _rss_mb()
        result.providers = tuple(engine.providers)
        if before is not None and after is not None:
            result.memory_mb = round(max(0.0, after - before), 1)
        limit = self.target.max_memory_mb
        if limit and result.memory_mb is not None and result.memory_mb > limit and not force:
            result.status = VariantStatus.REJECTED
            result.reason = f"loaded session grew memory by {result.memory_mb:.0f} MB > max_memory_mb {limit:.0f}"
            return
        self._check_cancel()
        candidates = [engine.infer(image) for image in validation]
        gate = check_variant(self.bundle.manifest.task, candidates, references, self.bundle.manifest.acceptance,
                             expected)
        result.top1_agreement, result.detection_f1, result.score_drift = (gate.top1_agreement, gate.detection_f1,
                                                                          gate.score_drift)
        result.mask_iou, result.keypoint_oks = gate.mask_iou, gate.keypoint_oks
        result.build_seconds = round(time.monotonic() - started, 3)
        if gate.passed or force:
            result.status = VariantStatus.ACCEPTED
            self.engines[result.name] = engine
        else:
            result.status, result.reason = VariantStatus.REJECTED, f"accuracy gate: {gate.reason}"

    def _benchmark(self, accepted: list[VariantResult], tensor: np.ndarray) -> None:
        """Interleave the variants run by run so background load hits them all alike."""
        engines = [(r, self.engines[r.name]) for r in accepted]
        for _, engine in engines:
            for _ in range(self.target.warmup_runs):
                engine.session.run(None, engine.feeds(tensor))
        timings: dict[str, list[float]] = {r.name: [] for r, _ in engines}
        for run in range(self.target.benchmark_runs):
            if run % 10 == 0:
                self._check_cancel()
            for result, engine in engines:
                start = time.perf_counter()
                engine.session.run(None, engine.feeds(tensor))
                timings[result.name].append((time.perf_counter() - start) * 1000.0)
        for result, _ in engines:
            result.p50_ms = round(percentile(timings[result.name], 50), 3)
            result.p99_ms = round(percentile(timings[result.name], 99), 3)

    def _remove_unused_files(self, work: Path, results: list[VariantResult]) -> None:
        keep = {f for r in results if r.accepted and r.artifact for f in r.artifact.files()}
        keep |= {r.artifact.cache_dir.split("/")[0] for r in results if r.accepted and r.artifact and r.artifact.cache_dir}
        for entry in work.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()

    def _out_of_time(self, result: VariantResult) -> bool:
        if time.monotonic() < self.deadline:
            return False
        self.time_limited = True
        result.status = VariantStatus.SKIPPED
        result.reason = f"time limit {self.target.time_limit_s:.0f} s of target {self.target.name} reached"
        return True

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise OptimizationCancelled("optimization cancelled; nothing was written")

    def _report_step(self, variant: str, message: str, advance: bool = True) -> None:
        if advance:
            self.step += 1
        if self.progress is not None:
            self.progress(OptimizeProgress(self.step, self.total_steps, variant, message))


def _rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux); None elsewhere, and then no limit is checked."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return None
