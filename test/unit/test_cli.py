"""``rmd`` as a user runs it: exit codes, one-line errors, summaries."""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest

from robot_model_deployer.cli import main as cli_main
from robot_model_deployer.cli.main import main
from robot_model_deployer.cli.progress import StderrProgress
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle


@pytest.fixture()
def signed_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    write_bundle(tmp_path / "src", colour_classifier(), classifier_manifest(version="1.0.0"))
    assert main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "release"]) == 0
    (tmp_path / "trust").mkdir()
    shutil.copy(tmp_path / "keys" / "release.pub", tmp_path / "trust")
    assert main(["bundle", "create", str(tmp_path / "src"), "-o", str(tmp_path / "b.tar")]) == 0
    assert main(["bundle", "sign", str(tmp_path / "b.tar"), "--key", str(tmp_path / "keys" / "release.key")]) == 0
    capsys.readouterr()
    return tmp_path / "b.tar"


def _key_id(tmp_path: Path) -> str:
    from robot_model_deployer.bundle.signing import key_id, load_public_key
    return key_id(load_public_key(tmp_path / "keys" / "release.pub"))


def test_verify_good_bundle_prints_a_summary(signed_bundle: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(signed_bundle), "--trust", str(tmp_path / "trust")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK colour_classifier 1.0.0 (classification): 3 files")
    assert f"signed by trusted key {_key_id(tmp_path)}" in out and err == ""


def test_verify_failure_is_one_line_on_stderr(signed_bundle: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty-trust").mkdir()
    assert main(["bundle", "verify", str(signed_bundle), "--trust", str(tmp_path / "empty-trust")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"rmd: error: bundle is signed by key {_key_id(tmp_path)}, which is not in the trust store")


def test_verify_multiline_library_errors_become_one_line(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_bundle(tmp_path / "src", colour_classifier(), classifier_manifest())
    (tmp_path / "src" / "manifest.yaml").write_text("name: [\n  unclosed\n", encoding="utf-8")
    assert main(["bundle", "create", str(tmp_path / "src"), "-o", str(tmp_path / "b.tar")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not valid YAML" in err


def test_verify_needs_trust_or_an_explicit_allow(signed_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(signed_bundle)]) == 1
    assert "give --trust DIR" in capsys.readouterr().err
    assert main(["bundle", "verify", str(signed_bundle), "--allow-unsigned"]) == 0
    out, err = capsys.readouterr()
    assert "UNSIGNED" in out and "rmd: WARNING" in err and "NOT CHECKED" in err


def test_inspect_shows_manifest_files_and_signer(signed_bundle: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "inspect", str(signed_bundle)]) == 0
    out = capsys.readouterr().out
    assert "colour_classifier 1.0.0 (classification)" in out
    assert f"key {_key_id(tmp_path)} (not checked" in out
    assert "model.onnx" in out and "labels.txt" in out


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "inspect", str(tmp_path / "nope.tar")]) == 1
    assert capsys.readouterr().err == f"rmd: error: bundle {tmp_path / 'nope.tar'} does not exist\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bundle", "frobnicate"])
    assert exited.value.code == 2


def test_a_command_group_is_one_module_in_the_registry(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
        parser = subparsers.add_parser("hello")
        parser.add_argument("--name", default="robot")
        parser.set_defaults(run=lambda args: print(f"hello {args.name}") or 0)

    extra = types.ModuleType("hello")
    extra.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setattr(cli_main, "COMMANDS", cli_main.COMMANDS + (extra,))
    assert main(["hello", "--name", "r2"]) == 0
    assert capsys.readouterr().out == "hello r2\n"
    assert main(["bundle", "inspect", "/nonexistent"]) == 1  # the built-in groups are still there


def test_progress_line_rewrites_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = StderrProgress("checking", stream)
    for fraction in (0.0, 0.004, 0.5, 1.0):
        progress("model.onnx", fraction)
    assert stream.getvalue() == ("\rchecking model.onnx   0%\rchecking model.onnx  50%"
                                 "\rchecking model.onnx 100%\n")


def test_installed_rmd_passes_the_exit_code_on(signed_bundle: Path, tmp_path: Path) -> None:
    rmd = shutil.which("rmd")
    if rmd is None:
        pytest.skip("rmd is not installed on PATH (source scripts/env.sh)")
    (tmp_path / "empty-trust").mkdir()
    result = subprocess.run([rmd, "bundle", "verify", str(signed_bundle), "--trust", str(tmp_path / "empty-trust")],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode == 1 and result.stderr.startswith("rmd: error: ")
