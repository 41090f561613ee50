"""The model check in a limited child: hostile signed models are refused naming the limit, the caller is untouched."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from bundle_helpers import Keys, make_keys, signed_tar
from peak_memory import peak_rss_growth
from robot_model_deployer.bundle.errors import BundleFormatError, ModelCheckError
from robot_model_deployer.cli.main import main
from robot_model_deployer.deploy.flow import DeploymentFlow
from robot_model_deployer.deploy.switch import BlueGreenSwitch, SlotState
from robot_model_deployer.inference.model_check import MODEL_CHECK_LIMITS, IsolatedModelCheck, check_model, refusal
from robot_model_deployer.isolation.child import ChildError, ChildFailure, ChildLimits
from robot_model_deployer.store.model_store import STAGING_DIR, ModelStore
from robot_model_deployer.store.state import DeploymentStage, EventKind
from robot_model_deployer.testing.models import (classifier_manifest, colour_classifier, memory_hog_classifier,
                                                 spinning_classifier, write_bundle)

SMALL = ChildLimits(memory_mb=1024, seconds=30.0)
HOG_GIB = 8.0
MEMORY_REFUSAL = ("model check ran out of its memory limit of 1024 MiB: the model allocates more than a robot "
                  "should give it; raise model_check_memory_mb (rmd bundle verify --check-memory-mb) if that "
                  "is expected")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    for name, model in (("good", colour_classifier()), ("hog", memory_hog_classifier(HOG_GIB)),
                        ("spinning", spinning_classifier()), ("garbage", b"not an onnx model")):
        write_bundle(root / name, model, classifier_manifest())
    return root


def _hog_tar(path: Path, keys: Keys) -> Path:
    return signed_tar(path, keys.private, model=memory_hog_classifier(HOG_GIB).SerializeToString())


def test_a_good_model_passes_with_the_default_limits(bundles: Path) -> None:
    assert IsolatedModelCheck() == IsolatedModelCheck(MODEL_CHECK_LIMITS)
    IsolatedModelCheck()(bundles / "good")


def test_a_model_that_allocates_gigabytes_per_run_is_refused_naming_the_memory_limit(bundles: Path) -> None:
    started = time.monotonic()
    with peak_rss_growth() as growth, pytest.raises(ModelCheckError) as caught:
        IsolatedModelCheck(SMALL)(bundles / "hog")
    assert str(caught.value) == MEMORY_REFUSAL
    assert time.monotonic() - started < SMALL.seconds / 2
    assert growth.mib < 32  # the gigabytes were (not) allocated in the child


def test_a_model_that_never_ends_is_stopped_at_the_time_limit(bundles: Path) -> None:
    limits = ChildLimits(memory_mb=2048, seconds=4.0)
    started = time.monotonic()
    with peak_rss_growth() as growth, pytest.raises(ModelCheckError) as caught:
        IsolatedModelCheck(limits)(bundles / "spinning")
    elapsed = time.monotonic() - started
    assert str(caught.value) == ("model check ran past its time limit of 4 s and was stopped: the model takes "
                                 "longer to load and run once than a robot should wait; raise model_check_timeout_s "
                                 "(rmd bundle verify --check-timeout) if that is expected")
    assert limits.seconds <= elapsed < limits.seconds + 5
    assert growth.mib < 32


@pytest.mark.parametrize("name, error", [("garbage", ModelCheckError), ("missing", BundleFormatError)])
def test_what_check_model_refuses_comes_back_with_its_class_and_message(bundles: Path, name: str,
                                                                       error: type[Exception]) -> None:
    with pytest.raises(error) as in_process:
        check_model(bundles / name)
    with pytest.raises(error) as isolated:
        IsolatedModelCheck(SMALL)(bundles / name)
    assert type(isolated.value) is type(in_process.value) and str(isolated.value) == str(in_process.value)


def test_a_crash_or_a_broken_check_is_refused_with_what_to_do() -> None:
    crashed = refusal(ChildError(ChildFailure.CRASHED, "crashed (SIGSEGV); with a memory limit of 1024 MiB this "
                                 "is most likely the model running out of it"), SMALL)
    assert isinstance(crashed, ModelCheckError)
    assert str(crashed).startswith("model check crashed (SIGSEGV); with a memory limit of 1024 MiB")
    assert str(crashed).endswith("try it with onnxruntime on a workstation and fix or re-export it")
    broken = refusal(ChildError(ChildFailure.ERROR, "no \x1b[2Jsuch\u202e key " + "k" * 5000, "KeyError"), SMALL)
    assert isinstance(broken, ModelCheckError)
    assert str(broken).startswith("model check failed with KeyError: no \\x1b[2Jsuch\\u202e key kkk")
    assert str(broken).isprintable() and len(str(broken)) < 500


def test_store_ingest_of_a_signed_memory_hog_is_rejected_and_recorded(tmp_path: Path, keys: Keys) -> None:
    store = ModelStore.open(tmp_path / "store")
    bundle = _hog_tar(tmp_path / "hog.tar", keys)
    with pytest.raises(ModelCheckError, match="memory limit of 1024 MiB"):
        store.ingest(bundle, trust=keys.trust, model_check=IsolatedModelCheck(SMALL))
    last = store.state.history[-1]
    assert last.kind is EventKind.REJECTED and last.message == f"{bundle} rejected: {MEMORY_REFUSAL}"
    assert store.list_versions() == [] and list((store.root / STAGING_DIR).iterdir()) == []


class _UntouchedSlot:
    """A perception node the deployment must never reach."""

    def __init__(self, name: str) -> None:
        self.name = name

    def state(self) -> SlotState:
        return SlotState.UNCONFIGURED

    def __getattr__(self, step: str) -> object:
        raise AssertionError(f"{self.name} was asked to {step} a model that failed its check")


def test_the_manager_checks_each_new_model_in_a_child_with_its_parameters(tmp_path: Path, keys: Keys) -> None:
    manager = pytest.importorskip("robot_model_deployer.nodes.manager_settings", reason="the manager node needs rclpy")
    settings = {spec.name: spec.default for spec in manager.PARAMETERS}
    assert manager.flow_settings(settings).model_check == IsolatedModelCheck(MODEL_CHECK_LIMITS)
    specs = {spec.name: spec for spec in manager.PARAMETERS}
    with pytest.raises(ValueError, match="parameter model_check_memory_mb must be >= 512"):
        specs["model_check_memory_mb"].validate(100)
    with pytest.raises(ValueError, match="parameter model_check_timeout_s must be >= 5.0"):
        specs["model_check_timeout_s"].validate(0.5)

    settings.update(trust_dir=str(keys.trust_dir), model_check_memory_mb=SMALL.memory_mb,
                    model_check_timeout_s=SMALL.seconds)
    store = ModelStore.open(tmp_path / "store")
    flow = DeploymentFlow(store, BlueGreenSwitch([_UntouchedSlot("perception_a"), _UntouchedSlot("perception_b")]),
                          manager.flow_settings(settings))
    with peak_rss_growth() as growth:
        outcome = flow.deploy(str(_hog_tar(tmp_path / "hog.tar", keys)), progress=lambda *_: None)
    assert not outcome.accepted and outcome.reason == f"bundle rejected: {MEMORY_REFUSAL}"
    assert store.state.stage is DeploymentStage.FAILED
    assert EventKind.REJECTED in [event.kind for event in store.state.history]
    assert store.list_versions() == [] and growth.mib < 32


def test_rmd_bundle_verify_refuses_a_signed_memory_hog_in_one_line(tmp_path: Path, keys: Keys,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _hog_tar(tmp_path / "hog.tar", keys)
    assert main(["bundle", "verify", str(bundle), "--trust", str(keys.trust_dir),
                 "--check-memory-mb", str(SMALL.memory_mb)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"rmd: error: {MEMORY_REFUSAL}\n"


def test_rmd_bundle_verify_stops_a_model_that_never_ends(tmp_path: Path, keys: Keys,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bundle = signed_tar(tmp_path / "spin.tar", keys.private, model=spinning_classifier().SerializeToString())
    started = time.monotonic()
    assert main(["bundle", "verify", str(bundle), "--trust", str(keys.trust_dir), "--check-timeout", "3"]) == 1
    assert time.monotonic() - started < 3 + 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rmd: error: model check ran past its time limit of 3 s")


def test_rmd_bundle_verify_names_a_bad_limit(tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = signed_tar(tmp_path / "good.tar", keys.private)
    assert main(["bundle", "verify", str(bundle), "--trust", str(keys.trust_dir), "--check-memory-mb", "10"]) == 1
    assert capsys.readouterr().err.startswith("rmd: error: --check-memory-mb / --check-timeout: ChildLimits.memory_mb")
