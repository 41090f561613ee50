"""A compiled variant of a model as a node loads it: which file, which runtime, which settings.

The optimize stage builds these artifacts and records them in its report;
perception and shadow nodes open them. Both sides share this module (and
nothing of the optimizer), so serving a variant costs no quantizer, gate or
ONNX import. TensorRT engines are only checked here, never built: an engine
that no longer matches this machine is refused so the caller falls back to
another variant instead of rebuilding it on the live path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnxruntime as ort

from robot_model_deployer.bundle.filelist import file_sha256
from robot_model_deployer.bundle.manifest import Manifest
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError, cpu_session_options

KEY_FILE = "cache_key.json"


@dataclass(frozen=True)
class CompiledArtifact:
    """How to load one variant: the file and the runtime settings, relative to the output directory."""

    accelerator: Accelerator
    precision: Precision
    model_file: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: tuple[dict[str, Any], ...] = ({},)
    offline_optimized: bool = False
    openvino_hint: str = ""
    cache_dir: str = ""
    extra_files: tuple[str, ...] = field(default=())

    def open_engine(self, root: str | Path, manifest: Manifest, labels: Sequence[str] = (),
                    warmup_runs: int = 3, threads: int = 0, spinning: bool = False) -> InferenceEngine:
        """An InferenceEngine serving this artifact from directory ``root``.

        ``threads`` caps the CPU threads of one inference (0: the runtime decides); ``spinning`` lets ONNX
        Runtime's pool spin between runs (engine.cpu_session_options).
        """
        root = Path(root)
        path = root / self.model_file
        if self.accelerator is Accelerator.OPENVINO:
            from robot_model_deployer.inference.openvino_session import OpenVinoSession

            cache = root / self.cache_dir if self.cache_dir else None
            session = OpenVinoSession(path, "CPU", self.openvino_hint or "f32", cache, threads=threads)
            return InferenceEngine(path, manifest, labels, warmup_runs=warmup_runs, session=session)
        if self.providers[0] not in ort.get_available_providers():
            raise ModelLoadError(f"{self.model_file} was built for {self.providers[0]}, which this ONNX Runtime "
                                 "does not have; re-run the optimize stage on this machine")
        if self.accelerator is Accelerator.TENSORRT:
            check_engine_cache(root / self.cache_dir, path, self.precision)
        options = cpu_session_options(threads, spinning)
        if self.offline_optimized:
            # Optimizations were applied and saved at compile time; redoing them only costs start-up.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers = [(name, _absolute_cache_paths(opts, root)) for name, opts in zip(self.providers, self.provider_options)]
        return InferenceEngine(path, manifest, labels, providers=providers, session_options=options,
                               warmup_runs=warmup_runs)

    def files(self) -> list[str]:
        return [self.model_file, *self.extra_files]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accelerator"] = self.accelerator.value
        data["precision"] = self.precision.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompiledArtifact":
        return cls(accelerator=Accelerator(data["accelerator"]), precision=Precision(data["precision"]),
                   model_file=data["model_file"], providers=tuple(data["providers"]),
                   provider_options=tuple(data["provider_options"]),
                   offline_optimized=bool(data["offline_optimized"]), openvino_hint=data["openvino_hint"],
                   cache_dir=data["cache_dir"], extra_files=tuple(data["extra_files"]))


def _absolute_cache_paths(options: dict[str, Any], root: Path) -> dict[str, Any]:
    """Cache paths are stored relative to the artifacts; providers resolve them against the cwd."""
    return {k: str(root / v) if k.endswith("_cache_path") and not Path(str(v)).is_absolute() else v
            for k, v in options.items()}


def check_engine_cache(cache_dir: Path, model_path: Path, precision: Precision) -> None:
    """Refuse a TensorRT artifact whose engines no longer match this machine.

    TensorRT would otherwise rebuild the engine inside the first session,
    which on a perception node means minutes on the live path; the caller
    falls back to another variant instead.
    """
    recorded = read_cache_key(cache_dir)
    if recorded is None:
        raise ModelLoadError(f"TensorRT engine cache {cache_dir} is missing; re-run the optimize stage")
    current = {"model_sha256": file_sha256(model_path), "ort_version": ort.__version__,
               "tensorrt_version": tensorrt_version(), "cuda_version": cuda_runtime_version(),
               "precision": precision.value}
    changed = [f"{k} {recorded.get(k)} -> {v}" for k, v in current.items() if recorded.get(k) != v]
    if changed:
        raise ModelLoadError(f"TensorRT engine cache {cache_dir.name} is stale ({'; '.join(changed)}); "
                             "re-run the optimize stage")


def read_cache_key(directory: Path) -> dict[str, Any] | None:
    """The key an engine cache directory was built for (its KEY_FILE), or None if unreadable."""
    try:
        return json.loads((directory / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tensorrt_version() -> str:
    """The TensorRT version this process would use, or "none"."""
    for distribution in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs", "tensorrt-cu12-libs"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    library = ctypes.util.find_library("nvinfer")
    return f"lib:{library}" if library else "none"


def cuda_runtime_version() -> str:
    """cudaRuntimeGetVersion() as "major.minor", or "none" without a CUDA runtime."""
    library = ctypes.util.find_library("cudart")
    if not library:
        return "none"
    try:
        cudart = ctypes.CDLL(library)
        version = ctypes.c_int()
        if cudart.cudaRuntimeGetVersion(ctypes.byref(version)) != 0:
            return "none"
        return f"{version.value // 1000}.{(version.value % 1000) // 10}"
    except OSError:
        return "none"
