"""INT8 with NNCF on the OpenVINO model, as Ultralytics' OpenVINO INT8 export does it.

The ONNX model (input pinned, nodes named) is read by OpenVINO, whose ops
keep the ONNX node names, so the float region found on the ONNX graph is
the NNCF ignored scope as it stands. The mixed preset (symmetric weights,
asymmetric activations) is what Ultralytics uses for detectors.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from robot_model_deployer.inference.engine import first_line



def nncf_available() -> bool:
    """True when both nncf and openvino import."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_openvino(model_path: Path, target: Path, calibration: Sequence[np.ndarray], input_name: str,
                      float_nodes: Sequence[str], extra_feeds: Mapping[str, np.ndarray]) -> list[str]:
    """Write the INT8 OpenVINO IR of ``model_path`` to ``target`` (.xml + .bin); returns notes for the report."""
    from robot_model_deployer.optimize.quantize import QuantizationError

    if not nncf_available():
        raise QuantizationError("tool nncf needs the nncf and openvino packages: pip install nncf openvino")
    import nncf
    import openvino as ov

    try:
        model = ov.Core().read_model(str(model_path))
        names = {op.get_friendly_name() for op in model.get_ops()}
        # OpenVINO splits a Conv with bias into Convolution ".../WithoutBiases" + Add (the ONNX name).
        ignored = [n for node in float_nodes for n in (node, f"{node}/WithoutBiases") if n in names]
        scope = nncf.IgnoredScope(names=ignored, validate=False)
        calibration_set = nncf.Dataset(list(calibration), lambda tensor: {input_name: tensor, **extra_feeds})
        # NNCF logs every ignored op and draws progress bars on stdout; the report carries what matters.
        from nncf.common.logging import nncf_logger

        level = nncf_logger.level
        nncf.set_log_level(logging.WARNING)
        try:
            quantized = nncf.quantize(model, calibration_set, preset=nncf.QuantizationPreset.MIXED,
                                      ignored_scope=scope, subset_size=len(calibration))
        finally:
            nncf.set_log_level(level)
        target.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(target), compress_to_fp16=False)
    except Exception as exc:  # NNCF and OpenVINO raise many types; one message for the report.
        raise QuantizationError(f"NNCF quantization failed: {first_line(exc)}") from exc
    return [f"nncf {nncf.__version__}, mixed preset, {len(ignored)} nodes in the ignored scope"]

