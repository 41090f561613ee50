"""What the manager says about deployments for ``rmd robot``: the last outcome, and one version's report.

The last outcome goes into DeploymentStatus (``last_outcome``, ...), so a
script can tell "the robot rolled itself back" from "the gate refused it".
A deployment's report (every stage's numbers) is kept with its version, in
``derived/deployment-report.json``, so GetReport can answer after a restart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.deploy.flow import DeployOutcome
from robot_model_deployer.msg import DeploymentStatus
from robot_model_deployer.store.durable import write_atomic
from robot_model_deployer.store.model_store import ModelStore
from robot_model_deployer.store.state import StoreError, VersionRef
from robot_model_deployer.srv import GetReport

REPORT_NAME = "deployment-report.json"


@dataclass(frozen=True)
class LastOutcome:
    """How the last deployment or rollback ended (the status fields ``last_*``)."""

    outcome: str = ""
    version: str = ""
    reason: str = ""

    @classmethod
    def of_deployment(cls, outcome: DeployOutcome) -> "LastOutcome":
        kind = ("deployed" if outcome.accepted else "cancelled" if outcome.cancelled
                else "rolled_back" if outcome.rolled_back else "refused")
        return cls(kind, _ref_of(outcome), one_line(outcome.reason))

    def fill(self, status: DeploymentStatus) -> DeploymentStatus:
        status.last_outcome, status.last_version, status.last_reason = self.outcome, self.version, self.reason
        return status


def _ref_of(outcome: DeployOutcome) -> str:
    if outcome.model is not None:
        return str(outcome.model.ref)
    return str((outcome.report.get("installed") or {}).get("ref", ""))


def keep_report(store: ModelStore, outcome: DeployOutcome) -> None:
    """Write the deployment's report next to its version (nothing when the bundle never installed)."""
    ref = _ref_of(outcome)
    if not ref:
        return
    try:
        directory = store.derived_dir(VersionRef.parse(ref))
    except (StoreError, ValueError):
        return
    if directory.parent.is_dir():
        directory.mkdir(exist_ok=True)
        record = {"accepted": outcome.accepted, "reason": outcome.reason, "cancelled": outcome.cancelled,
                  "rolled_back": outcome.rolled_back, "stages": outcome.report}
        write_atomic(directory / REPORT_NAME, json.dumps(record, indent=1, default=str).encode())


def version_report(store: ModelStore, request: GetReport.Request, response: GetReport.Response,
                   ) -> GetReport.Response:
    """GetReport's answer: the version's record, slot, history and last deployment report."""
    ref, why = _find(store, request.version.strip())
    if ref is None:
        response.found, response.reason = False, why
        return response
    try:
        response.report_json = json.dumps(_report(store, ref), default=str)
    except (StoreError, OSError, ValueError) as exc:  # a damaged record: say so, keep serving
        response.found, response.reason = False, one_line(f"{ref}'s record cannot be read: {exc}")
        return response
    response.found = True
    return response


def _report(store: ModelStore, ref: VersionRef) -> dict[str, Any]:
    state = store.state
    installed = store.installed(ref)
    slot = next((name for name in ("active", "previous", "candidate") if getattr(state, name) == ref), "")
    report_path = store.derived_dir(ref) / REPORT_NAME
    report = {
        "model": {"ref": str(ref), "task": installed.manifest.task.value, "model_sha256": installed.model_sha256,
                  "path": str(installed.bundle_dir), "signed_by": installed.key_id or "",
                  "installed_at": installed.installed_at, "forced": installed.forced},
        "slot": slot,
        "bad_reason": state.bad_reason(ref) or "",
        "history": [{"time": e.time, "kind": e.kind.value, "message": e.message} for e in state.history
                    if e.ref == ref],
        "deployment": json.loads(report_path.read_text()) if report_path.is_file() else None,
    }
    return report


def _find(store: ModelStore, text: str) -> tuple[VersionRef | None, str]:
    installed = [v.ref for v in store.list_versions()]
    if "@" in text:
        try:
            wanted = VersionRef.parse(text)
        except (StoreError, ValueError) as exc:
            return None, f"{one_line(text, 200)} is not name@version ({exc}); `rmd robot list` shows what is there"
        matches = [ref for ref in installed if ref == wanted]
    else:
        matches = [ref for ref in installed if str(ref.version) == text]
    if len(matches) == 1:
        return matches[0], ""
    if not matches:
        return None, (f"{one_line(text, 200)} is not installed on the robot; `rmd robot list` shows the "
                      "installed versions")
    return None, (f"several models have version {one_line(text, 200)} ({', '.join(map(str, matches))}): "
                  "give name@version")
