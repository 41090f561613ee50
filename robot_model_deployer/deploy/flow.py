"""The deploy flow: verify, stage, optimize, shadow, swap, probation, commit.

Every step that can refuse a model runs before the one that exposes it: a
bundle is verified before anything is installed, a candidate proves itself
in shadow before it serves, and it is committed only after a healthy
probation. Whatever fails, the model that was live stays (or is put back)
live, and the store records why.

The flow knows nothing of ROS: the manager node gives it the store, the
blue/green switch and small ports (deploy/ports.py) for the steps that need
live traffic or long work.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.extract import ExtractionLimits
from robot_model_deployer.bundle.signing import TrustStore
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.bundle.verify import ModelCheck
from robot_model_deployer.deploy.ports import (DeploymentCancelled, ModelRefused, OptimizerPort, ProbationPort,
                                               ShadowPort, StageError, StageProgress)
from robot_model_deployer.deploy.switch import BlueGreenSwitch, ServedModel, SwapError
from robot_model_deployer.store.installed import InstalledVersion
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import DeploymentStage, StoreError, VersionRef
from robot_model_deployer.validation.health import HealthState, HealthStatus
from robot_model_deployer.validation.shadow import ShadowOutcome, ShadowVerdict

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowSettings:
    """Policy for accepting bundles (from the manager's parameters).

    ``model_check`` proves an unpacked bundle's model loads before it is
    installed (inference.model_check.check_model); it has no default, so no
    flow installs a model nobody loaded.
    """

    trust: TrustStore | None = None
    allow_unsigned: bool = False
    limits: ExtractionLimits = field(default_factory=ExtractionLimits)
    model_check: ModelCheck = field(kw_only=True)


@dataclass(frozen=True)
class DeployOutcome:
    """What happened to one deploy request; ``report`` holds every stage's numbers.

    ``cancelled``: the caller stopped it (not a failure of the model);
    ``rolled_back``: the candidate had served and the old model was put back.
    """

    accepted: bool
    reason: str
    model: ServedModel | None = None
    report: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    rolled_back: bool = False


class DeploymentFlow:
    """Runs deployments one at a time against one store and one pair of perception nodes."""

    def __init__(self, store: ModelStore, switch: BlueGreenSwitch, settings: FlowSettings,
                 shadow: ShadowPort | None = None, probation: ProbationPort | None = None,
                 optimizer: OptimizerPort | None = None) -> None:
        self.store = store
        self.switch = switch
        self.settings = settings
        self._shadow = shadow
        self._probation = probation
        self._optimizer = optimizer

    def serve_committed(self) -> ServedModel | None:
        """After a (re)start: serve the active model, then load the previous one warm (never activated).

        A previous version that cannot be loaded is logged and left out: the
        active one serves, and a rollback loads the previous then.
        """
        state = self.store.state
        if state.active is None:
            return None
        active = self._committed(state.active)
        self.switch.resume(active)
        self._warm_previous()
        return active

    def deploy(self, bundle_path: str, *, force: bool = False, progress: StageProgress,
               cancel: threading.Event | None = None) -> DeployOutcome:
        """Take a bundle through every stage; the outcome says what happened and why."""
        cancel = cancel or threading.Event()
        report: dict[str, Any] = {"bundle": bundle_path}
        if not bundle_path:
            return DeployOutcome(False, "bundle_path is empty: give the path of a bundle (.tar or directory)")
        try:
            self._drop_unrecorded_candidate()
            installed = self._install(bundle_path, force, progress, report)
        except BundleError as exc:
            reason = f"bundle rejected: {exc}"
            return DeployOutcome(False, reason + self._recorded(self.store.set_stage, DeploymentStage.FAILED, reason),
                                 report=report)
        except Exception as exc:  # e.g. the disk filled up so far that the refusal itself cannot be recorded
            return self._contain(None, exc, report)
        ref = installed.ref
        try:
            self.store.set_candidate(ref)
        except StoreError as exc:
            reason = f"{ref} not deployed: {exc}"
            return DeployOutcome(False, reason + self._recorded(self.store.set_stage, DeploymentStage.FAILED, reason),
                                 report=report)
        except Exception as exc:
            return self._contain(None, exc, report)
        try:
            return self._trial(installed, progress, cancel, report)
        except DeploymentCancelled:
            reason = f"{ref} deployment cancelled; the live model is unchanged"
            return DeployOutcome(False, reason + self._recorded(self.store.cancel_candidate, "cancelled by the caller"),
                                 report=report, cancelled=True)
        except Exception as exc:  # the flow's contract: every outcome is a recorded decision
            return self._contain(ref, exc, report)

    def rollback(self, reason: str) -> ServedModel:
        """Serve the previous model again (manual rollback); raises SwapError or StoreError."""
        previous = self.store.state.previous
        if previous is None:
            raise StoreError("there is no previous version to roll back to")
        standby = self.switch.snapshot().standby_model
        if standby is not None and standby.ref == previous:
            model = self.switch.rollback()
        else:
            # The warm standby is not the store's previous (e.g. a candidate rolled back after its
            # swap stays loaded there, marked bad): load the previous version instead of serving that.
            model = self._committed(previous)
            self.switch.deploy(model)
        self.store.rollback(reason or "requested")
        return model

    # Stages ----------------------------------------------------------------

    def _install(self, bundle_path: str, force: bool, progress: StageProgress,
                 report: dict[str, Any]) -> InstalledVersion:
        progress(DeploymentStage.VERIFY, 0.0, f"verifying {bundle_path}")
        self.store.set_stage(DeploymentStage.VERIFY, f"verifying {bundle_path}")
        installed = self.store.ingest(
            Path(bundle_path), trust=self.settings.trust, model_check=self.settings.model_check,
            allow_unsigned=self.settings.allow_unsigned, force=force, limits=self.settings.limits,
            progress=lambda name, fraction: progress(DeploymentStage.STAGE, fraction, "extracting and hashing the bundle's files"))
        report["installed"] = {"ref": str(installed.ref), "signed_by": installed.key_id or "",
                               "warnings": list(installed.warnings), "forced": installed.forced}
        return installed

    def _trial(self, installed: InstalledVersion, progress: StageProgress, cancel: threading.Event,
               report: dict[str, Any]) -> DeployOutcome:
        ref, manifest = installed.ref, installed.manifest
        artifacts: Path | None = None
        if self._optimizer is not None:
            self._enter(DeploymentStage.OPTIMIZE, f"optimizing {ref} for this robot", progress, cancel)
            try:
                artifacts, report["optimize"] = self._optimizer.optimize(
                    installed, cancel, lambda f, m: progress(DeploymentStage.OPTIMIZE, f, m))
            except ModelRefused as exc:  # the model itself is broken: retrying cannot help
                report["optimize"] = {"refused": str(exc)}
                return self._reject(ref, f"refused at the optimize stage: {exc}", report)
            except StageError as exc:
                return self._reject(ref, f"optimization failed: {exc}", report, mark_bad=False)
        model = self._served(installed, artifacts)
        live = self.switch.snapshot().live_model

        if self._shadow is not None and live is not None:
            self._enter(DeploymentStage.SHADOW, f"running {ref} in shadow beside {live.label()}", progress, cancel)
            try:
                verdict = self._shadow.validate(model, live, manifest, cancel,
                                                lambda f, m: progress(DeploymentStage.SHADOW, f, m))
            except StageError as exc:
                self._check_cancel(cancel)
                return self._reject(ref, f"shadow validation could not run: {exc}", report, mark_bad=False)
            report["shadow"] = _shadow_report(verdict)
            self._check_cancel(cancel)
            if verdict.outcome is not ShadowOutcome.PASS:
                return self._reject(ref, "failed shadow validation: " + "; ".join(verdict.reasons), report)

        self._enter(DeploymentStage.SWAP, f"loading {ref} on the standby perception node", progress, cancel)
        try:
            self.switch.deploy(model)
        except SwapError as exc:
            self._warm_previous()  # the failed load may have released the warm previous version
            self._check_cancel(cancel)
            return self._reject(ref, f"swap failed: {exc}; the live model is unchanged", report, mark_bad=False)

        if self._probation is not None and live is not None:
            self.store.set_stage(DeploymentStage.PROBATION, f"watching {ref} live")
            progress(DeploymentStage.PROBATION, 0.0, f"watching {ref} live")
            status = self._probation.watch(manifest.acceptance, cancel,
                                           lambda f, m: progress(DeploymentStage.PROBATION, f, m))
            report["probation"] = _health_report(status)
            if status.state is not HealthState.PASSED:
                return self._roll_back_candidate(ref, live, status, report, cancelled=cancel.is_set())
        elif live is None:
            report["probation"] = {"state": "skipped", "reasons": ["first deployment: no model to roll back to"]}

        progress(DeploymentStage.COMMIT, 1.0, f"committing {ref}")
        self.store.commit_candidate()
        return DeployOutcome(True, f"{model.label()} is live on {self.switch.snapshot().live_node}", model, report)

    # Helpers ---------------------------------------------------------------

    def _contain(self, ref: VersionRef | None, exc: Exception, report: dict[str, Any]) -> DeployOutcome:
        """An unexpected failure: the old model serves again and the store records why (if it still can)."""
        _log.exception("deployment of %s failed", ref or report["bundle"])
        reason = (f"{ref or report['bundle']} stopped by an internal error "
                  f"({type(exc).__name__}: {one_line(str(exc), 300)})")
        live = self.switch.snapshot().live_model
        if ref is not None and live is not None and live.ref == ref:  # failed after the swap: the old model back
            try:
                self.switch.rollback()
            except Exception as rollback_failure:  # noqa: BLE001 - said in the reason, whatever it is
                reason += f"; rolling back failed too: {one_line(str(rollback_failure), 300)}"
        if ref is not None and self.store.state.candidate == ref:
            note = self._recorded(self.store.reject_candidate, reason, mark_bad=False)
        else:
            note = self._recorded(self.store.set_stage, DeploymentStage.FAILED, reason)
        return DeployOutcome(False, reason + note, report=report)

    @staticmethod
    def _recorded(write: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        """Run a store write that records a failure; "" when it was recorded, else a note saying why not.

        The failure being recorded may be the disk itself (ENOSPC on
        state.json): the outcome then still says what happened, and the
        store keeps its last recorded state.
        """
        try:
            write(*args, **kwargs)
        except (OSError, StoreError) as exc:
            _log.error("could not record a failed deployment in the store: %s", exc)
            return f" (not recorded in the store: {one_line(str(exc), 200)})"
        return ""

    def _drop_unrecorded_candidate(self) -> None:
        """A candidate left from a deployment whose end could not be recorded (disk full): reject it now.

        Deployments run one at a time, so a candidate at the start of one is
        never on trial; without this the store would refuse every new one.
        """
        leftover = self.store.state.candidate
        if leftover is not None:
            self.store.reject_candidate(f"{leftover} was left on trial by a deployment whose outcome could not be "
                                        "recorded", mark_bad=False)

    def _enter(self, stage: DeploymentStage, message: str, progress: StageProgress, cancel: threading.Event) -> None:
        self._check_cancel(cancel)
        self.store.set_stage(stage, message)
        progress(stage, 0.0, message)

    @staticmethod
    def _check_cancel(cancel: threading.Event) -> None:
        if cancel.is_set():
            raise DeploymentCancelled()

    def _reject(self, ref: VersionRef, reason: str, report: dict[str, Any], mark_bad: bool = True) -> DeployOutcome:
        note = self._recorded(self.store.reject_candidate, reason, mark_bad=mark_bad)
        return DeployOutcome(False, f"{ref} rejected: {reason}{note}", report=report)

    def _roll_back_candidate(self, ref: VersionRef, previous: ServedModel, status: HealthStatus,
                             report: dict[str, Any], cancelled: bool) -> DeployOutcome:
        """Put the old model back after the candidate served; the standby then holds the store's previous."""
        why = "cancelled by the caller" if cancelled else "; ".join(status.reasons) or status.state.value
        self.store.set_stage(DeploymentStage.ROLLBACK, f"rolling back {ref}: {why}")
        self.switch.rollback()
        if cancelled:
            note = self._recorded(self.store.cancel_candidate, f"rolled back after the swap: {why}")
        else:
            # Only a judged failure marks the version bad; a paused /clock (TIMED_OUT) does not.
            note = self._recorded(self.store.reject_candidate, f"rolled back after the swap: {why}",
                                  mark_bad=status.state is HealthState.UNHEALTHY)
        self._warm_previous()
        return DeployOutcome(False, f"{ref} rolled back to {previous.label()}: {why}{note}", report=report,
                             cancelled=cancelled, rolled_back=True)

    def _warm_previous(self) -> None:
        """Make the standby hold the store's previous version (or nothing), so status and rollback agree.

        Best effort: the live model serves either way, and a rollback loads
        the previous version itself when the standby does not hold it.
        """
        previous = self.store.state.previous
        try:
            if previous is None:
                self.switch.unload_standby()
            elif (standby := self.switch.snapshot().standby_model) is None or standby.ref != previous:
                self.switch.load_standby(self._committed(previous))
        except (SwapError, StoreError) as exc:
            _log.warning("the standby perception node does not hold the previous version %s: %s", previous, exc)

    def _committed(self, ref: VersionRef) -> ServedModel:
        """A committed version as served again (restart, rollback): with what an earlier optimize built."""
        installed = self.store.installed(ref)
        artifacts = self._optimizer.built_artifacts(installed) if self._optimizer is not None else None
        return self._served(installed, artifacts)

    @staticmethod
    def _served(installed: InstalledVersion, artifacts: Path | None) -> ServedModel:
        return ServedModel(ref=installed.ref, task=installed.manifest.task, path=str(installed.bundle_dir),
                           model_sha256=installed.model_sha256,
                           artifacts=str(artifacts) if artifacts is not None else "")


def _shadow_report(verdict: ShadowVerdict) -> dict[str, Any]:
    report = verdict.report
    return {"outcome": verdict.outcome.value, "reasons": list(verdict.reasons),
            "frames_judged": report.frames_judged, "agreement": report.agreement,
            "mean_score_drift": report.mean_score_drift,
            "candidate_latency_p50_ms": report.candidate_latency_p50_ms,
            "candidate_latency_p99_ms": report.candidate_latency_p99_ms,
            "live_latency_p50_ms": report.live_latency_p50_ms,
            "live_latency_p99_ms": report.live_latency_p99_ms,
            "reference_latency_p50_ms": report.reference_latency_p50_ms,
            "reference_latency_p99_ms": report.reference_latency_p99_ms,
            "reference_frames": report.reference_frames, "candidate_errors": report.candidate_errors,
            "candidate_non_finite": report.candidate_non_finite, "dropped_frames": report.dropped_frames,
            "candidate_mean_score": report.candidate_mean_score, "live_mean_score": report.live_mean_score,
            "candidate_mean_boxes": report.candidate_mean_boxes, "live_mean_boxes": report.live_mean_boxes,
            "labelled": {"candidate_set": {"images": report.labelled_images,
                                           "candidate": report.candidate_labelled_score,
                                           "live": report.live_labelled_score},
                         "live_set": {"images": report.live_set_images,
                                      "candidate": report.candidate_live_set_score,
                                      "live": report.live_live_set_score}},
            "disagreements": report.disagreements,
            "samples": {"saved": report.samples_saved, "dir": report.samples_dir}}


def _health_report(status: HealthStatus) -> dict[str, Any]:
    return {"state": status.state.value, "reasons": list(status.reasons), "watched_s": status.watched_s,
            "inputs": status.inputs, "outputs": status.outputs, "errors": status.errors,
            "non_finite": status.non_finite, "output_ratio": status.output_ratio,
            "latency_p50_ms": status.latency_p50_ms, "latency_p99_ms": status.latency_p99_ms,
            "lowest_output_ratio": status.lowest_output_ratio,
            "answered_bar": status.answered_bar, "rate_not_judged": status.rate_not_judged, "lowest_rate_tail": status.lowest_rate_tail,
            "longest_wait_s": status.longest_wait_s, "stall_limit_s": status.stall_limit_s}
