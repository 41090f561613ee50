"""Semantic versions (semver.org 2.0.0): parsing and precedence.

Bundle versions are SemVer so the store can refuse a downgrade or a replay
by comparing them; ordering must therefore follow the spec exactly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from robot_model_deployer.bundle.text import shown

MAX_VERSION_CHARS = 64
MAX_NUMBER_DIGITS = 9
# Used with fullmatch: '$' would also match before a trailing newline.
_SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,  # \d must not match non-ASCII digits such as '١'
)


@dataclass(frozen=True)
class SemVer:
    """A semantic version; ordering follows semver.org (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> "SemVer":
        """Parse ``text``; ValueError if it is not SemVer or longer than a robot needs."""
        if len(text) > MAX_VERSION_CHARS:
            raise ValueError(f"version {shown(text, 40)} is longer than {MAX_VERSION_CHARS} characters")
        match = _SEMVER_RE.fullmatch(text)
        if not match:
            raise ValueError(f"'{shown(text)}' is not a semantic version such as 1.2.0")
        major, minor, patch, pre, build = match.groups()
        numbers = [major, minor, patch] + [part for part in (pre or "").split(".") if part.isdigit()]
        if any(len(number) > MAX_NUMBER_DIGITS for number in numbers):
            raise ValueError(f"version {shown(text)} has a number of more than {MAX_NUMBER_DIGITS} digits")
        return cls(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (), build or "")

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; numeric identifiers sort
        # numerically and before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    # Equality and hashing follow the same key as ordering, so two versions that
    # differ only in build metadata are equal, as semver.org's precedence says.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: "SemVer") -> bool:
        return self._key() < other._key()

    def __le__(self, other: "SemVer") -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: "SemVer") -> bool:
        return self._key() > other._key()

    def __ge__(self, other: "SemVer") -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text
