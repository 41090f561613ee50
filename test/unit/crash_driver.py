"""Crash-test driver: runs a deployment scenario on a store and SIGKILLs itself at the Nth write step.

    python crash_driver.py STORE BUNDLES TRUST KILL_AT

Write steps are the file-system calls the store makes to change the disk
(open and os.open for writing, fsync, rename, replace, mkdir, unlink,
rmdir); they
are wrapped here, in the driver, so product code carries no test hooks.
KILL_AT 0 runs to the end and prints every write step as JSON lines
``[n, call, phase]``. The scenario picks up wherever a killed run left
off, so running it again always converges on the same final slots.
"""
from __future__ import annotations

import builtins
import json
import os
import signal
import sys
from pathlib import Path

from robot_model_deployer.bundle.signing import TrustStore
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind, VersionRef

NAME = "colour_classifier"
PLAN = (("1.0.0", "commit"), ("1.1.0", "commit"), ("1.2.0", "reject"), ("1.3.0", "commit"))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT

trace: list[tuple[int, str, str]] = []
phase = ["start"]
kill_at = int(sys.argv[4])


def counted(name, original, is_write=lambda *args, **kwargs: True):
    def wrapper(*args, **kwargs):
        if is_write(*args, **kwargs):
            trace.append((len(trace) + 1, name, phase[0]))
            if len(trace) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper


def _opens_for_writing(file, mode="r", *args, **kwargs) -> bool:
    return any(flag in mode for flag in "wax+")


def install_kill_switch() -> None:
    builtins.open = counted("open", builtins.open, _opens_for_writing)
    os.open = counted("open", os.open, lambda path, flags, *args, **kwargs: bool(flags & WRITE_FLAGS))
    for name in ("fsync", "replace", "rename", "mkdir", "unlink", "rmdir"):
        setattr(os, name, counted(name, getattr(os, name)))


def step(name: str):
    phase[0] = name


def scenario(root: Path, bundles: Path, trust: TrustStore) -> None:
    step("open")
    store = ModelStore.open(root, keep_others=1)
    for version, outcome in PLAN:
        ref = VersionRef.parse(f"{NAME}@{version}")
        history = store.state.history
        if any(e.ref == ref and e.kind in (EventKind.COMMITTED, EventKind.CANDIDATE_REJECTED) for e in history):
            continue
        if not store.version_dir(ref).exists():
            step("ingest")
            store.ingest(bundles / f"{version}.tar", trust=trust, model_check=check_model)
        step("set_candidate")
        store.set_candidate(ref)
        step("set_stage")
        store.set_stage(DeploymentStage.SHADOW, "shadow run")
        store.set_stage(DeploymentStage.PROBATION, "health watch")
        if outcome == "commit":
            step("commit")
            store.commit_candidate()
        else:
            step("reject")
            store.reject_candidate("probation failed")
    if not any(e.kind is EventKind.ROLLED_BACK for e in store.state.history):
        step("rollback")
        store.rollback("rollback drill")
    step("done")


if __name__ == "__main__":
    trust_store = TrustStore.load(Path(sys.argv[3]))
    install_kill_switch()
    scenario(Path(sys.argv[1]), Path(sys.argv[2]), trust_store)
    if kill_at == 0:
        for line in trace:
            print(json.dumps(line))
