"""What serving a model costs a node at start: none of the optimizer is imported."""
from __future__ import annotations

import json
import subprocess
import sys

# The optimizer's parts a perception node must never pay for (about a second of imports).
OPTIMIZER_ONLY = ("robot_model_deployer.optimize.quantize", "robot_model_deployer.optimize.gate",
                  "robot_model_deployer.optimize.pipeline", "robot_model_deployer.optimize.hardware",
                  "robot_model_deployer.optimize.compile", "onnxruntime.quantization", "onnx")


def test_serving_imports_nothing_of_the_optimizer() -> None:
    # A fresh interpreter: this test process has imported the optimizer for other tests.
    probe = ("import json, sys; import robot_model_deployer.deploy.serving; "
             "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                       text=True).stdout)
    assert "robot_model_deployer.deploy.serving" in loaded
    assert [name for name in OPTIMIZER_ONLY if name in loaded] == []
