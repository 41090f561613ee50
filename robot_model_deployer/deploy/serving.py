"""The engine a perception or shadow node serves: the optimized variant when there is one."""
from __future__ import annotations

from typing import Any

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.optimize.pipeline import open_optimized_engine


def open_serving_engine(model_dir: str, artifacts_dir: str = "", *, warmup_runs: int = 3,
                        **engine_options: Any) -> tuple[InferenceEngine, str]:
    """Load the bundle in ``model_dir``; serve the fastest optimized variant in ``artifacts_dir`` if given.

    Returns the engine and a short description of what is served. Raises
    BundleError or ModelLoadError (from the loader and the engine) with the
    reason when nothing can be served.
    """
    bundle = load_bundle_dir(model_dir)
    if artifacts_dir:
        variant, engine = open_optimized_engine(artifacts_dir, bundle, warmup_runs=warmup_runs)
        return engine, f"optimized variant {variant.name}"
    return InferenceEngine.from_bundle(bundle, warmup_runs=warmup_runs, **engine_options), "model as shipped"
