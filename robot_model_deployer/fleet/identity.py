"""Which model version a bundle file holds, read without trusting it (the manager verifies)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.extract import inspect_bundle
from robot_model_deployer.bundle.filelist import file_sha256


@dataclass(frozen=True)
class BundleIdentity:
    """A bundle as the robot's store will know it: name, version and the served model's sha256.

    ``bundle_sha256`` is the tar file's own hash: the key Mender's artifact
    carries (meta-data) and the spool file's name.
    """

    name: str
    version: str
    model_sha256: str
    bundle_sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def matches(self, model: Mapping[str, Any] | None) -> bool:
        """True when ``model`` (a ModelInfo as ``rmd robot status --json`` prints it) is this bundle's.

        The status names a candidate without its sha256 until it serves; a
        store holds one bundle per name@version (another with the same
        version is refused unless forced), so name@version decides then.
        """
        if model is None or (model.get("name"), model.get("version")) != (self.name, self.version):
            return False
        return not model.get("model_sha256") or model["model_sha256"] == self.model_sha256


def identify_bundle(path: Path) -> BundleIdentity:
    """Read ``path``'s manifest and files.json (whole archive checked, no signature); raises BundleError."""
    info = inspect_bundle(bundle=path)
    model = info.file_list.get(info.manifest.model)
    if model is None:
        raise BundleError(f"{path}: files.json does not list the model {info.manifest.model}")
    return BundleIdentity(info.manifest.name, str(info.manifest.version), model.sha256, file_sha256(path))
