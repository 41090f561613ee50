"""Which bundle of a version the store has seen it takes again, and the advice when it does not."""
from __future__ import annotations

from dataclasses import replace

import pytest

from robot_model_deployer.bundle.errors import VersionConflictError
from robot_model_deployer.store.admission import check_installed_copy, check_new_version
from robot_model_deployer.store.state import StoreState, VersionRef

V1, V2, V3, V4 = (VersionRef.parse(f"det@{v}") for v in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"))
STATE = StoreState(active=V3, previous=V2, newest=(V4,)).with_bad(V4, "NaN in probation")


@pytest.mark.parametrize("ref, force, refusal", [
    (V3, True, "already installed and active; there is nothing to deploy"),
    (V2, True, "already installed as the previous version; use the rollback service"),
    (V4, False, "was marked bad (NaN in probation); publish a new version, or deploy this bundle again with force"),
    (V1, False, "was older than det 4.0.0; publish a new version, or deploy this bundle again with force"),
])
def test_installed_copies_that_need_another_way_are_refused_with_it(ref: VersionRef, force: bool,
                                                                    refusal: str) -> None:
    with pytest.raises(VersionConflictError) as refused:
        check_installed_copy(STATE, ref, same_files=True, force=force)
    assert refusal in str(refused.value) and "reference" not in str(refused.value)


def test_the_candidate_is_not_installed_twice() -> None:
    with pytest.raises(VersionConflictError, match="on trial as the candidate"):
        check_installed_copy(replace(STATE, candidate=V1), V1, same_files=True, force=True)


def test_force_admits_a_bad_or_older_copy_and_says_what_to_record() -> None:
    assert check_installed_copy(STATE, V4, same_files=True, force=True) == [
        "det@4.0.0 was marked bad (NaN in probation); deployed again because force was set"]
    assert check_installed_copy(STATE, V1, same_files=True, force=True) == [
        "det@1.0.0 was older than det 4.0.0; deployed again because force was set"]


def test_the_newest_good_copy_is_taken_again_without_force() -> None:
    """A deployment that was cancelled, or whose swap failed, is simply tried again."""
    assert check_installed_copy(STATE.without_bad(V4), V4, same_files=True, force=False) == []


def test_other_contents_under_an_installed_version_are_refused_even_with_force() -> None:
    with pytest.raises(VersionConflictError, match="other contents, and installed versions are immutable; bump"):
        check_installed_copy(STATE, V4, same_files=False, force=True)


def test_new_versions_pass_and_old_ones_need_force() -> None:
    assert check_new_version(STATE, VersionRef.parse("det@5.0.0"), force=False) == []
    assert check_new_version(StoreState(), V1, force=False) == []
    with pytest.raises(VersionConflictError, match="is a downgrade: the store already had det 4.0.0"):
        check_new_version(STATE, V1, force=False)
    assert "a replay of the same version" in check_new_version(STATE, V4, force=True)[0]
