"""The manager's one "ready" log line: where to reach it and whom it trusts.

A newcomer who starts the graph needs the names to call and whether their
bundles will be accepted, without reading the source or running
``ros2 service list`` (not installed from PyPI).
"""
from __future__ import annotations

from robot_model_deployer.bundle.signing import TrustStore

SERVICES = ("deploy", "rollback", "list_models", "get_status")
ACTION = "deploy_bundle"
STATUS_TOPIC = "status"


def trust_summary(trust: TrustStore | None, allow_unsigned: bool) -> str:
    """Which bundles the manager accepts, in words."""
    if trust is None:
        accepted = ("unsigned bundles accepted (allow_unsigned; development only)" if allow_unsigned else
                    "no trust store (trust_dir is empty): every signed bundle is refused; set trust_dir to a "
                    "directory of .pub keys")
        return accepted
    keys = ", ".join(trust.key_ids) or "no keys: every bundle is refused; add a .pub file"
    unsigned = "; unsigned bundles also accepted (allow_unsigned)" if allow_unsigned else ""
    return f"trust store {trust.source} ({len(trust.key_ids)} key(s): {keys}){unsigned}"


def ready_line(node_name: str, trust: TrustStore | None, allow_unsigned: bool) -> str:
    """E.g. ``ready: services /model_manager/deploy, ...; action ...; status ...; trust store ...``."""
    services = ", ".join(f"{node_name}/{name}" for name in SERVICES)
    return (f"ready: services {services}; action {node_name}/{ACTION} (robot_model_deployer/action/Deploy); "
            f"status {node_name}/{STATUS_TOPIC}; {trust_summary(trust, allow_unsigned)}")
