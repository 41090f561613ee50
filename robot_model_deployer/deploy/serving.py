"""The engine a perception or shadow node serves: the optimized variant when there is one.

Every perception and shadow node imports this at start, so it reads the
optimization report and opens artifacts without importing the optimizer
(quantizer, gate, compilers, ONNX): that is about a second per node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError, cpu_session_options
from robot_model_deployer.optimize.report import OptimizationReport, VariantResult


def open_serving_engine(model_dir: str, artifacts_dir: str = "", *,
                        providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                        spinning: bool = False, warmup_runs: int = 3) -> tuple[InferenceEngine, str]:
    """Load the bundle in ``model_dir``; serve the fastest optimized variant in ``artifacts_dir`` if given.

    ``providers`` apply to the model as shipped (an optimized variant names
    its own); ``threads`` caps the CPU threads of one inference either way
    (0: the runtime decides) and ``spinning`` lets ONNX Runtime's pool spin
    between runs (engine.cpu_session_options). Returns the engine and a short description of
    what is served. Raises BundleError or ModelLoadError (from the loader and
    the engine) with the reason when nothing can be served.
    """
    bundle = load_bundle_dir(model_dir)
    if artifacts_dir:
        variant, engine = open_optimized_engine(artifacts_dir, bundle, warmup_runs=warmup_runs, threads=threads,
                                                spinning=spinning)
        return engine, f"optimized variant {variant.name}"
    engine = InferenceEngine.from_bundle(bundle, providers=providers, session_options=cpu_session_options(threads, spinning),
                                         warmup_runs=warmup_runs)
    return engine, "model as shipped"


def open_optimized_engine(out_dir: str | Path, bundle: BundleDir, warmup_runs: int = 3,
                          threads: int = 0, spinning: bool = False) -> tuple[VariantResult, InferenceEngine]:
    """The fastest accepted variant in ``out_dir`` that loads here, as an engine.

    Variants are tried fastest first, so an artifact that no longer loads
    (a runtime upgraded since, a missing optional package) falls back to the
    next; FP32 is always among them. Raises ModelLoadError if none loads.
    """
    report = OptimizationReport.read(out_dir)
    accepted = sorted((v for v in report.variants if v.accepted and v.artifact),
                      key=lambda v: (v.name != report.chosen, v.p50_ms if v.p50_ms is not None else float("inf")))
    failures = []
    for variant in accepted:
        try:
            engine = variant.artifact.open_engine(out_dir, bundle.manifest, bundle.labels, warmup_runs=warmup_runs,
                                                  threads=threads, spinning=spinning)
        except (ModelLoadError, RuntimeError) as exc:
            failures.append(f"{variant.name}: {exc}")
            continue
        return variant, engine
    raise ModelLoadError(f"no optimized variant in {out_dir} loads here: {'; '.join(failures) or 'none accepted'}")
