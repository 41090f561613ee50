"""The demo's whole scenario over real DDS, on the small colour models: every step as scripted, and its report.

The demo itself runs EfficientNet-Lite0; here the same scenario plays with the
colour classifier (seconds, not minutes, of optimize and inference) and a
camera that shows red, green and blue in turn, so the constant-class v3
agrees with the live model on a third of the frames at most.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_model_deployer.testing import models
from robot_model_deployer.testing.ros_graph import executable, next_domain_id

pytest.importorskip("mcap_ros2", reason="the demo extra (mcap, mcap-ros2-support, matplotlib) is not installed")
pytest.importorskip("matplotlib", reason="the demo extra (mcap, mcap-ros2-support, matplotlib) is not installed")

SCENARIO_TIMEOUT_S = 170.0
SCRIPTED = {"v1": "live", "v2": "live", "v3": "refused in shadow", "v4": "rolled back in probation",
            "rollback": "rolled back to 1.0.0"}


def colour_bundle(root: Path) -> Path:
    """The colour classifier with a few labelled-free validation images, so the optimize stage runs."""
    images = {f"validation/{colour}.png": _png(models.solid_image(colour, 32, 32)) for colour in models.COLOUR_LABELS}
    manifest = {**models.classifier_manifest(size=32),
                "validation": {"images": sorted(images)}, "calibration": {"images": sorted(images)}}
    return models.write_bundle(root / "colour", models.colour_classifier(size=32), manifest, extra_files=images)


def _png(array: np.ndarray) -> bytes:
    from io import BytesIO

    out = BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_the_demo_plays_every_step_as_scripted_and_writes_its_report(tmp_path):
    camera = tmp_path / "camera"
    camera.mkdir()
    for index, colour in enumerate(models.COLOUR_LABELS):
        Image.fromarray(models.solid_image(colour, 64, 48)).save(camera / f"{index}-{colour}.png")
    report = tmp_path / "report"
    env = dict(os.environ, ROS_DOMAIN_ID=str(next_domain_id()), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    command = [executable("demo"), "--bundle", str(colour_bundle(tmp_path)), "--camera-source", str(camera),
               "--seconds-per-image", "0.1", "--report-dir", str(report), "--duration", str(SCENARIO_TIMEOUT_S - 20)]
    demo = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = demo.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        output, _ = demo.communicate()
        pytest.fail(f"the demo did not end within {SCENARIO_TIMEOUT_S} s:\n{output}")
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, output

    summary = (report / "summary.txt").read_text()
    scenario = summary.split("\nFrames:")[0].splitlines()
    rows = {line.split()[0]: line for line in scenario if line.split()[:1] and line.split()[0] in SCRIPTED}
    for step, outcome in SCRIPTED.items():
        assert outcome in rows[step] and " yes " in rows[step], f"{step}:\n{output}"
    assert "Stopped before the scenario ended" not in summary

    # Each stage of v2 printed as it happened, with figures at the end of its deployment.
    v2_lines = [line for line in output.splitlines() if " v2 " in line]
    for stage in ("verify", "stage", "optimize", "shadow", "swap", "probation", "commit"):
        assert any(f" v2  {stage} " in line for line in v2_lines), f"no {stage} line for v2:\n{output}"
    assert any("shadow: pass after" in line for line in v2_lines) and any("probation: passed" in line
                                                                         for line in v2_lines), output
    assert any(" v3  " in line and "stopped early" in line for line in output.splitlines()), output
    assert f"[demo] report: {report}" in output

    with Image.open(report / "timeline.png") as timeline:
        assert timeline.format == "PNG"
    from robot_model_deployer.demo.recording import check_recording

    decoded = check_recording(report / "demo.mcap")
    assert decoded.get("/image", 0) > 10 and decoded.get("/results", 0) > 100, decoded
    assert decoded.get("/model_manager/status", 0) > 10, decoded
    assert sorted(p.name for p in (report / "logs").iterdir()) == [
        "model_manager.log", "perception_a.log", "perception_b.log", "shadow.log"]
