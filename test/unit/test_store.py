"""The model store: slots, deployment steps, recovery, retention, and what ingest accepts."""
from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bundle_helpers import Keys, bundle_directory, bundle_files, make_keys, signed_tar, standard_members, write_tar
from robot_model_deployer.bundle.errors import (InsufficientSpaceError, IntegrityError, SignatureError,
                                                UnsafeArchiveError, VersionConflictError)
from robot_model_deployer.bundle.filelist import file_sha256
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.store import model_store
from robot_model_deployer.store.model_store import STAGING_DIR, STATE_NAME, ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind, StoreError, VersionRef
from robot_model_deployer.testing.models import colour_classifier


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def _deploy(store: ModelStore, bundle: Path, keys: Keys) -> VersionRef:
    ref = store.ingest(bundle, trust=keys.trust, model_check=check_model).ref
    store.set_candidate(ref)
    store.commit_candidate()
    return ref


def _ref(version: str) -> VersionRef:
    return VersionRef.parse(f"colour_classifier@{version}")


def test_first_deployment_goes_through_candidate_and_commit(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(signed_tar(tmp_path / "b.tar", keys.private), trust=keys.trust,
                             model_check=check_model)
    assert installed.ref == _ref("1.0.0") and installed.key_id is not None and not installed.forced
    assert store.state.active is None and store.state.candidate is None  # ingest never changes a slot

    store.set_candidate(installed.ref)
    store.set_stage(DeploymentStage.SHADOW, "comparing on 60 frames")
    assert store.state.candidate == installed.ref and store.state.stage is DeploymentStage.SHADOW
    assert store.commit_candidate() == installed.ref

    state = ModelStore.open(store.root).state
    assert (state.active, state.previous, state.candidate) == (installed.ref, None, None)
    assert state.stage is DeploymentStage.IDLE
    assert [e.kind for e in state.history] == [EventKind.INSTALLED, EventKind.CANDIDATE_SET,
                                               EventKind.STAGE_CHANGED, EventKind.COMMITTED]
    assert store.installed(installed.ref).bundle.labels == ("red", "green", "blue")


def test_an_installed_version_is_read_once_per_process_and_carries_its_listed_model_hash(
        tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    load_bundle_dir = model_store.load_bundle_dir
    monkeypatch.setattr(model_store, "load_bundle_dir", lambda path: reads.append(Path(path)) or load_bundle_dir(path))
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(signed_tar(tmp_path / "b.tar", keys.private), trust=keys.trust,
                             model_check=check_model)
    assert store.installed(installed.ref).bundle == installed.bundle == store.list_versions()[0].bundle
    assert installed.bundle.root == store.bundle_dir(installed.ref)
    assert len(reads) == 1
    assert installed.model_sha256 == file_sha256(installed.bundle.model_path)

    reopened = ModelStore.open(store.root)  # as after a restart
    assert reopened.installed(installed.ref).bundle == installed.bundle
    assert reopened.list_versions()[0].model_sha256 == installed.model_sha256
    assert len(reads) == 2


def test_commit_makes_old_active_previous_and_rollback_swaps_them(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    second = _deploy(store, signed_tar(tmp_path / "2.tar", keys.private, "1.1.0"), keys)
    assert (store.state.active, store.state.previous) == (second, first)

    assert store.rollback("latency p99 doubled") == first
    state = ModelStore.open(store.root).state
    assert (state.active, state.previous) == (first, second)
    assert state.history[-1].kind is EventKind.ROLLED_BACK and "latency p99 doubled" in state.history[-1].message


def test_rejected_candidate_is_marked_bad_and_active_keeps_serving(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    candidate = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                             model_check=check_model).ref
    store.set_candidate(candidate)
    store.reject_candidate("top-1 agreement 0.71 < 0.99")

    state = store.state
    assert (state.active, state.candidate, state.bad) == (first, None, (candidate,))
    assert state.stage is DeploymentStage.FAILED and "0.71" in state.stage_message
    with pytest.raises(StoreError, match="marked bad"):
        store.set_candidate(candidate)


def test_reject_without_marking_bad_allows_a_retry(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    candidate = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                             model_check=check_model).ref
    store.set_candidate(candidate)
    store.reject_candidate("operator cancelled", mark_bad=False)
    store.set_candidate(candidate)
    assert store.state.candidate == candidate


def test_rollback_drops_a_pending_candidate(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    second = _deploy(store, signed_tar(tmp_path / "2.tar", keys.private, "1.1.0"), keys)
    third = store.ingest(signed_tar(tmp_path / "3.tar", keys.private, "1.2.0"), trust=keys.trust,
                         model_check=check_model).ref
    store.set_candidate(third)
    assert store.rollback("operator asked") == first
    assert (store.state.active, store.state.previous, store.state.candidate) == (first, second, None)


def test_misuse_is_refused_with_a_reason(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    with pytest.raises(StoreError, match="no candidate to commit"):
        store.commit_candidate()
    with pytest.raises(StoreError, match="no candidate to reject"):
        store.reject_candidate("x")
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("x")
    with pytest.raises(StoreError, match="not installed"):
        store.set_candidate(_ref("3.0.0"))
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    with pytest.raises(StoreError, match="already active"):
        store.set_candidate(first)
    second = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                          model_check=check_model).ref
    third = store.ingest(signed_tar(tmp_path / "3.tar", keys.private, "3.0.0"), trust=keys.trust,
                         model_check=check_model).ref
    store.set_candidate(second)
    with pytest.raises(StoreError, match="already the candidate"):
        store.set_candidate(third)
    with pytest.raises(StoreError, match="not installed"):
        store.installed(_ref("9.0.0"))


def test_open_rolls_back_an_uncommitted_candidate_and_wipes_staging(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    candidate = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                             model_check=check_model).ref
    store.set_candidate(candidate)
    store.set_stage(DeploymentStage.PROBATION, "watching health")
    (tmp_path / "store" / STAGING_DIR / "half-extracted").mkdir()
    (tmp_path / "store" / STAGING_DIR / "half-extracted" / "model.onnx").write_bytes(b"\0" * 100)

    reopened = ModelStore.open(tmp_path / "store")  # as after a crash: the old object is simply dropped

    state = reopened.state
    assert (state.active, state.candidate, state.stage) == (first, None, DeploymentStage.IDLE)
    assert state.history[-1].kind is EventKind.RECOVERED
    assert "not committed" in state.history[-1].message and "probation" in state.history[-1].message
    assert candidate not in state.bad  # a crash is not the model's fault
    assert list((tmp_path / "store" / STAGING_DIR).iterdir()) == []
    reopened.set_candidate(candidate)  # and it can be tried again


def test_open_clears_a_slot_whose_version_vanished(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    second = _deploy(store, signed_tar(tmp_path / "2.tar", keys.private, "1.1.0"), keys)
    os.rename(store.version_dir(first), tmp_path / "moved-away")
    state = ModelStore.open(store.root).state
    assert (state.active, state.previous) == (second, None)
    assert "not on disk" in state.history[-1].message


def test_damaged_state_file_is_reported_not_replaced(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ModelStore.open(root)
    (root / STATE_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match="damaged .* move it aside"):
        ModelStore.open(root)
    assert (root / STATE_NAME).read_text(encoding="utf-8") == "{not json"


def test_retention_keeps_slots_and_n_others(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store", keep_others=1)
    refs = [_deploy(store, signed_tar(tmp_path / f"{v}.tar", keys.private, v), keys)
            for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0")]
    installed = [v.ref for v in store.list_versions()]
    assert installed == refs[2:]  # active 1.4.0, previous 1.3.0, and the newest other, 1.2.0
    assert {e.ref for e in store.state.history if e.kind is EventKind.PRUNED} == set(refs[:2])
    # Pruned versions stay "seen": installing one again is a downgrade.
    with pytest.raises(VersionConflictError, match="downgrade"):
        store.ingest(signed_tar(tmp_path / "again.tar", keys.private, "1.0.0"), trust=keys.trust,
                     model_check=check_model)


def test_retention_never_deletes_what_a_slot_names(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store", keep_others=0)
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    second = _deploy(store, signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), keys)
    store.rollback("regression")
    third = _deploy(store, signed_tar(tmp_path / "3.tar", keys.private, "3.0.0"), keys)
    assert (store.state.active, store.state.previous) == (third, first)
    assert [v.ref for v in store.list_versions()] == [first, third]
    assert not store.version_dir(second).exists()


def test_force_installs_a_downgrade_and_records_it(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), keys)
    installed = store.ingest(signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), trust=keys.trust,
                             model_check=check_model, force=True)
    assert installed.forced
    kinds = [e.kind for e in store.state.history[-2:]]
    assert kinds == [EventKind.INSTALLED, EventKind.FORCED]
    assert "downgrade" in store.state.history[-1].message and "force" in store.state.history[-1].message
    assert [v.forced for v in store.list_versions()] == [True, False]


def test_unsigned_bundle_only_when_allowed_and_with_a_loud_warning(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    bundle = signed_tar(tmp_path / "u.tar", None)
    with pytest.raises(SignatureError, match="not signed"):
        store.ingest(bundle, trust=keys.trust, model_check=check_model)
    installed = store.ingest(bundle, trust=keys.trust, model_check=check_model, allow_unsigned=True)
    assert installed.key_id is None
    assert len(installed.warnings) == 1 and "NOT SIGNED" in installed.warnings[0]
    assert store.list_versions()[0].warnings == installed.warnings
    assert "UNSIGNED" in store.state.history[-1].message


def test_unpacked_directory_is_held_to_the_same_rules(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    signed = bundle_directory(tmp_path / "signed", keys.private, "1.0.0")
    assert store.ingest(signed, trust=keys.trust, model_check=check_model).key_id is not None

    unsigned = bundle_directory(tmp_path / "unsigned", None, "1.1.0")
    with pytest.raises(SignatureError, match="not signed"):
        store.ingest(unsigned, trust=keys.trust, model_check=check_model)
    assert store.ingest(unsigned, trust=keys.trust, model_check=check_model, allow_unsigned=True).key_id is None

    extra = bundle_directory(tmp_path / "extra", keys.private, "1.2.0")
    (extra / "notes.txt").write_text("added after signing", encoding="utf-8")
    with pytest.raises(IntegrityError, match="notes.txt is in .* but not listed"):
        store.ingest(extra, trust=keys.trust, model_check=check_model)

    linked = bundle_directory(tmp_path / "linked", keys.private, "1.3.0")
    os.unlink(linked / "labels.txt")
    os.symlink("/etc/passwd", linked / "labels.txt")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        store.ingest(linked, trust=keys.trust, model_check=check_model)

    tampered = bundle_directory(tmp_path / "tampered", keys.private, "1.4.0")
    (tampered / "labels.txt").write_bytes(b"red\ngreen\nblau\n")
    with pytest.raises(IntegrityError, match="labels.txt does not match files.json"):
        store.ingest(tampered, trust=keys.trust, model_check=check_model)
    assert [str(v.ref.version) for v in store.list_versions()] == ["1.0.0", "1.1.0"]


def test_gzip_bundle_is_accepted(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    bundle = write_tar(tmp_path / "b.tar.gz", standard_members(bundle_files("1.0.0"), keys.private), compress=True)
    assert store.ingest(bundle, trust=keys.trust, model_check=check_model).ref == _ref("1.0.0")


def test_free_space_is_checked_before_staging(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store", free_space_margin=1 << 60)
    with pytest.raises(InsufficientSpaceError, match="free"):
        store.ingest(signed_tar(tmp_path / "b.tar", keys.private), trust=keys.trust, model_check=check_model)
    assert store.list_versions() == []
    assert store.state.history[-1].kind is EventKind.REJECTED


def test_installed_bundle_is_read_only_and_derived_is_writable(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(signed_tar(tmp_path / "b.tar", keys.private), trust=keys.trust,
                             model_check=check_model)
    for name in ("manifest.yaml", "model.onnx", "labels.txt", "files.json", "signature.json"):
        assert stat.S_IMODE((installed.bundle_dir / name).stat().st_mode) == 0o444
    (store.derived_dir(installed.ref) / "model.int8.onnx").write_bytes(b"compiled")
    record = json.loads((installed.root / "install.json").read_text(encoding="utf-8"))
    assert record["key_id"] == installed.key_id and record["version"] == "1.0.0"


def test_progress_reports_fractions_up_to_one(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    calls: list[tuple[str, float]] = []
    store.ingest(signed_tar(tmp_path / "b.tar", keys.private), trust=keys.trust, model_check=check_model,
                 progress=lambda name, fraction: calls.append((name, fraction)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == 1.0
    assert {name for name, _ in calls} == {"labels.txt", "model.onnx"}


def test_state_file_is_plain_json_and_no_temp_file_is_left(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "b.tar", keys.private), keys)
    body = json.loads((store.root / STATE_NAME).read_text(encoding="utf-8"))
    assert body["active"] == "colour_classifier@1.0.0" and body["stage"] == "idle"
    assert sorted(p.name for p in store.root.iterdir()) == [STAGING_DIR, STATE_NAME, "versions"]


def test_state_changes_from_several_threads_are_not_lost(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    bundle = signed_tar(tmp_path / "2.tar", keys.private, "2.0.0")

    def report(worker: int) -> None:
        for i in range(25):
            store.set_stage(DeploymentStage.SHADOW, f"worker {worker} frame {i}")

    def ingest() -> object:
        try:
            return store.ingest(bundle, trust=keys.trust, model_check=check_model).ref
        except VersionConflictError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        reporters = [pool.submit(report, worker) for worker in range(2)]
        ingests = [pool.submit(ingest) for _ in range(2)]
        for future in reporters:
            future.result()
        outcomes = [future.result() for future in ingests]
    assert sum(1 for e in store.state.history if e.kind is EventKind.STAGE_CHANGED) == 50
    assert sorted(type(o).__name__ for o in outcomes) == ["VersionConflictError", "VersionRef"]
    written = ModelStore.open(store.root).state.history  # what reached the disk
    assert written[:len(store.state.history)] == store.state.history


def test_a_version_reference_cannot_name_a_path() -> None:
    for text in ("../../etc@1.0.0", "a/b@1.0.0", "Model@1.0.0", "@1.0.0", "name@1.0"):
        with pytest.raises(ValueError):
            VersionRef.parse(text)
    assert str(VersionRef.parse("colour_classifier@2.0.0-rc.1")) == "colour_classifier@2.0.0-rc.1"


def test_pruning_copes_with_a_damaged_unused_version(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store", keep_others=1)
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    damaged = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                           model_check=check_model).ref
    kept = store.ingest(signed_tar(tmp_path / "3.tar", keys.private, "3.0.0"), trust=keys.trust,
                        model_check=check_model).ref
    (store.version_dir(damaged) / "install.json").write_text("{", encoding="utf-8")
    with pytest.raises(StoreError, match="2.0.0 is damaged"):
        store.list_versions()
    _deploy(store, signed_tar(tmp_path / "4.tar", keys.private, "4.0.0"), keys)
    assert [v.ref for v in store.list_versions()] == [_ref("1.0.0"), kept, _ref("4.0.0")]


def _reject(store: ModelStore, bundle: Path, keys: Keys, reason: str) -> VersionRef:
    ref = store.ingest(bundle, trust=keys.trust, model_check=check_model).ref
    store.set_candidate(ref)
    store.reject_candidate(reason)
    return ref


def test_retention_keeps_good_versions_before_bad_ones(tmp_path: Path, keys: Keys) -> None:
    """As reported: 1.0.0 (good) was pruned while two newer bad versions were kept."""
    store = ModelStore.open(tmp_path / "store", keep_others=2)
    good = [_deploy(store, signed_tar(tmp_path / f"{v}.tar", keys.private, v), keys) for v in ("1.0.0", "2.0.0")]
    bad = [_reject(store, signed_tar(tmp_path / f"{v}.tar", keys.private, v), keys, "probation: NaN")
           for v in ("2.1.0", "2.2.0")]
    third = _deploy(store, signed_tar(tmp_path / "3.tar", keys.private, "3.0.0"), keys)
    assert (store.state.active, store.state.previous) == (third, good[1])
    fourth = _deploy(store, signed_tar(tmp_path / "4.tar", keys.private, "4.0.0"), keys)

    # Slots: 4.0.0 and 3.0.0. Others by worth: 2.0.0 and 1.0.0 (good) before 2.2.0 and 2.1.0 (bad).
    assert [v.ref for v in store.list_versions()] == [good[0], good[1], third, fourth]
    assert {e.ref for e in store.state.history if e.kind is EventKind.PRUNED} == set(bad)
    assert store.state.bad == tuple(bad)  # pruned versions stay known as bad: a replay still needs force


def test_a_bad_version_is_kept_while_there_is_room_after_the_good_ones(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store", keep_others=2)
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    bad = _reject(store, signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), keys, "latency")
    second = _deploy(store, signed_tar(tmp_path / "3.tar", keys.private, "3.0.0"), keys)
    third = _deploy(store, signed_tar(tmp_path / "4.tar", keys.private, "4.0.0"), keys)
    assert [v.ref for v in store.list_versions()] == [first, bad, second, third]


def test_bad_marks_keep_their_reason_across_a_restart(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    bad = _reject(store, signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), keys,
                  "only 6 results for 8 camera frames (75%)")
    reopened = ModelStore.open(store.root).state
    assert reopened.bad == (bad,) and reopened.bad_reason(bad) == "only 6 results for 8 camera frames (75%)"
    assert reopened.bad_reason(_ref("1.0.0")) is None
    body = json.loads((store.root / STATE_NAME).read_text(encoding="utf-8"))
    assert body["bad"] == [{"ref": "colour_classifier@2.0.0", "reason": "only 6 results for 8 camera frames (75%)"}]
    with pytest.raises(StoreError, match=r"marked bad \(only 6 results .*\); publish a new version, or deploy its "
                                         "bundle again with force set"):
        store.set_candidate(bad)


def test_a_state_file_from_before_bad_reasons_still_opens(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    bad = _reject(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys, "agreement 0%")
    body = json.loads((store.root / STATE_NAME).read_text(encoding="utf-8"))
    body["bad"] = [str(bad)]
    (store.root / STATE_NAME).write_text(json.dumps(body), encoding="utf-8")
    state = ModelStore.open(store.root).state
    assert state.bad == (bad,) and "reason not recorded" in state.bad_reason(bad)


def test_cancel_drops_the_candidate_without_marking_it_bad_and_says_cancelled(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    first = _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    candidate = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                             model_check=check_model).ref
    store.set_candidate(candidate)
    store.cancel_candidate("cancelled by the caller")
    state = store.state
    assert (state.active, state.candidate, state.bad, state.stage) == (first, None, (), DeploymentStage.CANCELLED)
    assert state.history[-1].kind is EventKind.CANDIDATE_CANCELLED and "cancelled" in state.stage_message
    with pytest.raises(StoreError, match="no candidate to cancel"):
        store.cancel_candidate("again")
    store.set_candidate(candidate)  # it can be tried again


def test_the_bundle_of_a_bad_version_is_reused_only_with_force_and_that_is_recorded(tmp_path: Path,
                                                                                   keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    bundle = signed_tar(tmp_path / "2.tar", keys.private, "2.0.0")
    bad = _reject(store, bundle, keys, "latency p99 40 ms")
    with pytest.raises(VersionConflictError, match=r"was marked bad \(latency p99 40 ms\); publish a new version, "
                                                   "or deploy this bundle again with force set"):
        store.ingest(bundle, trust=keys.trust, model_check=check_model)
    assert store.state.bad == (bad,)

    again = store.ingest(bundle, trust=keys.trust, model_check=check_model, force=True)
    assert again.ref == bad and again.forced
    assert store.state.bad == ()
    assert [e.kind for e in store.state.history[-2:]] == [EventKind.INSTALLED, EventKind.FORCED]
    assert "marked bad (latency p99 40 ms)" in store.state.history[-1].message
    store.set_candidate(bad)


def test_an_installed_version_with_other_contents_is_refused_without_talk_of_references(tmp_path: Path,
                                                                                       keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    _deploy(store, signed_tar(tmp_path / "1.tar", keys.private, "1.0.0"), keys)
    installed = store.ingest(signed_tar(tmp_path / "2.tar", keys.private, "2.0.0"), trust=keys.trust,
                             model_check=check_model)
    retrained = signed_tar(tmp_path / "2-retrained.tar", keys.private, "2.0.0",
                           model=colour_classifier(scale=9.0).SerializeToString())
    for force in (False, True):
        with pytest.raises(VersionConflictError) as refused:
            store.ingest(retrained, trust=keys.trust, model_check=check_model, force=force)
        assert "already installed with other contents" in str(refused.value)
        assert "bump the version" in str(refused.value) and "reference" not in str(refused.value)
    assert store.installed(installed.ref).model_sha256 == installed.model_sha256
