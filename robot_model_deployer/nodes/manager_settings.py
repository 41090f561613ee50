"""The manager's parameters, and the core objects they make: one place for each default and check.

Every value is read before the manager starts anything, so a refused one
leaves no thread, listener or child process behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robot_model_deployer.bundle.signing import KeyFileError, TrustStore
from robot_model_deployer.deploy.flow import FlowSettings
from robot_model_deployer.deploy.optimizer import OPTIMIZE_LIMITS
from robot_model_deployer.inference.model_check import MODEL_CHECK_LIMITS, IsolatedModelCheck
from robot_model_deployer.isolation.child import ChildLimits
from robot_model_deployer.nodes.parameters import ParameterSpec, ParameterValueError
from robot_model_deployer.optimize.targets import TargetProfile, load_target_profile
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import StoreError
from robot_model_deployer.validation.health import DEFAULT_WALL_MARGIN_S

DEFAULT_STORE = str(Path.home() / ".local" / "share" / "robot_model_deployer" / "store")

PARAMETERS = (
    ParameterSpec("perception_nodes", ["perception_a", "perception_b"],
                  "The two lifecycle perception nodes to switch between (relative to this node's namespace, "
                  "or absolute).",
                  check=lambda v: None if len(v) == 2 and len(set(v)) == 2 else "must name two different nodes"),
    ParameterSpec("shadow_node", "shadow",
                  "Lifecycle shadow node that validates candidates on live traffic ('' skips the shadow stage)."),
    ParameterSpec("probation", True, "Watch a new model after the swap and roll back automatically if unhealthy."),
    ParameterSpec("probation_wall_margin_s", DEFAULT_WALL_MARGIN_S,
                  "Wall-clock seconds probation may take beyond the bundle's probation_seconds (a paused or slow "
                  "/clock) before the candidate is rolled back unjudged (not marked bad).",
                  minimum=1.0, maximum=86400.0),
    ParameterSpec("optimize_target", "",
                  "Target profile (from targets_file) to optimize each new model for, e.g. x86_cpu ('' serves "
                  "models as shipped)."),
    ParameterSpec("targets_file", "", "Target profiles YAML ('' uses the profiles the package ships)."),
    ParameterSpec("store_dir", DEFAULT_STORE, "Directory of the on-robot model store."),
    ParameterSpec("keep_versions", 2, "Installed versions kept besides active, previous and candidate.",
                  minimum=0, maximum=1000),
    ParameterSpec("trust_dir", "", "Directory of trusted public keys (.pub) that bundles must be signed by."),
    ParameterSpec("allow_unsigned", False,
                  "Accept unsigned bundles (development only; every such bundle is logged as a warning)."),
    ParameterSpec("initial_bundle", "",
                  "Bundle deployed at start-up when the store has no active model (empty: none)."),
    ParameterSpec("service_timeout", 30.0, "Seconds to wait for a perception node to answer a lifecycle call.",
                  minimum=0.1, maximum=3600.0),
    ParameterSpec("shadow_timeout", 120.0, "Seconds a shadow run may take before the candidate is refused.",
                  minimum=1.0, maximum=86400.0),
    ParameterSpec("model_check_memory_mb", MODEL_CHECK_LIMITS.memory_mb,
                  "Address space (MiB) the child process that loads and test-runs a new model may use; a model "
                  "that needs more is refused.", minimum=512, maximum=1 << 20),
    ParameterSpec("model_check_timeout_s", MODEL_CHECK_LIMITS.seconds,
                  "Seconds the child process that loads and test-runs a new model may take; a model that takes "
                  "longer is refused.", minimum=5.0, maximum=3600.0),
    ParameterSpec("optimize_memory_mb", OPTIMIZE_LIMITS.memory_mb,
                  "Address space (MiB) the child process that quantizes, compiles and benchmarks a new model "
                  "(the optimize stage) may use; a model that needs more is refused.", minimum=512, maximum=1 << 20),
    ParameterSpec("optimize_timeout_s", OPTIMIZE_LIMITS.seconds,
                  "Seconds the optimize stage's child process may take before it is killed and the model refused; "
                  "keep it above the target profile's time_limit_s.", minimum=10.0, maximum=86400.0),
)


def open_store(settings: dict[str, Any]) -> ModelStore:
    """The store at store_dir, or why not as a parameter error."""
    store_dir = Path(settings["store_dir"]).expanduser()
    try:
        return ModelStore.open(store_dir, keep_others=settings["keep_versions"])
    except (OSError, StoreError) as exc:
        raise ParameterValueError(f"parameter store_dir: cannot open the model store {store_dir}: {exc}") from None


def optimize_target(settings: dict[str, Any]) -> TargetProfile | None:
    """The target profile to optimize for (None: serve models as shipped)."""
    if not settings["optimize_target"]:
        return None
    try:
        return load_target_profile(settings["optimize_target"], settings["targets_file"] or None)
    except (OSError, ValueError) as exc:
        raise ParameterValueError(f"parameter optimize_target: {exc}") from None


def flow_settings(settings: dict[str, Any]) -> FlowSettings:
    """The deploy flow's trust store and model check, from the parameters."""
    trust = None
    if settings["trust_dir"]:
        try:
            trust = TrustStore.load(Path(settings["trust_dir"]).expanduser())
        except KeyFileError as exc:
            raise ParameterValueError(f"parameter trust_dir: {exc}") from None
    limits = ChildLimits(memory_mb=settings["model_check_memory_mb"], seconds=settings["model_check_timeout_s"])
    return FlowSettings(trust=trust, allow_unsigned=settings["allow_unsigned"],
                        model_check=IsolatedModelCheck(limits))
