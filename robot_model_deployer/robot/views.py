"""The manager's messages as plain dicts (``status --json``, ``list --json``) and as one-line text.

Fields are read by name only, so this module needs no rclpy; the dict keys
are the contract scripts rely on (see ``status_dict``).
"""
from __future__ import annotations

from typing import Any

from robot_model_deployer.robot.outcome import RUNNING_STAGES


def model_dict(info: Any) -> dict[str, Any] | None:
    """A ModelInfo as a dict, or None when it names no model."""
    if not info.name:
        return None
    return {"name": info.name, "version": info.version, "ref": f"{info.name}@{info.version}", "task": info.task,
            "path": info.path, "model_sha256": info.model_sha256, "bad": bool(info.bad),
            "bad_reason": info.bad_reason}


def status_dict(status: Any) -> dict[str, Any]:
    """A DeploymentStatus as the dict ``rmd robot status --json`` prints.

    ``deployment`` is the running deployment (stage, message) or None when
    none runs; ``last`` is how the last one ended (``outcome``: deployed,
    refused, rolled_back, cancelled, or "" when none since the manager
    started), so a script can tell "the robot rolled itself back".
    """
    running = status.stage in RUNNING_STAGES
    return {
        "active": model_dict(status.active),
        "previous": model_dict(status.previous),
        "candidate": model_dict(status.candidate),
        "standby": model_dict(status.standby),
        "live_node": status.live_node,
        "standby_node": status.standby_node,
        "stage": status.stage,
        "message": status.message,
        "health": status.health,
        "refused": status.refused,
        "deployment": {"stage": status.stage, "message": status.message} if running else None,
        "last": {"outcome": status.last_outcome, "version": status.last_version, "reason": status.last_reason},
    }


def listed_dicts(models: Any, slots: Any) -> list[dict[str, Any]]:
    """ListModels' answer as one dict per installed version, with its slot ("" when it fills none)."""
    return [{**(model_dict(model) or {}), "slot": slot} for model, slot in zip(models, slots)]


def label(model: dict[str, Any] | None) -> str:
    return model["ref"] if model else "none"


def status_lines(status: dict[str, Any]) -> list[str]:
    """``rmd robot status`` for people: what serves, what runs, how the last deployment ended."""
    lines = [f"active    {label(status['active'])}" + (f" on {status['live_node']}" if status["live_node"] else ""),
             f"previous  {label(status['previous'])}"]
    if status["deployment"]:
        lines.append(f"running   {label(status['candidate'])}: {status['stage']}: {status['message']}")
    else:
        lines.append(f"stage     {status['stage']}: {status['message']}")
    last = status["last"]
    if last["outcome"]:
        lines.append(f"last      {last['outcome']} {last['version']}: {last['reason']}".rstrip())
    if status["health"]:
        lines.append(f"health    {status['health']}")
    if status["refused"]:
        lines.append(f"refused   {status['refused']}")
    return lines
