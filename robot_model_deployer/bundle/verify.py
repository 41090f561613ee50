"""Deciding whether to trust a bundle: signature, hashes, limits, and a model that loads.

``unpack_bundle`` fixes the order of checks so no caller can get it wrong:
signature over ``files.json`` and the declared limits first, then the
manifest (and the caller's version and space checks), and only then any
model byte, hashed while it streams. Whether the model loads is checked by
a ``ModelCheck`` the caller passes in (inference.model_check.check_model):
that needs ONNX Runtime, which this layer never imports.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robot_model_deployer.bundle.errors import SignatureError, bundle_error_from
from robot_model_deployer.bundle.extract import BundleHeader, ExtractionLimits, ProgressCallback, open_bundle
from robot_model_deployer.bundle.filelist import FileList
from robot_model_deployer.bundle.manifest import Manifest
from robot_model_deployer.bundle.signing import TrustStore

_log = logging.getLogger(__name__)

ModelCheck = Callable[[Path], object]
"""Checks the model of the unpacked bundle in a directory; raises a BundleError subclass to refuse it."""


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose every file matched a ``files.json`` accepted by the signature policy."""

    manifest: Manifest
    file_list: FileList
    key_id: str | None
    warnings: tuple[str, ...] = ()

    @property
    def signed(self) -> bool:
        return self.key_id is not None


def check_signature(header: BundleHeader, *, source: Path, trust: TrustStore | None,
                    allow_unsigned: bool) -> tuple[str | None, tuple[str, ...]]:
    """Return the trusted signer's key id (None if accepted unsigned) and any warnings."""
    signature = header.signature
    if signature is not None and trust is not None:
        trust.verify(header.file_list_bytes, signature)
        return signature.key_id, ()
    if not allow_unsigned:
        if signature is None:
            raise SignatureError(f"{source} is not signed; sign it with rmd bundle sign, or allow unsigned "
                                 "bundles explicitly (development only)")
        raise SignatureError(f"{source} is signed by key {signature.key_id} but no trust store was given to "
                             "check it; pass a trust store directory of public keys")
    reason = "is NOT SIGNED" if signature is None else f"has a signature by key {signature.key_id} that was NOT CHECKED"
    warning = (f"WARNING: bundle {source} {reason}; accepted only because unsigned bundles are allowed. "
               "Anyone could have made it. Never allow unsigned bundles on a fielded robot.")
    _log.warning(warning)
    return None, (warning,)


def unpack_bundle(source: Path, *, dest: Path | None, trust: TrustStore | None, allow_unsigned: bool,
                  limits: ExtractionLimits = ExtractionLimits(),
                  before_extract: Callable[[Manifest, FileList], None] | None = None,
                  progress: ProgressCallback | None = None) -> VerifiedBundle:
    """Verify ``source`` (tar or directory) and, if ``dest`` is given, unpack it there.

    ``before_extract`` runs after the signature and manifest are checked and
    before any other file is read: the place for version and free-space
    checks. Raises a BundleError subclass naming the first problem found.
    """
    with open_bundle(source, limits) as reader:
        key, warnings = check_signature(reader.header, source=source, trust=trust, allow_unsigned=allow_unsigned)
        manifest = reader.read_manifest()
        if before_extract is not None:
            before_extract(manifest, reader.header.file_list)
        reader.extract(dest, progress)
        return VerifiedBundle(manifest, reader.header.file_list, key, warnings)


def verify_bundle(*, bundle: Path, trust: TrustStore | None, model_check: ModelCheck, allow_unsigned: bool = False,
                  limits: ExtractionLimits = ExtractionLimits(),
                  progress: ProgressCallback | None = None) -> VerifiedBundle:
    """Every check a robot makes at ingest, without a store: unpacks to a temporary directory.

    ``model_check`` runs on the unpacked bundle once every file matched.
    Every failure is a BundleError (see bundle_error_from).
    """
    try:
        with tempfile.TemporaryDirectory(prefix="rmd-verify-") as scratch:
            verified = unpack_bundle(bundle, dest=Path(scratch), trust=trust, allow_unsigned=allow_unsigned,
                                     limits=limits, progress=progress)
            model_check(Path(scratch))
    except Exception as exc:  # the boundary: whatever failed, one BundleError says what
        raise bundle_error_from(exc, bundle) from None
    return verified
