"""Compilation per target: CPU offline optimization, OpenVINO IR, GPU provider options and engine cache keys."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from robot_model_deployer.bundle.manifest import manifest_from_dict
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.artifacts import KEY_FILE, CompiledArtifact, check_engine_cache
from robot_model_deployer.inference.engine import ModelLoadError
from robot_model_deployer.inference.openvino_session import openvino_available
from robot_model_deployer.optimize.compile import (
    EngineCacheKey, compile_cpu, compile_gpu, compile_openvino, cuda_provider_options, model_input_shapes,
    prepare_engine_cache, tensorrt_provider_options,
)
from robot_model_deployer.optimize.hardware import detect_gpus
from robot_model_deployer.testing.models import COLOUR_LABELS, classifier_manifest
from robot_model_deployer.testing.quant_models import colour_images, conv_classifier

SIZE = 32
KEY = EngineCacheKey(model_sha256="a" * 64, ort_version="1.32.0", tensorrt_version="10.4.0", cuda_version="12.6",
                     device="NVIDIA Orin", precision=Precision.FP16, input_shapes=(("images", (1, 3, 224, 224)),))
GPU_PROVIDERS = set(ort.get_available_providers())
HAS_CUDA = "CUDAExecutionProvider" in GPU_PROVIDERS and bool(detect_gpus())
HAS_TENSORRT = "TensorrtExecutionProvider" in GPU_PROVIDERS and bool(detect_gpus())


def manifest():
    return manifest_from_dict(classifier_manifest(size=SIZE))


def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(conv_classifier(SIZE), str(path))
    return path


@pytest.mark.parametrize("field, value", [
    ("model_sha256", "b" * 64), ("ort_version", "1.33.0"), ("tensorrt_version", "10.5.0"),
    ("cuda_version", "12.8"), ("device", "NVIDIA RTX A2000"), ("precision", Precision.INT8),
    ("input_shapes", (("images", (1, 3, 320, 320)),)),
])
def test_every_key_part_changes_the_cache_key(field: str, value: object) -> None:
    assert dataclasses.replace(KEY, **{field: value}).digest() != KEY.digest()


def test_equal_keys_share_a_directory_and_stale_ones_of_the_same_model_go(tmp_path: Path) -> None:
    first = prepare_engine_cache(tmp_path, KEY)
    (first / "engine.bin").write_bytes(b"engine")
    assert prepare_engine_cache(tmp_path, KEY) == first and (first / "engine.bin").exists()
    other_model = prepare_engine_cache(tmp_path, dataclasses.replace(KEY, model_sha256="c" * 64))
    upgraded = prepare_engine_cache(tmp_path, dataclasses.replace(KEY, tensorrt_version="10.5.0"))
    assert not first.exists()  # TensorRT upgrade invalidates the old engines of this model
    assert other_model.exists() and upgraded.exists()
    assert '"tensorrt_version": "10.5.0"' in (upgraded / KEY_FILE).read_text()


def test_tensorrt_options_follow_precision(tmp_path: Path) -> None:
    int8 = tensorrt_provider_options(Precision.INT8, tmp_path, device_id=1)
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"] and int8["device_id"] == 1
    assert int8["trt_engine_cache_enable"] and int8["trt_engine_cache_path"] == str(tmp_path)
    assert int8["trt_timing_cache_path"] == str(tmp_path)
    fp16 = tensorrt_provider_options(Precision.FP16, tmp_path)
    assert fp16["trt_fp16_enable"] and not fp16["trt_int8_enable"]
    fp32 = tensorrt_provider_options(Precision.FP32, tmp_path)
    assert not fp32["trt_fp16_enable"] and not fp32["trt_int8_enable"]
    assert cuda_provider_options(2)["device_id"] == 2


def test_gpu_artifacts_are_configured_with_a_keyed_cache(tmp_path: Path) -> None:
    source = model_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    trt = compile_gpu(source, out, "int8-tensorrt", Accelerator.TENSORRT, Precision.INT8, 0, "NVIDIA Orin")
    assert trt.providers[0] == "TensorrtExecutionProvider" and trt.providers[-1] == "CPUExecutionProvider"
    assert trt.cache_dir.startswith("trt_cache/") and (out / trt.cache_dir / KEY_FILE).is_file()
    assert trt.provider_options[0]["trt_engine_cache_path"] == trt.cache_dir
    cuda = compile_gpu(source, out, "fp16-cuda", Accelerator.CUDA, Precision.FP16, 0, "NVIDIA Orin")
    fp16 = onnx.load(str(out / cuda.model_file))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # pre-processing unchanged
    assert CompiledArtifact.from_dict(trt.to_dict()) == trt


def test_input_shapes_for_the_key_mark_dynamic_dims(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    onnx.save(conv_classifier(SIZE, dynamic_batch=True), str(path))
    assert model_input_shapes(path) == (("images", (-1, 3, SIZE, SIZE)),)


def test_cpu_artifact_is_optimized_offline_and_serves_the_same_answers(tmp_path: Path) -> None:
    source = model_file(tmp_path)
    artifact = compile_cpu(source, tmp_path, "fp32-cpu", Precision.FP32)
    assert artifact.offline_optimized and (tmp_path / artifact.model_file).is_file()
    engine = artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1)
    for index, image in enumerate(colour_images(3, SIZE)):
        assert engine.infer(image).labels[0] == COLOUR_LABELS[index]


def test_cpu_artifact_runs_on_the_threads_asked_for(tmp_path: Path) -> None:
    artifact = compile_cpu(model_file(tmp_path), tmp_path, "fp32-cpu", Precision.FP32)
    for threads in (1, 2):
        engine = artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1, threads=threads)
        assert engine.session.get_session_options().intra_op_num_threads == threads


@pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed (pip extra 'openvino')")
def test_openvino_artifact_runs_on_the_threads_asked_for(tmp_path: Path) -> None:
    artifact = compile_openvino(model_file(tmp_path), tmp_path, "fp32-openvino", Precision.FP32)
    engine = artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1, threads=1)
    assert int(engine.session._compiled.get_property("INFERENCE_NUM_THREADS")) == 1


@pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed (pip extra 'openvino')")
def test_openvino_artifact_serves_the_same_answers(tmp_path: Path) -> None:
    source = model_file(tmp_path)
    artifact = compile_openvino(source, tmp_path, "fp32-openvino", Precision.FP32)
    assert (tmp_path / "fp32-openvino.xml").is_file() and (tmp_path / "fp32-openvino.bin").is_file()
    engine = artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1)
    assert engine.providers == ["OpenVINO:CPU"]
    for index, image in enumerate(colour_images(3, SIZE)):
        prediction = engine.infer(image)
        assert prediction.labels[0] == COLOUR_LABELS[index]
        assert np.isfinite(prediction.scores).all()


def test_gpu_artifact_without_its_provider_or_with_a_stale_cache_is_refused_not_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    trt = compile_gpu(model_file(tmp_path), out, "fp16-trt", Accelerator.TENSORRT, Precision.FP16, 0, "gpu")
    if not HAS_TENSORRT:
        with pytest.raises(ModelLoadError, match="TensorrtExecutionProvider"):
            trt.open_engine(out, manifest(), COLOUR_LABELS, warmup_runs=1)
    key_file = out / trt.cache_dir / KEY_FILE
    key_file.write_text(key_file.read_text().replace('"ort_version": "', '"ort_version": "0.9-'), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="stale .*ort_version"):
        check_engine_cache(out / trt.cache_dir, out / trt.model_file, Precision.FP16)
    key_file.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        check_engine_cache(out / trt.cache_dir, out / trt.model_file, Precision.FP16)


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with CUDAExecutionProvider and an NVIDIA GPU")
def test_cuda_fp16_artifact_runs_on_the_gpu(tmp_path: Path) -> None:
    artifact = compile_gpu(model_file(tmp_path), tmp_path, "fp16-cuda", Accelerator.CUDA, Precision.FP16, 0, "gpu")
    engine = artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1)
    assert engine.providers[0] == "CUDAExecutionProvider"
    assert engine.infer(colour_images(1, SIZE)[0]).labels[0] == "red"


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs onnxruntime-gpu built with TensorRT and an NVIDIA GPU")
def test_tensorrt_engine_is_built_into_the_keyed_cache(tmp_path: Path) -> None:
    artifact = compile_gpu(model_file(tmp_path), tmp_path, "fp16-trt", Accelerator.TENSORRT, Precision.FP16, 0, "gpu")
    artifact.open_engine(tmp_path, manifest(), COLOUR_LABELS, warmup_runs=1)
    assert any(p.suffix == ".engine" for p in (tmp_path / artifact.cache_dir).iterdir())
