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


def test_serving_sessions_do_not_spin_unless_asked() -> None:
    from robot_model_deployer.inference.engine import cpu_session_options

    quiet, spinning = cpu_session_options(2), cpu_session_options(0, spinning=True)
    assert quiet.intra_op_num_threads == 2 and spinning.intra_op_num_threads == 0
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_a_served_model_gets_the_nodes_spinning_choice(tmp_path) -> None:
    from robot_model_deployer.deploy.serving import open_serving_engine
    from robot_model_deployer.testing import models

    bundle = models.write_bundle(tmp_path / "bundle", models.colour_classifier(), models.classifier_manifest())
    for spinning in (False, True):
        engine, served = open_serving_engine(str(bundle), threads=1, spinning=spinning)
        options = engine.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
        assert served == "model as shipped"
