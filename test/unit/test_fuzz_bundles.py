"""A short fuzz run on every commit: mutated signed bundles are refused with a BundleError or accepted intact.

The mutators (robot_model_deployer/testing/fuzz.py) reach header fields, pax
records, member types and order, sizes, truncation, trailing data, the JSON
and YAML metadata, gzip framing and hostile names. ``bench/bench_hostile.py
--fuzz N`` runs the same harness for as long as you like.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bundle_helpers import bundle_files, make_keys, signed_tar
from robot_model_deployer.testing.fuzz import ALLOWED, FuzzTarget, inspect_outcome, mutate, verify_outcome

CASE_SECONDS = 1.0
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, FuzzTarget]:
    root = tmp_path_factory.mktemp("fuzz")
    keys = make_keys(root)
    good = signed_tar(root / "good.tar", keys.private).read_bytes()
    scratch = root / "scratch"
    scratch.mkdir()
    return good, FuzzTarget(keys.trust, bundle_files(), scratch)


def test_the_unmutated_bundle_is_accepted_intact(target: tuple[bytes, FuzzTarget]) -> None:
    good, fuzz_target = target
    assert verify_outcome(good, fuzz_target) == "accepted intact"
    assert inspect_outcome(good, fuzz_target) == "accepted intact"


def test_a_changed_file_would_be_caught_by_the_oracle(target: tuple[bytes, FuzzTarget], tmp_path: Path) -> None:
    good, fuzz_target = target
    changed = FuzzTarget(fuzz_target.trust, {**fuzz_target.original, "labels.txt": b"other\n"}, tmp_path)
    assert verify_outcome(good, changed) == "ACCEPTED CHANGED FILES"


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_bundles_are_refused_or_accepted_intact_quickly(target: tuple[bytes, FuzzTarget], seed: int) -> None:
    good, fuzz_target = target
    data, how = mutate(good, random.Random(seed))
    for check in (verify_outcome, inspect_outcome):
        started = time.perf_counter()
        outcome = check(data, fuzz_target)
        took = time.perf_counter() - started
        assert outcome in ALLOWED, f"{check.__name__} after {how}: {outcome}"
        assert took < CASE_SECONDS, f"{check.__name__} after {how} took {took:.2f} s"
