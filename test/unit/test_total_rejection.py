"""Every failure ends as a recorded decision: ingest refuses with a BundleError, the flow returns an outcome.

Failures are injected where the real code would meet them (a full disk, a
name too long for the file system, a parser's recursion limit, a bug), and
each must leave one clear, printable reason, a ``rejected`` event, unchanged
slots and nothing written outside staging.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Callable

import pytest

from bundle_helpers import Keys, make_keys, signed_tar
from robot_model_deployer.bundle import extract, verify
from robot_model_deployer.bundle.errors import (BundleError, BundleReadError, InsufficientSpaceError,
                                                UnsafeArchiveError)
from robot_model_deployer.bundle.extract import inspect_bundle
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.store import model_store
from robot_model_deployer.store.model_store import STAGING_DIR, ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind
from test_flow import V1, Rig, assert_v1_still_serves, deployed_v1, rig  # noqa: F401 (rig is a fixture)

HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07\u202e\ud800" + "x" * 5000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def _raiser(exc: BaseException) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc
    return fail


# Where ingest meets each failure: (module, attribute replaced, exception, BundleError class, words in the reason)
INJECTED = {
    "disk full while writing a file": (extract, "copy_checked", OSError(errno.ENOSPC, "No space left on device"),
                                       InsufficientSpaceError, "disk filled up"),
    "name too long for the file system": (extract, "copy_checked", OSError(errno.ENAMETOOLONG, "File name too long"),
                                          UnsafeArchiveError, "name too long"),
    "file exists": (extract, "copy_checked", FileExistsError(errno.EEXIST, "File exists"), BundleReadError, "EEXIST"),
    "is a directory": (extract, "copy_checked", IsADirectoryError(errno.EISDIR, "Is a directory"), BundleReadError,
                       "EISDIR"),
    "disk full while syncing": (model_store, "fsync_tree", OSError(errno.ENOSPC, "No space left on device"),
                                InsufficientSpaceError, "disk filled up"),
    "recursion limit in a parser": (extract, "parse_manifest", RecursionError("maximum recursion depth exceeded"),
                                    BundleReadError, "too deeply nested"),
    "memory error": (extract, "parse_manifest", MemoryError(), BundleReadError, "MemoryError"),
    "index error": (extract, "parse_manifest", IndexError("list index out of range"), BundleReadError, "IndexError"),
    "unicode error": (extract, "copy_checked", UnicodeEncodeError("utf-8", "\udce9", 0, 1, "surrogates not allowed"),
                      BundleReadError, "UnicodeEncodeError"),
    "value error with hostile text": (extract, "parse_manifest", ValueError(HOSTILE_TEXT), BundleReadError,
                                      "ValueError"),
    "model check bug": (None, "model_check", ZeroDivisionError("division by zero"), BundleReadError,
                        "ZeroDivisionError"),
}


@pytest.mark.parametrize("case", INJECTED.values(), ids=INJECTED.keys())
def test_any_failure_at_ingest_is_a_recorded_bundle_error(case, tmp_path: Path, keys: Keys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    module, attribute, exc, error, words = case
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(signed_tar(tmp_path / "v1.tar", keys.private, "1.0.0"), trust=keys.trust,
                             model_check=check_model)
    store.set_candidate(installed.ref)
    store.commit_candidate()
    before = store.state
    model_check = check_model
    if module is None:
        model_check = _raiser(exc)
    else:
        monkeypatch.setattr(module, attribute, _raiser(exc))

    with pytest.raises(error, match=words) as refused:
        store.ingest(signed_tar(tmp_path / "v2.tar", keys.private, "2.0.0"), trust=keys.trust,
                     model_check=model_check)

    message = str(refused.value)
    assert message.isprintable() and "\n" not in message and len(message) < 700
    state = ModelStore.open(store.root).state
    assert (state.active, state.previous, state.candidate) == (before.active, before.previous, before.candidate)
    assert state.history[-1].kind is EventKind.REJECTED and state.history[-1].message.isprintable()
    assert [v.ref for v in store.list_versions()] == [installed.ref]
    assert list((store.root / STAGING_DIR).iterdir()) == []


@pytest.mark.parametrize("call", ["verify", "inspect"])
def test_rmd_bundle_verify_and_inspect_turn_any_failure_into_a_bundle_error(call: str, tmp_path: Path, keys: Keys,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "parse_manifest", _raiser(RecursionError("maximum recursion depth exceeded")))
    bundle = signed_tar(tmp_path / "b.tar", keys.private)
    with pytest.raises(BundleError, match="too deeply nested"):
        if call == "verify":
            verify.verify_bundle(bundle=bundle, trust=keys.trust, model_check=check_model)
        else:
            inspect_bundle(bundle=bundle)


class _Broken:
    """A shadow or probation port with a bug."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def validate(self, *args: object) -> None:
        raise self.exc

    def watch(self, *args: object) -> None:
        raise self.exc


@pytest.mark.parametrize("port", ["shadow", "probation"])
def test_a_bug_in_any_stage_ends_as_a_failed_deployment_and_the_old_model_serves(rig: Rig, port: str) -> None:
    flow = rig.flow()
    deployed_v1(rig, flow)
    setattr(flow, f"_{port}", _Broken(RuntimeError(HOSTILE_TEXT)))

    outcome = rig.deploy(flow, rig.bundle("2.0.0"))

    assert not outcome.accepted
    assert "stopped by an internal error (RuntimeError:" in outcome.reason
    assert outcome.reason.isprintable() and len(outcome.reason) < 500
    state = rig.store.state
    assert (state.candidate, state.stage) == (None, DeploymentStage.FAILED)
    assert state.stage_message.isprintable() and all(event.message.isprintable() for event in state.history)
    assert_v1_still_serves(rig)
    assert ModelStore.open(rig.store.root).state.active == V1
