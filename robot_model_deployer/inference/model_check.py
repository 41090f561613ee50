"""The model check every bundle passes before it is installed: its model loads and serves.

It lives here, one floor above ``bundle/``, because it needs ONNX Runtime:
the verifier and the store take it as a hook (``model_check=check_model``)
so they stay free of it, and a caller can run it elsewhere, e.g. in a child
process with limits.
"""
from __future__ import annotations

from pathlib import Path

from robot_model_deployer.bundle.errors import BundleError, BundleFormatError, ModelCheckError
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError


def check_model(root: Path) -> None:
    """Load the unpacked bundle at ``root`` with the serving engine; a model that cannot serve is refused.

    Raises BundleFormatError if ``root`` is not a readable bundle and
    ModelCheckError if its model does not load or contradicts the manifest.
    """
    try:
        bundle = load_bundle_dir(root)
    except BundleError as exc:
        raise BundleFormatError(str(exc)) from None
    try:
        InferenceEngine.from_bundle(bundle, warmup_runs=1)
    except ModelLoadError as exc:
        raise ModelCheckError(f"model check failed: {exc}; fix the model or the manifest's input section "
                              "and rebuild the bundle") from None
