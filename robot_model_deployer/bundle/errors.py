"""Why a bundle was refused: one BundleError subclass per kind of problem.

Callers (the manager node, ``rmd``) can react per kind, e.g. report a
signature problem to security tooling, while the message alone always says
what is wrong and what to do.
"""
from __future__ import annotations

__all__ = [
    "BundleError", "BundleFormatError", "SignatureError", "IntegrityError", "UnsafeArchiveError",
    "LimitExceededError", "VersionConflictError", "ModelCheckError", "InsufficientSpaceError",
]


class BundleError(ValueError):
    """A bundle was refused; the message says why and what to fix."""


class BundleFormatError(BundleError):
    """Not a bundle: not a tar archive, truncated, or a malformed metadata file."""


class SignatureError(BundleError):
    """Unsigned (and not allowed), signed by an unknown key, or the signature does not match."""


class IntegrityError(BundleError):
    """A file's bytes or size differ from the file manifest, or a file is missing or unlisted."""


class UnsafeArchiveError(BundleError):
    """A member that could write outside the bundle or is not a regular file."""


class LimitExceededError(BundleError):
    """The bundle is larger than the extraction limits allow (size, file count, or inflation)."""


class VersionConflictError(BundleError):
    """The version is not newer than the one the store already has (downgrade or replay)."""


class ModelCheckError(BundleError):
    """The model file cannot be loaded or does not match the manifest's input description."""


class InsufficientSpaceError(BundleError):
    """The store's disk has too little free space to stage the bundle."""
