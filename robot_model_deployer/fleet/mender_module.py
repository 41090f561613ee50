"""The ``rmd-model`` Mender update module (protocol v3): Mender's states mapped onto a deployment.

Mender runs ``rmd-model STATE TREE`` once per state (mender/rmd-model is the
entry). Every state asks the manager what it serves and runs before it acts,
so a state run again after a crash or a restart of the Mender client does
the same as the first run did: the manager's store is the truth, never a
file of ours. An update is keyed by its artifact name and the bundle's
sha256 (the artifact's meta-data carries it; ``rmd mender artifact`` puts it
there); the robot knows the bundle by name, version and model sha256.

    Download          keep the bundle .tar in the spool directory, named by its sha256
    ArtifactInstall   deploy it and wait through verify, optimize, shadow and swap
    ArtifactCommit    wait for probation; fail when the robot rolled the model back
    ArtifactRollback  cancel or roll back what this update put live (idempotent)
    Cleanup           drop the spooled .tar (the store keeps its own copy)
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.filelist import hash_stream
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.fleet.identity import BundleIdentity, identify_bundle
from robot_model_deployer.fleet.robot_cli import Robot, RobotCli, RobotUnreachable

MODULE_TYPE = "rmd-model"
META_BUNDLE_SHA256 = "bundle_sha256"
RUNNING_STAGES = ("verify", "stage", "optimize", "shadow", "swap", "probation", "commit", "rollback")
LIVE_STAGES = ("probation", "commit")  # the candidate serves from the end of the swap on
STATE_LOG = "states.log"


class State(str, Enum):
    DOWNLOAD = "Download"
    ARTIFACT_INSTALL = "ArtifactInstall"
    ARTIFACT_COMMIT = "ArtifactCommit"
    ARTIFACT_ROLLBACK = "ArtifactRollback"
    ARTIFACT_FAILURE = "ArtifactFailure"
    CLEANUP = "Cleanup"
    SUPPORTS_ROLLBACK = "SupportsRollback"
    NEEDS_ARTIFACT_REBOOT = "NeedsArtifactReboot"


QUERIES = {State.SUPPORTS_ROLLBACK: "Yes", State.NEEDS_ARTIFACT_REBOOT: "No"}


class ModuleError(RuntimeError):
    """This state failed (Mender then rolls back or reports the failure); the message says why and what next."""


@dataclass(frozen=True)
class ModuleConfig:
    """Where bundles wait and how the robot is reached; set in /etc/default/rmd-model (see docs/fleet.md)."""

    spool_dir: Path = Path("/var/lib/rmd-model")
    namespace: str = ""
    robot_timeout_s: float = 30.0
    poll_s: float = 1.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ModuleConfig":
        defaults = cls()
        try:
            config = cls(Path(environ.get("RMD_MENDER_SPOOL", str(defaults.spool_dir))),
                         environ.get("RMD_NAMESPACE", defaults.namespace),
                         float(environ.get("RMD_ROBOT_TIMEOUT", defaults.robot_timeout_s)),
                         float(environ.get("RMD_MENDER_POLL", defaults.poll_s)))
        except ValueError:
            raise ModuleError("RMD_ROBOT_TIMEOUT and RMD_MENDER_POLL must be numbers of seconds; "
                              "fix /etc/default/rmd-model") from None
        if config.robot_timeout_s <= 0 or config.poll_s <= 0 or not config.spool_dir.is_absolute():
            raise ModuleError("RMD_ROBOT_TIMEOUT and RMD_MENDER_POLL must be above 0 and RMD_MENDER_SPOOL an "
                              "absolute path; fix /etc/default/rmd-model")
        return config


@dataclass(frozen=True)
class Update:
    """The update Mender is running, as its file tree describes it."""

    tree: Path
    artifact_name: str
    bundle_sha256: str
    current_artifact_name: str

    @classmethod
    def read(cls, tree: Path) -> "Update":
        header = tree / "header"
        name = _read_text(header / "artifact_name")
        try:
            meta = json.loads(_read_text(header / "meta-data") or "null")
        except ValueError:
            meta = None
        sha = meta.get(META_BUNDLE_SHA256, "") if isinstance(meta, dict) else ""
        valid = isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        return cls(tree, name, sha if valid else "", _read_text(tree / "current_artifact_name"))

    @property
    def reinstall(self) -> bool:
        """Mender already counts this artifact as installed (the same artifact installed again)."""
        return self.artifact_name == self.current_artifact_name


class UpdateModule:
    """One run of the module: ``run(state)`` does that state's work and says what it did."""

    def __init__(self, update: Update | None, config: ModuleConfig, robot: Robot,
                 say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> None:
        self._update, self._config, self._robot, self._say, self._sleep = update, config, robot, say, sleep

    @property
    def bundle_path(self) -> Path:
        if not self.update.bundle_sha256:
            raise ModuleError(f"artifact {self.update.artifact_name!r} carries no {META_BUNDLE_SHA256} in its "
                              f"meta-data: build it with `rmd mender artifact`")
        return self._config.spool_dir / f"{self.update.bundle_sha256}.tar"

    @property
    def update(self) -> Update:
        if self._update is None:
            raise ModuleError("this state needs Mender's file tree (the second argument)")
        return self._update

    def download(self) -> str:
        """Copy the artifact's one stream into the spool (hashing it on the way); never deploy here."""
        kept = self.bundle_path  # fails first for an artifact that names no bundle sha256
        streams = 0
        while (name := _read_text(self.update.tree / "stream-next")):
            streams += 1
            if streams > 1:
                raise ModuleError("the artifact holds more than one file; an rmd-model artifact holds exactly one "
                                  "bundle .tar: build it with `rmd mender artifact`")
            self._spool(self.update.tree / name)
        if streams == 0:
            raise ModuleError("the artifact holds no file; build it with `rmd mender artifact BUNDLE`")
        return f"kept the bundle as {kept}"

    def install(self) -> str:
        identity = self._identity()
        status = self._settled()
        if _running(status) and identity.matches(status["candidate"]):
            self._say(f"the robot already deploys {identity.ref} (stage {status['stage']}): waiting for it")
            status = self._wait(status, lambda s: not _running(s) or s["stage"] in LIVE_STAGES)
            if not identity.matches(status["active"]):
                raise ModuleError(f"the robot refused {identity.ref}: {_last_reason(status, identity)}")
            return f"the deployment of {identity.ref} that was already running serves now (stage {status['stage']})"
        if _running(status):
            raise ModuleError(f"the robot is busy deploying {_ref(status['candidate'])} (stage {status['stage']}); "
                              f"deploy this artifact again once that has finished")
        if identity.matches(status["active"]):
            return f"{identity.ref} already serves: nothing to install"
        self._say(f"deploying {identity.ref} from {self.bundle_path} (verify, optimize, shadow, swap)")
        reply = self._robot.deploy(self.bundle_path)
        if not reply.done:
            raise ModuleError(f"the robot refused {identity.ref}: {reply.message}")
        return f"{identity.ref} serves; probation runs until commit ({reply.message})"

    def commit(self) -> str:
        identity = self._identity()
        status = self._wait(self._robot.status(),
                            lambda s: not (_running(s) and identity.matches(s["candidate"])),
                            f"waiting for the probation of {identity.ref}")
        if not identity.matches(status["active"]):
            raise ModuleError(f"the robot rolled {identity.ref} back: {_last_reason(status, identity)}; "
                              f"{_ref(status['active'])} serves")
        health = f" ({status['health']})" if status.get("health") else ""
        return f"{identity.ref} passed probation and is committed{health}"

    def rollback(self) -> str:
        if not self.update.bundle_sha256 or not self.bundle_path.is_file():
            return "already rolled back: the bundle never reached the robot"
        identity = self._identity()
        status = self._settled()
        if _running(status) and identity.matches(status["candidate"]):
            self._say(f"cancelling the running deployment of {identity.ref} (stage {status['stage']})")
            reply = self._robot.cancel()
            if not reply.done:
                raise ModuleError(f"the robot did not cancel {identity.ref}: {reply.message}")
            status = self._wait(self._robot.status(), lambda s: not _running(s))
            return f"cancelled {identity.ref}; {_ref(status['active'])} serves"
        if identity.matches(status["active"]):
            if self.update.reinstall:
                return f"nothing to roll back: {identity.ref} served before this update and still does"
            reply = self._robot.rollback(f"Mender rolls back artifact {self.update.artifact_name}")
            if not reply.done:
                raise ModuleError(f"the robot did not roll {identity.ref} back: {reply.message}")
            return f"rolled {identity.ref} back: {_ref(self._robot.status()['active'])} serves ({reply.message})"
        return f"already rolled back: {identity.ref} does not serve ({_last_reason(status, identity)}); " \
               f"{_ref(status['active'])} serves"

    def cleanup(self) -> str:
        if not self.update.bundle_sha256:
            return ""
        self.bundle_path.unlink(missing_ok=True)
        return "dropped the spooled bundle"

    def run(self, state: str) -> str:
        """Do ``state``'s work; returns what was done, raises ModuleError (or RobotUnreachable) on failure."""
        actions: dict[str, Callable[[], str]] = {
            State.DOWNLOAD: self.download, State.ARTIFACT_INSTALL: self.install,
            State.ARTIFACT_COMMIT: self.commit, State.ARTIFACT_ROLLBACK: self.rollback,
            State.CLEANUP: self.cleanup, State.ARTIFACT_FAILURE: lambda: "the update failed; the robot keeps serving",
        }
        action = actions.get(state)
        return action() if action is not None else ""

    def _identity(self) -> BundleIdentity:
        if not self.bundle_path.is_file():
            raise ModuleError(f"the bundle of artifact {self.update.artifact_name!r} is missing from "
                              f"{self._config.spool_dir}; deploy the artifact again")
        identity = identify_bundle(self.bundle_path)
        if identity.bundle_sha256 != self.update.bundle_sha256:
            raise ModuleError(f"{self.bundle_path} changed since Download (sha256 {identity.bundle_sha256}); "
                              f"deploy the artifact again")
        return identity

    def _spool(self, stream: Path) -> None:
        spool = self._config.spool_dir
        spool.mkdir(parents=True, exist_ok=True)
        part = spool / f"{self.update.bundle_sha256}.tar.part"
        try:
            with open(stream, "rb") as source, open(part, "wb") as target:
                sha, _ = hash_stream(source, target.write)
                target.flush()
                os.fsync(target.fileno())
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if sha != self.update.bundle_sha256:
            part.unlink()
            raise ModuleError(f"the artifact's bundle has sha256 {sha}, its meta-data says "
                              f"{self.update.bundle_sha256}: rebuild it with `rmd mender artifact`")
        part.chmod(0o644)  # the manager may run as another user than Mender
        part.replace(self.bundle_path)

    def _settled(self) -> dict[str, Any]:
        """The status once a running deployment names its candidate (in verify it names none yet)."""
        return self._wait(self._robot.status(), lambda s: not (_running(s) and not s.get("candidate")))

    def _wait(self, status: dict[str, Any], done: Callable[[dict[str, Any]], bool], what: str = "") -> dict[str, Any]:
        """Poll the status until ``done``; says each new stage (Mender's ModuleTimeoutSeconds bounds this)."""
        if what and not done(status):
            self._say(what)
        seen = ""
        while not done(status):
            if status["stage"] != seen:
                seen = status["stage"]
                self._say(f"robot: {seen}: {status.get('message', '')}")
            self._sleep(self._config.poll_s)
            status = self._robot.status()
        return status


def _running(status: Mapping[str, Any]) -> bool:
    return status.get("stage") in RUNNING_STAGES


def _ref(model: Mapping[str, Any] | None) -> str:
    return f"{model['name']}@{model['version']}" if model else "no model"


def _last_reason(status: Mapping[str, Any], identity: BundleIdentity) -> str:
    last = status.get("last") or {}
    if last.get("version") == identity.ref and last.get("reason"):
        return f"{last.get('outcome', '')}: {last['reason']}".lstrip(": ")
    return status.get("message") or "no reason recorded"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return ""


def _log_state(config: ModuleConfig, record: dict[str, Any]) -> None:
    """Append one JSON line per state run to the spool's states.log (a record for people, never read back)."""
    try:
        config.spool_dir.mkdir(parents=True, exist_ok=True)
        with open(config.spool_dir / STATE_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError:
        pass  # the log must never fail an update


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         robot: Robot | None = None) -> int:
    """``rmd-model STATE [TREE]``: exit 0 when the state succeeded; Mender acts on anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(f"usage: {MODULE_TYPE} STATE [FILE_TREE] (Mender runs this; see docs/fleet.md)", file=sys.stderr)
        return 2
    state, tree = args[0], Path(args[1]) if len(args) > 1 else None
    environ = os.environ if environ is None else environ
    record: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "state": state}
    answer = QUERIES.get(state)
    if answer is not None:  # queries: the answer on stdout is all Mender reads
        print(answer)
        with contextlib.suppress(ModuleError):
            _log_state(ModuleConfig.from_environ(environ), {**record, "exit": 0, "message": answer})
        return 0
    config = ModuleConfig()

    def say(line: str) -> None:
        print(f"{MODULE_TYPE} {state}: {one_line(line, 1000)}", file=sys.stderr, flush=True)

    code = 0
    try:
        config = ModuleConfig.from_environ(environ)
        update = Update.read(tree) if tree is not None and state in tuple(State) else None
        if update is not None:
            record.update(artifact=update.artifact_name, bundle_sha256=update.bundle_sha256)
        robot = robot or RobotCli(namespace=config.namespace, timeout=config.robot_timeout_s)
        message = UpdateModule(update, config, robot, say).run(state)
    except RobotUnreachable as exc:
        code, message = 2, f"could not reach the robot's manager: {exc}; check that it runs and RMD_NAMESPACE"
    except (ModuleError, BundleError, OSError) as exc:
        code, message = 1, str(exc)
    if message:
        say(message)
    _log_state(config, {**record, "exit": code, "message": one_line(message, 1000)})
    return code


if __name__ == "__main__":
    sys.exit(main())
