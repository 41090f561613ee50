"""The store's state record (``state.json``): slots, deployment stage, history.

Typed here and serialised as JSON so an operator can read it with ``cat``;
it is only ever replaced whole (see durable.write_atomic).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from robot_model_deployer.bundle.manifest import MODEL_NAME_RULE, is_model_name
from robot_model_deployer.bundle.semver import SemVer
from robot_model_deployer.bundle.text import one_line

STATE_FORMAT = 1
MAX_HISTORY = 500


class StoreError(RuntimeError):
    """The store cannot do what was asked (e.g. commit with no candidate) or its state is damaged."""


class DeploymentStage(str, Enum):
    """Where the current deployment is; see docs/bundle-format.md and DESIGN.md for the flow."""

    IDLE = "idle"
    VERIFY = "verify"
    STAGE = "stage"
    OPTIMIZE = "optimize"
    SHADOW = "shadow"
    SWAP = "swap"
    PROBATION = "probation"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    FAILED = "failed"
    # The caller stopped the deployment; the live model is unchanged (or was put back).
    CANCELLED = "cancelled"


class EventKind(str, Enum):
    INSTALLED = "installed"
    REJECTED = "rejected"
    FORCED = "forced"
    CANDIDATE_SET = "candidate_set"
    STAGE_CHANGED = "stage_changed"
    COMMITTED = "committed"
    CANDIDATE_REJECTED = "candidate_rejected"
    CANDIDATE_CANCELLED = "candidate_cancelled"
    ROLLED_BACK = "rolled_back"
    RECOVERED = "recovered"
    PRUNED = "pruned"


@dataclass(frozen=True)
class VersionRef:
    """One installed version of one model, written ``name@version``."""

    name: str
    version: SemVer

    def __post_init__(self) -> None:
        # The name becomes a directory name: only what a manifest may use, so never '/' or '..'.
        if not is_model_name(self.name):
            raise ValueError(f"model name {self.name!r} must be {MODEL_NAME_RULE}")

    @classmethod
    def parse(cls, text: str) -> "VersionRef":
        name, sep, version = text.partition("@")
        if not sep or not name:
            raise ValueError(f"'{text}' is not a version reference such as colour_classifier@1.2.0")
        return cls(name, SemVer.parse(version))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class StoreEvent:
    """One line of the store's history: what happened, to which version, and why."""

    time: str
    kind: EventKind
    ref: VersionRef | None
    message: str

    @classmethod
    def now(cls, kind: EventKind, ref: VersionRef | None, message: str) -> "StoreEvent":
        return cls(datetime.now(timezone.utc).isoformat(timespec="milliseconds"), kind, ref, message)


@dataclass(frozen=True)
class BadMark:
    """A version that failed a gate, and why: it is not deployed again unless forced."""

    ref: VersionRef
    reason: str


@dataclass(frozen=True)
class StoreState:
    """Which version serves (active), which is the rollback target (previous), which is on trial (candidate)."""

    active: VersionRef | None = None
    previous: VersionRef | None = None
    candidate: VersionRef | None = None
    stage: DeploymentStage = DeploymentStage.IDLE
    stage_message: str = ""
    bad_marks: tuple[BadMark, ...] = ()
    newest: tuple[VersionRef, ...] = ()
    history: tuple[StoreEvent, ...] = field(default=(), repr=False)

    @property
    def slots(self) -> tuple[VersionRef, ...]:
        """The versions a slot names; retention never deletes these."""
        return tuple(ref for ref in (self.active, self.previous, self.candidate) if ref is not None)

    @property
    def bad(self) -> tuple[VersionRef, ...]:
        """The versions marked bad, in the order they were marked."""
        return tuple(mark.ref for mark in self.bad_marks)

    def bad_reason(self, ref: VersionRef) -> str | None:
        """Why ``ref`` was marked bad (None: it is not)."""
        return next((mark.reason for mark in self.bad_marks if mark.ref == ref), None)

    def with_bad(self, ref: VersionRef, reason: str) -> "StoreState":
        """This state with ``ref`` marked bad for ``reason`` (replacing an earlier reason)."""
        return replace(self, bad_marks=self.without_bad(ref).bad_marks + (BadMark(ref, one_line(reason)),))

    def without_bad(self, ref: VersionRef) -> "StoreState":
        return replace(self, bad_marks=tuple(mark for mark in self.bad_marks if mark.ref != ref))

    def newest_version(self, name: str) -> SemVer | None:
        """The highest version of ``name`` ever installed (kept after pruning, so replays stay refused)."""
        return next((ref.version for ref in self.newest if ref.name == name), None)

    def with_newest(self, ref: VersionRef) -> "StoreState":
        current = self.newest_version(ref.name)
        if current is not None and current >= ref.version:
            return self
        others = tuple(r for r in self.newest if r.name != ref.name)
        return replace(self, newest=tuple(sorted(others + (ref,), key=lambda r: r.name)))

    def with_event(self, kind: EventKind, ref: VersionRef | None, message: str) -> "StoreState":
        """This state with one more history event; its message is made one bounded, printable line."""
        event = StoreEvent.now(kind, ref, one_line(message))
        return replace(self, history=(self.history + (event,))[-MAX_HISTORY:])

    def to_bytes(self) -> bytes:
        body = {
            "format": STATE_FORMAT,
            "active": _ref_out(self.active), "previous": _ref_out(self.previous),
            "candidate": _ref_out(self.candidate),
            "stage": self.stage.value, "stage_message": self.stage_message,
            "bad": [{"ref": str(m.ref), "reason": m.reason} for m in self.bad_marks],
            "newest": [str(r) for r in self.newest],
            "history": [{"time": e.time, "kind": e.kind.value, "ref": _ref_out(e.ref), "message": e.message}
                        for e in self.history],
        }
        return (json.dumps(body, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> "StoreState":
        try:
            body = json.loads(data.decode("utf-8"))
            if body["format"] != STATE_FORMAT:
                raise StoreError(f"{source} has format {body['format']!r}; this version reads {STATE_FORMAT}")
            return cls(
                active=_ref_in(body["active"]), previous=_ref_in(body["previous"]),
                candidate=_ref_in(body["candidate"]),
                stage=DeploymentStage(body["stage"]), stage_message=str(body["stage_message"]),
                bad_marks=tuple(_bad_mark_in(entry) for entry in body["bad"]),
                newest=tuple(VersionRef.parse(r) for r in body["newest"]),
                history=tuple(StoreEvent(str(e["time"]), EventKind(e["kind"]), _ref_in(e["ref"]), str(e["message"]))
                              for e in body["history"]),
            )
        except StoreError:
            raise
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{source} is damaged ({type(exc).__name__}: {exc}); restore it from a backup or move "
                             "it aside to start with an empty store state") from None


def _bad_mark_in(entry: Any) -> BadMark:
    """A bad mark; a state file written before reasons were kept lists the bare reference."""
    if isinstance(entry, str):
        return BadMark(VersionRef.parse(entry), "reason not recorded (marked bad by an older version)")
    return BadMark(VersionRef.parse(str(entry["ref"])), str(entry["reason"]))


def _ref_out(ref: VersionRef | None) -> Any:
    return None if ref is None else str(ref)


def _ref_in(value: Any) -> VersionRef | None:
    return None if value is None else VersionRef.parse(str(value))
