"""`rmd optimize`: runs the stage from the command line and reports as a table or JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robot_model_deployer.cli.main import main
from robot_model_deployer.testing.models import classifier_manifest
from robot_model_deployer.testing.quant_models import colour_images, conv_classifier, write_image_bundle

SIZE = 32


@pytest.fixture()
def targets_file(tmp_path: Path) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": {"quick": {"accelerators": ["cpu"], "precisions": ["int8", "fp32"],
                                                          "benchmark_runs": 3, "warmup_runs": 1}}}))
    return path


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return write_image_bundle(tmp_path / "bundle", conv_classifier(SIZE), classifier_manifest(size=SIZE),
                              colour_images(6, SIZE, seed=1), colour_images(9, SIZE, seed=2))


def test_json_report_on_stdout_and_next_to_the_artifacts(bundle: Path, targets_file: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["optimize", str(bundle), "--target", "quick", "--out", str(out), "--json",
                 "--targets-file", str(targets_file)])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["target"] == "quick" and report["chosen"]
    assert json.loads((out / "optimization_report.json").read_text()) == report
    assert "benchmark" in captured.err  # progress goes to stderr


def test_table_marks_the_chosen_variant(bundle: Path, targets_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMD_TARGETS_FILE", str(targets_file))
    assert main(["optimize", str(bundle), "--target", "quick", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["variant", "status"]
    assert sum(line.startswith("*") for line in lines) == 1
    assert lines[-1].startswith("chosen ")


def test_unknown_target_fails_with_the_known_names(bundle: Path, targets_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["optimize", str(bundle), "--target", "mars_rover", "--out", str(tmp_path / "out"),
                 "--targets-file", str(targets_file)])
    assert code == 1
    assert "known: quick" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
