"""Kill -9 at write steps of ingest, state updates, commit, pruning and rollback; the store must recover.

A driver process (crash_driver.py) runs the deployment scenario and
SIGKILLs itself at the Nth write step. After each kill the store is opened
as a restarted manager would open it and checked: state.json parses,
staging is empty, no candidate survives, every slot names a complete,
signature-valid version, and the committed model answers. Then the scenario
is run again (sometimes killed again on the way) and must converge on the
same final slots as an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bundle_helpers import Keys, make_keys, signed_tar
from robot_model_deployer.bundle.verify import unpack_bundle
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.store.durable import TEMP_SUFFIX
from robot_model_deployer.store.model_store import STAGING_DIR, STATE_NAME, ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind, VersionRef
from robot_model_deployer.testing.models import solid_image

DRIVER = Path(__file__).with_name("crash_driver.py")
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
FINAL_ACTIVE = VersionRef.parse("colour_classifier@1.1.0")  # after the rollback drill
FINAL_PREVIOUS = VersionRef.parse("colour_classifier@1.3.0")
FINAL_BAD = (VersionRef.parse("colour_classifier@1.2.0"),)
EVERY_NTH_STEP = 9
SECOND_KILLS = (3, 20)
# Each run mostly waits on fsync, so more workers than cores still pay off.
WORKERS = 8


@dataclass(frozen=True)
class World:
    keys: Keys
    bundles: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("crash")
    keys = make_keys(root / "keys")
    (root / "bundles").mkdir()
    for version in VERSIONS:
        signed_tar(root / "bundles" / f"{version}.tar", keys.private, version)
    return World(keys, root / "bundles")


def _drive(world: World, store: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(DRIVER), str(store), str(world.bundles),
                           str(world.keys.trust_dir), str(kill_at)],
                          capture_output=True, text=True, timeout=60, env=env)


def _check_consistent(world: World, root: Path) -> ModelStore:
    """What a restarted manager relies on."""
    state_path = root / STATE_NAME
    before = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else None
    store = ModelStore.open(root, keep_others=1)
    json.loads(state_path.read_text(encoding="utf-8"))
    if before is not None and before["candidate"] is not None:
        # The crash hit an uncommitted candidate: rolled back, recorded, the committed model still active.
        candidate = VersionRef.parse(before["candidate"])
        assert any(e.kind is EventKind.RECOVERED and e.ref == candidate for e in store.state.history)
        assert str(store.state.active) == str(before["active"])
    assert list((root / STAGING_DIR).iterdir()) == []
    assert not (root / (STATE_NAME + TEMP_SUFFIX)).exists()
    state = store.state
    assert state.candidate is None
    assert state.stage in (DeploymentStage.IDLE, DeploymentStage.FAILED)
    for version in store.list_versions():
        # Complete and untouched: the stored bundle still verifies against its signature.
        unpack_bundle(version.bundle_dir, dest=None, trust=world.keys.trust, allow_unsigned=False)
        assert version.derived_dir.is_dir()
    installed = {v.ref for v in store.list_versions()}
    assert set(state.slots) <= installed
    if state.active is not None:
        chosen = {e.ref for e in state.history if e.kind in (EventKind.COMMITTED, EventKind.ROLLED_BACK)}
        assert state.active in chosen
        engine = InferenceEngine.from_bundle(store.installed(state.active).bundle, warmup_runs=1)
        assert engine.infer(solid_image("blue")).labels[0] == "blue"
    return store


def _check_final(world: World, root: Path) -> None:
    state = _check_consistent(world, root).state
    assert (state.active, state.previous, state.bad) == (FINAL_ACTIVE, FINAL_PREVIOUS, FINAL_BAD)


def _crash_then_finish(world: World, root: Path, kills: tuple[int, ...]) -> None:
    for attempt, kill_at in enumerate(kills):
        result = _drive(world, root, kill_at)
        if result.returncode == 0 and attempt > 0:
            break  # a continuation finished before reaching this step
        assert result.returncode == -signal.SIGKILL, result.stderr
        _check_consistent(world, root)
    result = _drive(world, root, 0)
    assert result.returncode == 0, result.stderr
    _check_final(world, root)


def _kill_points(trace: list[tuple[int, str, str]]) -> list[int]:
    """The first step of every (phase, call) pair, the last step of every phase, and every Nth step."""
    first: dict[tuple[str, str], int] = {}
    last: dict[str, int] = {}
    for number, call, phase in trace:
        first.setdefault((phase, call), number)
        last[phase] = number
    every_nth = set(range(1, len(trace) + 1, EVERY_NTH_STEP))
    return sorted(set(first.values()) | set(last.values()) | every_nth)


def test_store_survives_sigkill_at_every_kind_of_write_step(world: World, tmp_path: Path) -> None:
    dry = _drive(world, tmp_path / "dry-run", 0)
    assert dry.returncode == 0, dry.stderr
    trace = [tuple(json.loads(line)) for line in dry.stdout.splitlines()]
    _check_final(world, tmp_path / "dry-run")
    phases = {phase for _, _, phase in trace}
    assert {"ingest", "set_candidate", "set_stage", "commit", "reject", "rollback", "open"} <= phases

    points = _kill_points(trace)  # type: ignore[arg-type]
    assert len(points) >= 8
    jobs = [(point,) for point in points]
    # Killed again while recovering and continuing: crashes come in bursts on a failing robot.
    jobs += [(point, second) for point in points[::8] for second in SECOND_KILLS]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(_crash_then_finish, world, tmp_path / f"store-{i}", kills)
                   for i, kills in enumerate(jobs)]
        for future in futures:
            future.result()
