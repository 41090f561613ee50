"""Hardware detection from /proc-style text, and the INT8 advice that follows from it."""
from __future__ import annotations

from pathlib import Path

from robot_model_deployer.optimize.hardware import (
    CpuFeatures, HardwareInfo, detect_gpus, detect_hardware, int8_advice, parse_cpu_features,
)
from robot_model_deployer.optimize.quantize import Int8Scheme
from robot_model_deployer.optimize.targets import Accelerator

X86_VNNI = "processor : 0\nmodel name : Intel Xeon\nflags : fpu sse avx2 avx512f avx512_vnni amx_int8\n"
X86_AVX2 = "processor : 0\nmodel name : Old Core i7\nflags : fpu sse avx avx2 fma\n"
ARM = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp i8mm\nCPU part : 0xd0b\n"


def test_x86_with_vnni_is_recognised() -> None:
    cpu = parse_cpu_features(X86_VNNI, "x86_64")
    assert cpu.avx512_vnni and cpu.amx_int8 and cpu.int8_dot_product and cpu.is_x86
    assert cpu.model_name == "Intel Xeon"


def test_x86_avx2_only_has_no_int8_dot_product() -> None:
    cpu = parse_cpu_features(X86_AVX2, "x86_64")
    assert cpu.avx2 and not cpu.int8_dot_product


def test_arm_dot_product_is_recognised() -> None:
    cpu = parse_cpu_features(ARM, "aarch64")
    assert cpu.arm_dotprod and cpu.arm_i8mm and cpu.int8_dot_product and not cpu.is_x86


def test_missing_cpuinfo_falls_back_to_no_features() -> None:
    cpu = parse_cpu_features("", "riscv64")
    assert not cpu.int8_dot_product and cpu.architecture == "riscv64"


def test_int8_advice_follows_the_cpu() -> None:
    assert int8_advice(parse_cpu_features(X86_VNNI, "x86_64")).schemes[0] is Int8Scheme.S8S8
    avx2 = int8_advice(parse_cpu_features(X86_AVX2, "x86_64"))
    assert avx2.schemes == (Int8Scheme.S8S8_REDUCE_RANGE, Int8Scheme.U8U8)
    assert "saturate" in avx2.reason
    assert int8_advice(parse_cpu_features(ARM, "aarch64")).schemes == (Int8Scheme.S8S8,)
    assert int8_advice(CpuFeatures("x86_64")).schemes == (Int8Scheme.U8U8,)


def test_nvidia_gpu_found_from_driver_files(tmp_path: Path) -> None:
    gpu = tmp_path / "proc/driver/nvidia/gpus/0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t NVIDIA RTX A2000\nIRQ: 1\n", encoding="utf-8")
    assert detect_gpus(tmp_path) == ("NVIDIA RTX A2000",)


def test_jetson_found_from_release_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n", encoding="utf-8")
    assert detect_gpus(tmp_path)[0].startswith("NVIDIA Jetson (R36")


def test_no_gpu_files_means_no_gpu(tmp_path: Path) -> None:
    assert detect_gpus(tmp_path) == ()


def test_gpu_accelerators_need_both_provider_and_device() -> None:
    cpu = CpuFeatures("x86_64")
    no_device = HardwareInfo(cpu, "1.0", ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert not no_device.has(Accelerator.CUDA)
    assert "no NVIDIA GPU" in no_device.why_missing(Accelerator.CUDA)
    no_provider = HardwareInfo(cpu, "1.0", ("CPUExecutionProvider",), gpus=("RTX",))
    assert "TensorrtExecutionProvider" in no_provider.why_missing(Accelerator.TENSORRT)
    both = HardwareInfo(cpu, "1.0", ("TensorrtExecutionProvider", "CPUExecutionProvider"), gpus=("RTX",))
    assert both.has(Accelerator.TENSORRT) and both.why_missing(Accelerator.TENSORRT) == ""
    assert "pip install openvino" in both.why_missing(Accelerator.OPENVINO)


def test_this_machine_has_the_cpu_provider() -> None:
    hardware = detect_hardware()
    assert hardware.has(Accelerator.CPU)
    assert hardware.to_dict()["cpu"]["architecture"]
