"""Which bundle the store takes for a version it has seen: a retry, a forced one, or none.

Pure rules on the store's state (no files touched), so each answer and its
advice is tested on its own. Every refusal says what to do instead; every
exception made because ``force`` was set is returned as the line to record.
"""
from __future__ import annotations

from robot_model_deployer.bundle.errors import VersionConflictError
from robot_model_deployer.store.state import StoreState, VersionRef


def check_installed_copy(state: StoreState, ref: VersionRef, same_files: bool, force: bool) -> list[str]:
    """May ``ref``, already installed, be deployed again from a bundle? Raises if not; returns what to record.

    ``same_files``: the bundle lists exactly the files installed for ``ref``.
    The newest version, in no slot and not marked bad, is taken at once (a
    deployment that was cancelled or whose swap failed is tried again). An
    older one or one marked bad only with ``force``: replaying an old bundle
    must not be a quiet way back to it, and a bad version stays out unless
    the operator asks for another try.
    """
    if not same_files:
        raise VersionConflictError(f"{ref} is already installed with other contents, and installed versions "
                                   "are immutable; bump the version in manifest.yaml for new contents")
    if ref == state.active:
        raise VersionConflictError(f"{ref} is already installed and active; there is nothing to deploy")
    if ref == state.previous:
        raise VersionConflictError(f"{ref} is already installed as the previous version; use the rollback "
                                   "service to serve it again")
    if ref == state.candidate:
        raise VersionConflictError(f"{ref} is already installed and on trial as the candidate")
    reason = state.bad_reason(ref)
    newest = state.newest_version(ref.name)
    if reason is None and newest == ref.version:
        return []
    why = f"marked bad ({reason})" if reason is not None else f"older than {ref.name} {newest}"
    if not force:
        raise VersionConflictError(f"{ref} is already installed and was {why}; publish a new version, or deploy "
                                   "this bundle again with force set to retry it (recorded)")
    return [f"{ref} was {why}; deployed again because force was set"]


def check_new_version(state: StoreState, ref: VersionRef, force: bool) -> list[str]:
    """Refuse a downgrade, or a replay of a version no longer on disk; with ``force`` return what to record."""
    newest = state.newest_version(ref.name)
    if newest is None or ref.version > newest:
        return []
    kind = "a downgrade" if ref.version < newest else "a replay of the same version"
    if not force:
        raise VersionConflictError(f"{ref} is {kind}: the store already had {ref.name} {newest}; bump the "
                                   "version in manifest.yaml, or force the install if you mean it")
    return [f"{ref} is {kind} (store had {ref.name} {newest}); installed because force was set"]
