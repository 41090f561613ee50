"""Why a bundle was refused: one BundleError subclass per kind of problem.

Callers (the manager node, ``rmd``) can react per kind, e.g. report a
signature problem to security tooling, while the message alone always says
what is wrong and what to do.
"""
from __future__ import annotations

import errno

from robot_model_deployer.bundle.text import one_line

__all__ = [
    "BundleError", "BundleFormatError", "SignatureError", "IntegrityError", "UnsafeArchiveError",
    "LimitExceededError", "VersionConflictError", "ModelCheckError", "InsufficientSpaceError", "BundleReadError",
    "bundle_error_from",
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


class BundleReadError(BundleError):
    """Reading or unpacking failed in a way no check above names (an OS error, a parser's own limit)."""


def bundle_error_from(exc: Exception, source: object) -> BundleError:
    """Any failure while a bundle is read, unpacked or checked, as a BundleError with a one-line reason.

    The boundary of ingest and ``rmd bundle`` calls this for whatever is not
    a BundleError already (RecursionError, MemoryError, OSError, ...), so
    every refusal is recorded the same way and nothing escapes unexplained.
    """
    if isinstance(exc, BundleError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InsufficientSpaceError(f"the store's disk filled up while {source} was unpacked; free space on it "
                                      "and deploy again")
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return UnsafeArchiveError(f"{source} holds a name too long for this file system; rename the file")
    if isinstance(exc, OSError):
        what = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        reason = one_line(exc.strerror or str(exc), 200)
        return BundleReadError(f"{source} could not be read or unpacked ({what}: {reason})")
    if isinstance(exc, (RecursionError, MemoryError)):
        return BundleReadError(f"{source} is too deeply nested or too large to read ({type(exc).__name__}); it is "
                               "not a bundle rmd made")
    return BundleReadError(f"{source} could not be read ({type(exc).__name__}: {one_line(str(exc), 200)})")
