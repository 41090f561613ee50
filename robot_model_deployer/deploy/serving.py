"""The engine a perception or shadow node serves: the optimized variant when there is one."""
from __future__ import annotations

from typing import Sequence

import onnxruntime as ort

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.optimize.pipeline import open_optimized_engine


def open_serving_engine(model_dir: str, artifacts_dir: str = "", *,
                        providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                        warmup_runs: int = 3) -> tuple[InferenceEngine, str]:
    """Load the bundle in ``model_dir``; serve the fastest optimized variant in ``artifacts_dir`` if given.

    ``providers`` apply to the model as shipped (an optimized variant names
    its own); ``threads`` caps the CPU threads of one inference either way
    (0: the runtime decides). Returns the engine and a short description of
    what is served. Raises BundleError or ModelLoadError (from the loader and
    the engine) with the reason when nothing can be served.
    """
    bundle = load_bundle_dir(model_dir)
    if artifacts_dir:
        variant, engine = open_optimized_engine(artifacts_dir, bundle, warmup_runs=warmup_runs, threads=threads)
        return engine, f"optimized variant {variant.name}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    engine = InferenceEngine.from_bundle(bundle, providers=providers, session_options=options, warmup_runs=warmup_runs)
    return engine, "model as shipped"
