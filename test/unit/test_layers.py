"""The architecture as a contract: layers import downward only, and the core never imports ROS.

The contracts live in .importlinter at the repository root; lint-imports
(import-linter) checks them against the source tree. A second test breaks a
copy of the tree on purpose, so the contracts are shown to catch a crossing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed by scripts/setup.sh from the lock


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The source tree, not the colcon install space, is what the contracts describe.
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache", "--no-logo"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, crossing, contract", [
    ("bundle/filelist.py", "import robot_model_deployer.inference.engine", "Layers import downward only"),
    ("store/state.py", "import onnxruntime", "The bundle and the store never load models"),
    ("validation/metrics.py", "import rclpy", "The core never imports ROS"),
    ("deploy/serving.py", "import robot_model_deployer.optimize.quantize",
     "Serving a model never pulls in the optimizer"),
])
def test_a_crossing_breaks_its_contract(tmp_path: Path, module: str, crossing: str, contract: str):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "robot_model_deployer", tree / "robot_model_deployer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tree / "robot_model_deployer" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{crossing}  # test: a crossing\n", encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout
