"""One installed version as the store hands it out: where it lives and what it holds.

The store (store/model_store.py) reads a version's manifest and files.json
once per process and gives out this record, so later stages (optimize,
serving, shadow) carry it along instead of reading the bundle again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robot_model_deployer.bundle.filelist import FileList
from robot_model_deployer.bundle.loader import BundleDir
from robot_model_deployer.bundle.manifest import Manifest
from robot_model_deployer.store.state import StoreError, VersionRef

BUNDLE_SUBDIR = "bundle"
DERIVED_SUBDIR = "derived"


@dataclass(frozen=True)
class InstalledVersion:
    """One version on disk, as ``ingest``, ``installed`` and ``list_versions`` report it.

    ``bundle`` holds its manifest and labels and ``files`` its verified
    files.json, each read once per process (installed versions never
    change): carry this along rather than reading the bundle again.
    """

    ref: VersionRef
    root: Path
    bundle: BundleDir
    files: FileList
    key_id: str | None
    installed_at: str
    forced: bool
    warnings: tuple[str, ...] = ()

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def model_sha256(self) -> str:
        """The model's sha256 as the verified files.json lists it, so the model is never hashed again."""
        entry = self.files.get(self.manifest.model)
        if entry is None:
            raise StoreError(f"installed version {self.root} is damaged (files.json does not list the model "
                             f"{self.manifest.model}); remove it from the store")
        return entry.sha256

    @property
    def bundle_dir(self) -> Path:
        return self.root / BUNDLE_SUBDIR

    @property
    def derived_dir(self) -> Path:
        return self.root / DERIVED_SUBDIR
