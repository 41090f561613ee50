"""``rmd mender artifact``: a bundle wrapped for Mender with the real mender-artifact tool."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.cli.main import main as rmd
from robot_model_deployer.fleet.artifact import ArtifactError, build_artifact
from robot_model_deployer.fleet.identity import identify_bundle
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle

needs_tool = pytest.mark.skipif(shutil.which("mender-artifact") is None,
                                reason="mender-artifact is not installed: sudo apt-get install mender-artifact "
                                       "(scripts/setup.sh does it as root)")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    key = generate_keypair(out_dir=tmp_path / "keys", name="k").private_key
    source = write_bundle(tmp_path / "b", colour_classifier(), classifier_manifest(version="2.1.0"))
    output = tmp_path / "colour-2.1.0.tar"
    create_bundle(source=source, output=output)
    sign_bundle(bundle=output, key=key)
    return output


def _ec_key(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    key, pub = directory / "mender.key", directory / "mender.pub"
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def test_a_missing_tool_is_named_with_how_to_install_it(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no-such-mender-artifact is not installed; install it: "
                                            r"`sudo apt-get install mender-artifact`"):
        build_artifact(bundle=bundle, output=tmp_path / "x.mender", device_types=["t"], tool="no-such-mender-artifact")
    assert not (tmp_path / "x.mender").exists()


def test_rmd_says_when_the_tool_is_missing(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert rmd(["mender", "artifact", str(bundle), "-o", str(tmp_path / "x.mender"), "--device-type", "t"]) == 1
    assert "mender-artifact is not installed; install it" in capsys.readouterr().err


@needs_tool
def test_the_artifact_holds_the_bundle_its_sha256_and_provides_the_version(tmp_path: Path, bundle: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "colour.mender"
    assert rmd(["mender", "artifact", str(bundle), "-o", str(output), "--device-type", "amr-a",
                "--device-type", "amr-b"]) == 0
    out = capsys.readouterr().out
    assert "name       colour_classifier-2.1.0  (type rmd-model, for amr-a, amr-b)" in out
    assert "signed     no" in out
    shown = subprocess.run(["mender-artifact", "read", str(output)], capture_output=True, text=True, check=True).stdout
    assert "Name: colour_classifier-2.1.0" in shown and "Type:   rmd-model" in shown
    assert "'[amr-a amr-b]'" in shown
    assert "rmd-model.colour_classifier.version: 2.1.0" in shown
    meta = json.loads(shown.split("Metadata:", 1)[1].split("Files:", 1)[0])
    identity = identify_bundle(bundle)
    assert meta == {"bundle_sha256": identity.bundle_sha256, "model_sha256": identity.model_sha256,
                    "name": "colour_classifier", "version": "2.1.0"}
    assert f"name:     {bundle.name}" in shown


@needs_tool
def test_a_signed_artifact_validates_with_the_public_key_only(tmp_path: Path, bundle: Path) -> None:
    key, pub = _ec_key(tmp_path)
    built = build_artifact(bundle=bundle, output=tmp_path / "s.mender", device_types=["t"], key=key, name="rel-7")
    assert built.signed and built.name == "rel-7"
    good = subprocess.run(["mender-artifact", "validate", str(built.path), "-k", str(pub)], capture_output=True)
    assert good.returncode == 0, good.stderr
    (tmp_path / "other").mkdir()
    _, other = _ec_key(tmp_path / "other")
    bad = subprocess.run(["mender-artifact", "validate", str(built.path), "-k", str(other)], capture_output=True)
    assert bad.returncode != 0


@needs_tool
def test_bad_input_is_refused_with_what_to_do_and_writes_nothing(tmp_path: Path, bundle: Path) -> None:
    output = tmp_path / "x.mender"
    with pytest.raises(ArtifactError, match="does not exist; make one with `openssl ecparam"):
        build_artifact(bundle=bundle, output=output, device_types=["t"], key=tmp_path / "missing.key")
    with pytest.raises(ArtifactError, match="name at least one device type"):
        build_artifact(bundle=bundle, output=output, device_types=[])
    ed25519 = generate_keypair(out_dir=tmp_path / "ed", name="ed").private_key
    with pytest.raises(ArtifactError, match="mender-artifact failed: .*key"):
        build_artifact(bundle=bundle, output=output, device_types=["t"], key=ed25519)
    not_a_bundle = tmp_path / "notes.tar"
    not_a_bundle.write_bytes(b"hello")
    with pytest.raises(Exception, match="notes.tar"):
        build_artifact(bundle=not_a_bundle, output=output, device_types=["t"])
    assert not output.exists()
