"""The robot's model store: installed versions, which one serves, and why.

Layout under the store root::

    state.json                      slots, stage, history (replaced atomically)
    staging/                        scratch; wiped on every open
    versions/<name>/<version>/
        bundle/                     the verified bundle, read-only
        derived/                    compiled models and reports of later stages
        install.json                who signed it, when it was installed

A version directory appears by one rename from ``staging/``, so it is
complete or absent; slots only ever name versions already on disk.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

from robot_model_deployer.bundle.errors import InsufficientSpaceError, VersionConflictError, bundle_error_from
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.bundle.extract import ExtractionLimits, ProgressCallback
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, FileList, parse_file_list
from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.bundle.manifest import Manifest
from robot_model_deployer.bundle.signing import TrustStore
from robot_model_deployer.bundle.verify import ModelCheck, VerifiedBundle, unpack_bundle
from robot_model_deployer.store.admission import check_installed_copy, check_new_version
from robot_model_deployer.store.durable import TEMP_SUFFIX, fsync_dir, fsync_tree, write_atomic
from robot_model_deployer.store.installed import BUNDLE_SUBDIR, DERIVED_SUBDIR, InstalledVersion
from robot_model_deployer.store.state import DeploymentStage, EventKind, StoreError, StoreState, VersionRef

STATE_NAME = "state.json"
VERSIONS_DIR = "versions"
STAGING_DIR = "staging"
UPLOADS_DIR = "uploads"  # staging/uploads/ survives the wipe: unfinished uploads resume after a restart
INSTALL_RECORD = "install.json"
DEFAULT_FREE_SPACE_MARGIN = 64 << 20

_log = logging.getLogger(__name__)
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Run a state-changing method under the store's lock (read, change, write as one step)."""
    @functools.wraps(method)
    def wrapper(self: "ModelStore", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class _AlreadyInstalled(Exception):
    """Raised inside ingest when the bundle is the one already installed for its version.

    ``forced`` holds what to record when only ``force`` let it be deployed again.
    """

    def __init__(self, ref: VersionRef, forced: list[str]) -> None:
        super().__init__(str(ref))
        self.ref = ref
        self.forced = forced


class ModelStore:
    """All changes to installed models go through here; every change is recorded with its reason.

    Open with ``ModelStore.open(root)``, which also recovers from a crash.
    Safe to call from several threads of one process (state changes are
    serialised; a long ingest does not block them); not safe for two
    processes at once: one manager owns a store.
    """

    def __init__(self, root: Path, state: StoreState, keep_others: int, free_space_margin: int) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._state = state
        self.keep_others = keep_others
        self.free_space_margin = free_space_margin
        self._bundles: dict[VersionRef, tuple[BundleDir, FileList]] = {}

    # ---- opening and recovery ------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, keep_others: int = 2,
             free_space_margin: int = DEFAULT_FREE_SPACE_MARGIN) -> "ModelStore":
        """Open (or create) the store at ``root``, wipe staging and roll back an uncommitted candidate.

        ``keep_others`` versions besides those a slot names survive pruning;
        ``free_space_margin`` bytes must stay free after staging a bundle.
        """
        if keep_others < 0 or free_space_margin < 0:
            raise ValueError("keep_others and free_space_margin must be >= 0")
        root = Path(root)
        for directory in (root, root / VERSIONS_DIR, root / STAGING_DIR):
            directory.mkdir(parents=True, exist_ok=True)
        _wipe(root / STAGING_DIR, keep=UPLOADS_DIR)
        (root / (STATE_NAME + TEMP_SUFFIX)).unlink(missing_ok=True)
        state_path = root / STATE_NAME
        state = StoreState.from_bytes(state_path.read_bytes(), str(state_path)) if state_path.exists() \
            else StoreState()
        store = cls(root, state, keep_others, free_space_margin)
        store._recover()
        return store

    def _recover(self) -> None:
        state = self._state
        for slot in ("active", "previous", "candidate"):
            ref = getattr(state, slot)
            if ref is not None and not self.version_dir(ref).is_dir():
                state = replace(state, **{slot: None}).with_event(
                    EventKind.RECOVERED, ref, f"{slot} slot named {ref}, which is not on disk; slot cleared")
        if state.candidate is not None:
            serving = f"serving {state.active}" if state.active else "no model is active"
            state = replace(state, candidate=None, stage=DeploymentStage.IDLE,
                            stage_message=f"recovered: candidate {state.candidate} rolled back").with_event(
                EventKind.RECOVERED, state.candidate,
                f"candidate {state.candidate} was not committed when the store was last closed (crash or restart "
                f"during stage {state.stage.value}); rolled back, {serving}")
        elif state.stage not in (DeploymentStage.IDLE, DeploymentStage.FAILED):
            state = replace(state, stage=DeploymentStage.IDLE,
                            stage_message=f"recovered: deployment interrupted during {state.stage.value}").with_event(
                EventKind.RECOVERED, None, f"deployment interrupted during {state.stage.value}; back to idle")
        for ref in self._refs_on_disk():
            # A crash between the rename into versions/ and the state update.
            state = state.with_newest(ref)
        if state != self._state or not (self.root / STATE_NAME).exists():
            self._save(state)

    # ---- queries -----------------------------------------------------------

    @property
    def state(self) -> StoreState:
        return self._state

    def version_dir(self, ref: VersionRef) -> Path:
        return self.root / VERSIONS_DIR / ref.name / str(ref.version)

    def bundle_dir(self, ref: VersionRef) -> Path:
        """The verified bundle files of ``ref`` (read-only)."""
        return self.version_dir(ref) / BUNDLE_SUBDIR

    def derived_dir(self, ref: VersionRef) -> Path:
        """Where later stages (optimize, compile, shadow) keep artifacts and reports for ``ref``."""
        return self.version_dir(ref) / DERIVED_SUBDIR

    def installed(self, ref: VersionRef) -> InstalledVersion:
        """An installed version with its manifest, e.g. to serve it; raises StoreError if it is not installed."""
        if not self.version_dir(ref).is_dir():
            raise StoreError(f"{ref} is not installed in {self.root}")
        return self._installed(ref)

    def list_versions(self) -> list[InstalledVersion]:
        """Every installed version, ordered by name then version."""
        return [self._installed(ref) for ref in self._refs_on_disk()]

    def _refs_on_disk(self) -> list[VersionRef]:
        refs = []
        for name_dir in sorted((self.root / VERSIONS_DIR).iterdir()):
            for version_dir in name_dir.iterdir():
                try:
                    refs.append(VersionRef.parse(f"{name_dir.name}@{version_dir.name}"))
                except ValueError:
                    _log.warning("ignoring %s: not a version directory", version_dir)
        return sorted(refs, key=lambda r: (r.name, r.version))

    def _installed(self, ref: VersionRef) -> InstalledVersion:
        root = self.version_dir(ref)
        try:
            record = json.loads((root / INSTALL_RECORD).read_text(encoding="utf-8"))
            bundle, files = self._bundles.get(ref) or self._read_bundle(ref)
            return InstalledVersion(ref, root, bundle, files, record["key_id"], record["installed_at"],
                                    record["forced"], tuple(record["warnings"]))
        except (OSError, ValueError, KeyError) as exc:  # BundleError is a ValueError
            raise StoreError(f"installed version {root} is damaged ({exc}); remove it from the store") from None

    def _read_bundle(self, ref: VersionRef) -> tuple[BundleDir, FileList]:
        """Parse an installed bundle's manifest and files.json, once per process."""
        directory = self.bundle_dir(ref)
        read = load_bundle_dir(directory), parse_file_list((directory / FILE_LIST_NAME).read_bytes(),
                                                           str(directory / FILE_LIST_NAME))
        self._bundles[ref] = read
        return read

    def _installed_at(self, ref: VersionRef) -> str:
        """Install time for ordering; a damaged record sorts as oldest, so it is pruned first."""
        try:
            return str(json.loads((self.version_dir(ref) / INSTALL_RECORD).read_text(encoding="utf-8"))
                       ["installed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    # ---- ingest ------------------------------------------------------------

    def ingest(self, bundle_path: Path, *, trust: TrustStore | None, model_check: ModelCheck,
               allow_unsigned: bool = False, force: bool = False, limits: ExtractionLimits = ExtractionLimits(),
               progress: ProgressCallback | None = None) -> InstalledVersion:
        """Verify a bundle (tar or directory) and install it as a new version; slots are not touched.

        Refused bundles raise a BundleError subclass, leave a ``rejected``
        event in the history and nothing outside ``staging/``. ``model_check``
        runs on the unpacked files in staging before they are installed (the
        store itself never loads a model).
        ``force`` admits a downgrade, a replay of a version no longer on disk,
        or another try of a version marked bad; it is recorded as a ``forced``
        event. The very bundle of an installed version that no slot names
        returns that version: the newest one at once (a deployment that was
        cancelled or whose swap failed is tried again), an older one or one
        marked bad only with ``force`` (which lifts the bad mark).
        """
        bundle_path = Path(bundle_path)
        work = self.root / STAGING_DIR / uuid.uuid4().hex
        work.mkdir()
        seen: list[VersionRef] = []
        forced: list[str] = []

        def before_extract(manifest: Manifest, file_list: FileList) -> None:
            ref = VersionRef(manifest.name, manifest.version)
            seen.append(ref)
            if self.version_dir(ref).exists():
                raise _AlreadyInstalled(ref, check_installed_copy(self._state, ref, self._same_files(ref, file_list),
                                                                  force))
            forced.extend(check_new_version(self._state, ref, force))
            self._check_space(file_list.total_size)

        try:
            verified = unpack_bundle(bundle_path, dest=work / BUNDLE_SUBDIR, trust=trust,
                                     allow_unsigned=allow_unsigned, limits=limits,
                                     before_extract=before_extract, progress=progress)
            model_check(work / BUNDLE_SUBDIR)
            return self._install(work, verified, bundle_path, forced)
        except _AlreadyInstalled as same:
            self._reuse(same.ref, bundle_path, same.forced)
            return replace(self._installed(same.ref), forced=bool(same.forced))
        except Exception as exc:  # the boundary: every refusal is a BundleError with a recorded reason
            error = bundle_error_from(exc, bundle_path)
            self._record(EventKind.REJECTED, seen[0] if seen else None, f"{bundle_path} rejected: {error}")
            if error is exc:
                raise
            raise error from None
        finally:
            if work.exists():
                shutil.rmtree(work)

    @_locked
    def _install(self, work: Path, verified: VerifiedBundle, bundle_path: Path,
                 forced: list[str]) -> InstalledVersion:
        """Move a verified staging directory into ``versions/`` and record it."""
        ref = VersionRef(verified.manifest.name, verified.manifest.version)
        if self.version_dir(ref).exists():
            raise VersionConflictError(f"{ref} was installed by another ingest while this one was verifying")
        installed_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        bundle = load_bundle_dir(work / BUNDLE_SUBDIR)
        (work / DERIVED_SUBDIR).mkdir()
        record = {"format": 1, "name": ref.name, "version": str(ref.version), "key_id": verified.key_id,
                  "installed_at": installed_at, "forced": bool(forced), "warnings": list(verified.warnings),
                  "source": str(bundle_path)}
        write_atomic(work / INSTALL_RECORD, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
        fsync_tree(work)
        target = self.version_dir(ref)
        name_dir = target.parent
        if not name_dir.is_dir():
            name_dir.mkdir()
            fsync_dir(name_dir.parent)
        os.rename(work, target)
        fsync_dir(name_dir)
        fsync_dir(work.parent)
        state = self._state.with_newest(ref)
        signer = f"signed by key {verified.key_id}" if verified.key_id else "UNSIGNED"
        state = state.with_event(EventKind.INSTALLED, ref, f"installed from {bundle_path}, {signer}")
        for message in forced:
            state = state.with_event(EventKind.FORCED, ref, message)
        self._save(state.without_bad(ref))
        bundle = replace(bundle, root=target / BUNDLE_SUBDIR)
        self._bundles[ref] = bundle, verified.file_list
        return InstalledVersion(ref, target, bundle, verified.file_list, verified.key_id, installed_at,
                                bool(forced), verified.warnings)

    @_locked
    def _reuse(self, ref: VersionRef, bundle_path: Path, forced: list[str]) -> None:
        """Record that ingest hands out the installed ``ref`` again; a forced retry lifts its bad mark."""
        state = self._state.with_event(EventKind.INSTALLED, ref, f"{bundle_path} is the bundle already "
                                                                 f"installed as {ref}; reusing it")
        for message in forced:
            state = state.with_event(EventKind.FORCED, ref, message)
        self._save(state.without_bad(ref) if forced else state)

    def _same_files(self, ref: VersionRef, file_list: FileList) -> bool:
        try:
            return (self.bundle_dir(ref) / FILE_LIST_NAME).read_bytes() == file_list.to_bytes()
        except OSError:
            return False

    def _check_space(self, declared_bytes: int) -> None:
        free = shutil.disk_usage(self.root).free
        needed = declared_bytes + self.free_space_margin
        if free < needed:
            raise InsufficientSpaceError(f"the bundle needs {declared_bytes} bytes plus a {self.free_space_margin} "
                                         f"byte margin, but {self.root} has only {free} bytes free; prune old "
                                         "versions or free disk space")

    # ---- deployment steps ----------------------------------------------------

    @_locked
    def set_candidate(self, ref: VersionRef) -> None:
        """Put an installed version on trial; it serves only after ``commit_candidate``."""
        state = self._state
        if state.candidate is not None:
            raise StoreError(f"{state.candidate} is already the candidate; commit or reject it first")
        if not self.version_dir(ref).is_dir():
            raise StoreError(f"{ref} is not installed; ingest its bundle first")
        if ref in state.bad:
            raise StoreError(f"{ref} was marked bad ({state.bad_reason(ref)}); publish a new version, or deploy its "
                             "bundle again with force set to retry it")
        if ref == state.active:
            raise StoreError(f"{ref} is already active")
        self._save(replace(state, candidate=ref).with_event(EventKind.CANDIDATE_SET, ref, f"{ref} on trial"))

    @_locked
    def set_stage(self, stage: DeploymentStage, message: str = "") -> None:
        """Record how far the current deployment got (shown in status, kept in history)."""
        message = one_line(message)  # it may quote a hostile bundle; status and ROS messages carry it
        state = replace(self._state, stage=stage, stage_message=message)
        self._save(state.with_event(EventKind.STAGE_CHANGED, state.candidate, f"{stage.value}: {message}"))

    @_locked
    def commit_candidate(self) -> VersionRef:
        """The candidate proved itself: it becomes active and the old active becomes previous."""
        state = self._state
        if state.candidate is None:
            raise StoreError("there is no candidate to commit; set_candidate first")
        ref = state.candidate
        state = replace(state, active=ref, previous=state.active or state.previous, candidate=None,
                        stage=DeploymentStage.IDLE, stage_message=f"committed {ref}")
        self._save(state.with_event(EventKind.COMMITTED, ref, f"{ref} active, previous {state.previous}"))
        self._prune()
        return ref

    @_locked
    def reject_candidate(self, reason: str, mark_bad: bool = True) -> None:
        """The candidate failed a gate; the active version keeps serving."""
        state = self._state
        if state.candidate is None:
            raise StoreError("there is no candidate to reject")
        ref = state.candidate
        state = replace(state, candidate=None, stage=DeploymentStage.FAILED, stage_message=f"{ref} rejected: {reason}")
        if mark_bad:
            state = state.with_bad(ref, reason)
        marked = " and marked bad" if mark_bad else ""
        self._save(state.with_event(EventKind.CANDIDATE_REJECTED, ref, f"rejected{marked}: {reason}"))

    @_locked
    def cancel_candidate(self, reason: str) -> None:
        """The caller stopped the deployment: the candidate is dropped, not marked bad, and can be tried again."""
        state = self._state
        if state.candidate is None:
            raise StoreError("there is no candidate to cancel")
        ref = state.candidate
        state = replace(state, candidate=None, stage=DeploymentStage.CANCELLED,
                        stage_message=f"{ref} cancelled: {reason}")
        self._save(state.with_event(EventKind.CANDIDATE_CANCELLED, ref, f"cancelled: {reason}"))

    @_locked
    def rollback(self, reason: str) -> VersionRef:
        """Serve the previous version again (active and previous swap); a pending candidate is dropped."""
        state = self._state
        if state.previous is None:
            raise StoreError("there is no previous version to roll back to")
        if state.candidate is not None:
            state = replace(state, candidate=None).with_event(
                EventKind.CANDIDATE_REJECTED, state.candidate, f"dropped by rollback: {reason}")
        restored = state.previous
        state = replace(state, active=restored, previous=state.active, stage=DeploymentStage.IDLE,
                        stage_message=f"rolled back to {restored}: {reason}")
        self._save(state.with_event(EventKind.ROLLED_BACK, restored, f"from {state.previous}: {reason}"))
        return restored

    # ---- internals -----------------------------------------------------------

    def _prune(self) -> None:
        """Keep what a slot names plus the ``keep_others`` best others: good before bad, then newest.

        A version marked bad (or whose install record is damaged) is kept only
        while there is room after every good one: it is evidence, not a
        rollback target.
        """
        named, bad = set(self._state.slots), set(self._state.bad)

        def worth(ref: VersionRef) -> tuple[bool, str]:
            installed_at = self._installed_at(ref)
            return ref not in bad and installed_at != "", installed_at

        others = sorted((ref for ref in self._refs_on_disk() if ref not in named), key=worth, reverse=True)
        for ref in others[self.keep_others:]:
            # Moving into staging first makes the removal atomic: a crash leaves it to the next wipe.
            trash = self.root / STAGING_DIR / f"pruned-{uuid.uuid4().hex}"
            os.rename(self.version_dir(ref), trash)
            self._bundles.pop(ref, None)
            fsync_dir(self.version_dir(ref).parent)
            self._record(EventKind.PRUNED, ref, f"removed to keep {self.keep_others} unused versions")
            _wipe(trash)
            trash.rmdir()

    @_locked
    def _record(self, kind: EventKind, ref: VersionRef | None, message: str) -> None:
        self._save(self._state.with_event(kind, ref, message))

    def _save(self, state: StoreState) -> None:
        write_atomic(self.root / STATE_NAME, state.to_bytes())
        self._state = state


def _wipe(directory: Path, keep: str = "") -> None:
    """Remove everything inside ``directory`` (read-only bundle files included) but the entry ``keep``."""
    for entry in directory.iterdir():
        if keep and entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
