"""What this robot can run: ONNX Runtime providers, CPU integer-dot features, GPUs, OpenVINO.

Detection never raises: a missing file or package means "not there", so the
same code runs on x86 laptops, ARM boards and Jetsons. The INT8 settings to
try follow ONNX Runtime's quantization guide
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
QDQ with signed 8-bit activations and weights (S8S8) is the first choice; on
x86 without VNNI the U8S8/S8S8 kernels can saturate, so weights are
quantized with 7 bits (``reduce_range``) or U8U8 is used instead.
"""
from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from robot_model_deployer.optimize.quantize import Int8Scheme
from robot_model_deployer.optimize.targets import Accelerator

_PROVIDER_FOR = {
    Accelerator.CPU: "CPUExecutionProvider",
    Accelerator.CUDA: "CUDAExecutionProvider",
    Accelerator.TENSORRT: "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class CpuFeatures:
    """Integer dot-product and SIMD features that decide INT8 kernels and settings."""

    architecture: str
    avx2: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    amx_int8: bool = False
    arm_dotprod: bool = False
    arm_i8mm: bool = False
    model_name: str = ""

    @property
    def int8_dot_product(self) -> bool:
        """True where 8-bit dot products are native (no 16-bit saturation in ORT's kernels)."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8 or self.arm_dotprod

    @property
    def is_x86(self) -> bool:
        return self.architecture in ("x86_64", "amd64", "i686", "i386")


@dataclass(frozen=True)
class HardwareInfo:
    """One snapshot of what this machine offers the optimize stage."""

    cpu: CpuFeatures
    ort_version: str
    ort_providers: tuple[str, ...]
    gpus: tuple[str, ...] = ()
    openvino_version: str = ""
    openvino_devices: tuple[str, ...] = ()
    cpu_count: int = 1

    def has(self, accelerator: Accelerator) -> bool:
        """Whether variants for this accelerator can be built and measured here."""
        if accelerator is Accelerator.OPENVINO:
            return bool(self.openvino_version) and "CPU" in self.openvino_devices
        if accelerator in (Accelerator.CUDA, Accelerator.TENSORRT):
            return _PROVIDER_FOR[accelerator] in self.ort_providers and bool(self.gpus)
        return _PROVIDER_FOR[accelerator] in self.ort_providers

    def why_missing(self, accelerator: Accelerator) -> str:
        """A sentence saying what to install or plug in; empty when available."""
        if self.has(accelerator):
            return ""
        if accelerator is Accelerator.OPENVINO:
            return "the openvino package is not installed (pip install openvino)"
        provider = _PROVIDER_FOR[accelerator]
        if provider not in self.ort_providers:
            return f"ONNX Runtime here has no {provider} (install onnxruntime-gpu built with it)"
        return f"{provider} is built in but no NVIDIA GPU was found"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cpu_features(cpuinfo: str, machine: str) -> CpuFeatures:
    """CPU features from /proc/cpuinfo text (x86 'flags', ARM 'Features')."""
    flags: set[str] = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    machine = machine.lower()
    return CpuFeatures(
        architecture=machine,
        avx2="avx2" in flags,
        avx512_vnni="avx512_vnni" in flags,
        avx_vnni="avx_vnni" in flags,
        amx_int8="amx_int8" in flags,
        arm_dotprod="asimddp" in flags,
        arm_i8mm="i8mm" in flags,
        model_name=model,
    )


def detect_cpu_features(cpuinfo_path: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU features; without /proc/cpuinfo only the architecture is known."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpu_features(text, platform.machine())


def detect_gpus(root: str | Path = "/") -> tuple[str, ...]:
    """NVIDIA GPUs by their driver's /proc entries, or a Jetson by its release file."""
    base = Path(root)
    gpus: list[str] = []
    driver = base / "proc/driver/nvidia/gpus"
    if driver.is_dir():
        for entry in sorted(driver.iterdir()):
            info = entry / "information"
            name = entry.name
            if info.is_file():
                for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.lower().startswith("model:"):
                        name = line.split(":", 1)[1].strip()
                        break
            gpus.append(name)
    tegra = base / "etc/nv_tegra_release"
    if not gpus and tegra.is_file():
        gpus.append("NVIDIA Jetson (" + tegra.read_text(encoding="utf-8", errors="replace").split(",")[0].strip("# \n") + ")")
    return tuple(gpus)


def detect_openvino() -> tuple[str, tuple[str, ...]]:
    """(version, devices) of the openvino runtime, or ("", ()) when it is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return "", ()
    try:
        import openvino as ov

        return str(ov.get_version()), tuple(ov.Core().available_devices)
    except Exception:  # A broken install (missing plugin libraries) counts as absent.
        return "", ()


def detect_hardware() -> HardwareInfo:
    """Everything the optimize stage needs to know about this machine."""
    openvino_version, openvino_devices = detect_openvino()
    return HardwareInfo(
        cpu=detect_cpu_features(),
        ort_version=ort.__version__,
        ort_providers=tuple(ort.get_available_providers()),
        gpus=detect_gpus(),
        openvino_version=openvino_version,
        openvino_devices=openvino_devices,
        cpu_count=os.cpu_count() or 1,
    )


@dataclass(frozen=True)
class Int8Advice:
    """The INT8 schemes to try on this CPU, best first, and why."""

    schemes: tuple[Int8Scheme, ...]
    reason: str


def int8_advice(cpu: CpuFeatures) -> Int8Advice:
    """ONNX Runtime's advice for this CPU: which INT8 schemes to try, best first."""
    if cpu.is_x86 and cpu.int8_dot_product:
        return Int8Advice((Int8Scheme.S8S8, Int8Scheme.U8S8),
                          "x86 with VNNI: QDQ S8S8 with full-range weights is ORT's first choice; VNNI's "
                          "VPDPBUSD multiplies u8 by s8, so U8S8 is tried as well and measurement decides")
    if not cpu.is_x86:
        return Int8Advice((Int8Scheme.S8S8,), "ARM: QDQ S8S8 with full-range weights (signed dot-product "
                                              "instructions where the CPU has them)")
    if cpu.avx2:
        return Int8Advice((Int8Scheme.S8S8_REDUCE_RANGE, Int8Scheme.U8U8),
                          "x86 AVX2/AVX512 without VNNI: 16-bit intermediate sums can saturate, so "
                          "7-bit weights (reduce_range) first, U8U8 if accuracy still drops")
    return Int8Advice((Int8Scheme.U8U8,), "x86 without AVX2: U8U8 avoids the saturating U8S8 path")
