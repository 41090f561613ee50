"""Open an extracted bundle directory: read its manifest and check its files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.filelist import walk_bundle_dir
from robot_model_deployer.bundle.image_lists import resolve_manifest_images
from robot_model_deployer.bundle.manifest import MANIFEST_NAME, Manifest, ManifestError, parse_manifest

MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class BundleDir:
    """An extracted bundle on disk with its validated manifest."""

    root: Path
    manifest: Manifest
    labels: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.model

    def path(self, relative: str) -> Path:
        """Absolute path of a file the manifest names."""
        return self.root / relative


def load_bundle_dir(path: str | Path) -> BundleDir:
    """Read and check the bundle in directory ``path``; raises BundleError."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle path {root} does not exist")
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (expected a directory with {MANIFEST_NAME})")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: it has no {MANIFEST_NAME}")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    except UnicodeDecodeError:
        raise BundleError(f"{manifest_path} is not UTF-8 text") from None
    except ManifestError as exc:
        raise BundleError(str(exc)) from None
    manifest = _resolved_images(root, manifest, manifest_path)
    resolved_root = root.resolve()
    for relative in manifest.referenced_files():
        target = root / relative
        if not target.resolve().is_relative_to(resolved_root):
            raise BundleError(f"{relative} named in {MANIFEST_NAME} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{relative} named in {MANIFEST_NAME} is missing from the bundle")
    labels: tuple[str, ...] = ()
    if manifest.labels:
        try:
            text = (root / manifest.labels).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{manifest.labels}: the labels file is not UTF-8 text; "
                              "save it as UTF-8 and rebuild the bundle") from None
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not labels:
            raise BundleError(f"labels file {manifest.labels} is empty")
    return BundleDir(root=root, manifest=manifest, labels=labels)


def _resolved_images(root: Path, manifest: Manifest, manifest_path: Path) -> Manifest:
    """Folders and globs in the image lists resolved against the files under ``root``.

    The directory is walked (symlinks and special files refused, names
    checked as in an archive) only when an entry is not a plain file.
    """
    entries = manifest.calibration.images + manifest.validation.images
    if all((root / entry).is_file() for entry in entries):
        return manifest
    return resolve_manifest_images(manifest, walk_bundle_dir(root),
                                   lambda problem: BundleError(f"{manifest_path}: {problem}"))
