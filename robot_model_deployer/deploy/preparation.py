"""Turning a bundle path into a model a perception node can serve."""
from __future__ import annotations

import hashlib
from pathlib import Path

from robot_model_deployer.bundle.loader import BundleError, load_bundle_dir
from robot_model_deployer.deploy.switch import ServedModel
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError


def prepare_bundle(bundle_path: str) -> ServedModel:
    """Load and check the bundle in directory ``bundle_path``; ValueError says why it cannot serve."""
    if not bundle_path:
        raise BundleError("bundle_path is empty: give the path of a bundle directory on the robot")
    bundle = load_bundle_dir(bundle_path)
    try:
        InferenceEngine.from_bundle(bundle, warmup_runs=1)
    except ModelLoadError as exc:
        raise BundleError(str(exc)) from None
    manifest = bundle.manifest
    return ServedModel(name=manifest.name, version=str(manifest.version), task=manifest.task.value,
                       path=str(bundle.root.resolve()), model_sha256=file_sha256(bundle.model_path))


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
