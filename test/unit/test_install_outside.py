"""`pip install` of the package into a fresh venv outside the checkout, with no ROS, gives a working `rmd`.

What a workstation user does: install, then create, sign, verify, inspect and
optimize a bundle. Only the command line is used there, so the test holds
whatever the package's modules look like inside. The dependencies come from
the registry at the versions scripts/requirements.lock pins (pip's cache
makes a second run quick). Select it with `-m install`, leave it out with
`-m "not install"`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from robot_model_deployer.testing.models import classifier_manifest
from robot_model_deployer.testing.quant_models import colour_images, conv_classifier, write_image_bundle

pytestmark = pytest.mark.install

CHECKOUT = Path(__file__).resolve().parents[2]
LOCK = CHECKOUT / "scripts" / "requirements.lock"
SIZE = 32
# What the test process inherits from scripts/env.sh or a sourced ROS: none of
# it may reach the new venv, or it would find ROS and the colcon install there.
_ROS_ENV_PREFIXES = ("AMENT_", "COLCON_", "ROS_", "_ROS_", "RMW_", "RMD_", "VIRTUAL_ENV")
_ROS_ENV_NAMES = {"PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH"}


@dataclass(frozen=True)
class Workstation:
    """A venv with the package installed, and a working directory outside the checkout."""

    venv: Path
    work: Path
    env: dict[str, str]

    def run(self, program: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / program), *map(str, args)], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, program: str, *args: str | Path, timeout: float = 120) -> str:
        done = self.run(program, *args, timeout=timeout)
        assert done.returncode == 0, f"{program} {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def _lock_pins(lock: Path) -> str:
    """name==version lines of the lock: pip refuses hashes in a constraints file."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*==\S+)", lock.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert pins, f"no pins in {lock}"
    return "\n".join(pins) + "\n"


def _source_copy(target: Path) -> Path:
    """What an sdist holds: building in the checkout would leave build/ and egg-info there."""
    target.mkdir()
    for name in ("setup.py", "setup.cfg"):
        shutil.copy2(CHECKOUT / name, target / name)
    shutil.copytree(CHECKOUT / "robot_model_deployer", target / "robot_model_deployer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def write_bundle_source(directory: Path) -> Path:
    """A tiny colour classifier with calibration and validation images, as a bundle directory."""
    return write_image_bundle(directory, conv_classifier(SIZE), classifier_manifest(size=SIZE),
                              colour_images(6, SIZE, seed=1), colour_images(9, SIZE, seed=2))


@pytest.fixture(scope="module")
def workstation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workstation]:
    root = tmp_path_factory.mktemp("workstation")
    env = {key: value for key, value in os.environ.items()
           if key not in _ROS_ENV_NAMES and not key.startswith(_ROS_ENV_PREFIXES)}
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{os.defpath}"
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], env=env, check=True, timeout=120)
    constraints = root / "constraints.txt"
    constraints.write_text(_lock_pins(LOCK), encoding="utf-8")
    (root / "work").mkdir()
    station = Workstation(root / "venv", root / "work", env)
    done = station.run("pip", "install", "--quiet", "--disable-pip-version-check", "-c", constraints,
                       _source_copy(root / "source"), timeout=600)
    assert done.returncode == 0, f"pip install of the package failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    yield station
    shutil.rmtree(root / "venv")  # A few hundred MB; pytest keeps the last runs' temporary directories.


def test_the_venv_has_no_ros_and_its_own_copy_of_the_package(workstation: Workstation) -> None:
    no_ros = workstation.run("python", "-c", "import rclpy")
    assert no_ros.returncode != 0 and "No module named 'rclpy'" in no_ros.stderr
    where = workstation.ok("python", "-c", "import robot_model_deployer.cli.main as m; print(m.__file__)")
    assert Path(where.strip()).is_relative_to(workstation.venv)


def test_rmd_keys_create_sign_verify_inspect(workstation: Workstation) -> None:
    work = workstation.work
    write_bundle_source(work / "my_model")
    workstation.ok("rmd", "keys", "generate", "--out", work / "keys", "--name", "fleet")
    (work / "trust").mkdir()
    shutil.copy(work / "keys" / "fleet.pub", work / "trust")
    workstation.ok("rmd", "bundle", "create", work / "my_model", "-o", work / "my_model-1.0.0.tar")
    workstation.ok("rmd", "bundle", "sign", work / "my_model-1.0.0.tar", "--key", work / "keys" / "fleet.key")
    verified = workstation.ok("rmd", "bundle", "verify", work / "my_model-1.0.0.tar", "--trust", work / "trust")
    assert verified.startswith("OK colour_classifier 1.0.0 (classification)") and "signed by trusted key" in verified
    inspected = workstation.ok("rmd", "bundle", "inspect", work / "my_model-1.0.0.tar")
    assert "colour_classifier 1.0.0 (classification)" in inspected and "model.onnx" in inspected
    (work / "empty-trust").mkdir()
    refused = workstation.run("rmd", "bundle", "verify", work / "my_model-1.0.0.tar", "--trust", work / "empty-trust")
    assert refused.returncode == 1 and "not in the trust store" in refused.stderr


def test_rmd_optimize_finds_the_shipped_target_profiles(workstation: Workstation) -> None:
    source = write_bundle_source(workstation.work / "to_optimize")
    report = json.loads(workstation.ok("rmd", "optimize", source, "--target", "x86_cpu",
                                       "--out", workstation.work / "optimized", "--json", timeout=300))
    assert report["target"] == "x86_cpu" and report["chosen"]
    assert (workstation.work / "optimized" / "optimization_report.json").is_file()
