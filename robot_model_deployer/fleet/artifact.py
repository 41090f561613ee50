"""Wrap a signed bundle in a Mender artifact of type ``rmd-model`` (with Mender's mender-artifact tool).

The artifact carries the bundle unchanged as its one file and the bundle's
sha256 in its meta-data: the key the update module finds the update by.
Mender's signature (``--key``) covers the artifact; the bundle's own
signature stays inside and the robot's manager checks it (docs/fleet.md).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.fleet.identity import BundleIdentity, identify_bundle
from robot_model_deployer.fleet.mender_module import META_BUNDLE_SHA256, MODULE_TYPE

TOOL = "mender-artifact"
INSTALL_HINT = ("install it: `sudo apt-get install mender-artifact` (Debian 12 ships 3.9), or a release from "
                "https://docs.mender.io/downloads")


# mender-artifact 3.9 reads RSA keys in PKCS#1 and ECDSA keys in SEC1 form only (no Ed25519, no PKCS#8).
KEY_HINT = ("make one with `openssl ecparam -genkey -name prime256v1 -noout -out mender.key` (ECDSA P-256) or "
            "`openssl genrsa -traditional -out mender.key 3072`, and its public half for the robots with "
            "`openssl pkey -in mender.key -pubout -out mender.pub`")


class ArtifactError(RuntimeError):
    """The artifact could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class BuiltArtifact:
    path: Path
    name: str
    bundle: BundleIdentity
    device_types: tuple[str, ...]
    signed: bool


def build_artifact(*, bundle: Path, output: Path, device_types: Sequence[str], key: Path | None = None,
                   name: str | None = None, tool: str = TOOL) -> BuiltArtifact:
    """Write ``output`` (.mender) holding ``bundle`` for ``device_types``; signed with ``key`` when given."""
    if not device_types:
        raise ArtifactError("name at least one device type (--device-type), as in the robots' device_type file")
    executable = shutil.which(tool)
    if executable is None:
        raise ArtifactError(f"{tool} is not installed; {INSTALL_HINT}")
    if key is not None and not key.is_file():
        raise ArtifactError(f"Mender signing key {key} does not exist; {KEY_HINT}")
    identity = identify_bundle(bundle)
    artifact_name = name or f"{identity.name}-{identity.version}"
    meta = {META_BUNDLE_SHA256: identity.bundle_sha256, "name": identity.name, "version": identity.version,
            "model_sha256": identity.model_sha256}
    with tempfile.TemporaryDirectory(prefix="rmd-artifact-") as scratch:
        meta_path = Path(scratch) / "meta-data.json"
        meta_path.write_text(json.dumps(meta, sort_keys=True))
        command = [executable, "write", "module-image", "--type", MODULE_TYPE, "--artifact-name", artifact_name,
                   "--file", str(bundle), "--meta-data", str(meta_path), "--output-path", str(output),
                   # Provides rmd-model.<name>.version = <version>, so the server's inventory shows it.
                   "--software-filesystem", MODULE_TYPE, "--software-name", identity.name,
                   "--software-version", identity.version]
        for device_type in device_types:
            command += ["--device-type", device_type]
        if key is not None:
            command += ["--key", str(key)]
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        output.unlink(missing_ok=True)
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ArtifactError(f"{tool} failed: {one_line(lines[-1] if lines else f'exit {done.returncode}', 500)}")
    return BuiltArtifact(output, artifact_name, identity, tuple(device_types), key is not None)
