"""Typed fields from parsed YAML, checked as they are read (manifest.yaml, targets.yaml).

A reader is bound to the dataclass its mapping becomes: a field that is
absent (or null) takes that dataclass's default, so each default is written
once, in the schema. Errors name the file and the dotted field path
(``input.width must be >= 1, got 0``) and are raised as the caller's error
type, so each format keeps its own exception.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping, Sequence, TypeVar

_E = TypeVar("_E", bound=Enum)
_MISSING = object()


class FieldReader:
    """Reads typed fields from one mapping whose defaults come from ``schema``; see the module docstring."""

    def __init__(self, data: Mapping[str, Any], where: str, *, schema: type, error: type[ValueError],
                 prefix: str = "") -> None:
        self._data = data
        self._where = where
        self._schema = schema
        self._error_type = error
        self._prefix = prefix
        self._seen: set[str] = set()

    def error(self, key: str, problem: str) -> ValueError:
        """The caller's error for field ``key``, e.g. ``manifest.yaml: input.width must be >= 1, got 0``."""
        return self._error_type(f"{self._where}: {self._prefix}{key} {problem}")

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise self.error(key, "is required")
            return _MISSING
        return value

    def _default(self, key: str) -> Any:
        spec = _fields_of(self._schema).get(key)
        if spec is not None and spec.default is not dataclasses.MISSING:
            return spec.default
        if spec is not None and spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        # A bug in the caller, not in the file.
        raise TypeError(f"{self._schema.__name__} has no default for {key!r}; read it with required=True")

    def reject_unknown(self) -> None:
        """Refuse keys no read asked for: a misspelt field must not silently fall back to its default."""
        unknown = sorted(str(k) for k in self._data if k not in self._seen)
        if unknown:
            raise self._error_type(
                f"{self._where}: unknown field(s) {', '.join(self._prefix + k for k in unknown)} "
                f"(misspelt, or written for a newer schema); known: {', '.join(sorted(self._seen))}"
            )

    def given(self, key: str) -> bool:
        """Whether the file sets ``key`` (to anything but null), for fields that only apply with others."""
        return self._data.get(key) is not None

    def section(self, key: str, schema: type, required: bool = False) -> "FieldReader":
        """A reader for the nested mapping ``key`` (absent: an empty one, so all of ``schema``'s defaults)."""
        value = self._get(key, required)
        if value is _MISSING:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {type(value).__name__}")
        return FieldReader(value, self._where, schema=schema, error=self._error_type,
                           prefix=f"{self._prefix}{key}.")

    def string(self, key: str, required: bool = False) -> str:
        value = self._get(key, required)
        if value is _MISSING:
            return self._default(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, False)
        if value is _MISSING:
            return self._default(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings")
        return tuple(value)

    def relpath(self, key: str, required: bool = False) -> str:
        """A path relative to the bundle root, normalised; '' (absent or empty) means none."""
        text = self.string(key, required)
        if not text:
            if required:
                raise self.error(key, "is required (got an empty path)")
            return ""
        return _check_relpath(text, lambda problem: self.error(key, problem))

    def relpaths(self, key: str) -> tuple[str, ...]:
        return tuple(_check_relpath(p, lambda problem: self.error(key, problem)) for p in self.strings(key))

    def enum(self, key: str, enum: type[_E], required: bool = False) -> _E:
        """One enum member by value, case-insensitive; the error lists the choices."""
        value = self._get(key, required)
        if value is _MISSING:
            return self._default(key)
        return self._member(key, enum, value)

    def enums(self, key: str, enum: type[_E], required: bool = False) -> tuple[_E, ...]:
        """A non-empty list of enum members, case-insensitive."""
        value = self._get(key, required)
        if value is _MISSING:
            return self._default(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty list of {_choices(enum)}, got {value!r}")
        return tuple(self._member(key, enum, item) for item in value)

    def _member(self, key: str, enum: type[_E], value: Any) -> _E:
        try:
            return enum(str(value).lower())
        except ValueError:
            raise self.error(key, f"must be one of {_choices(enum)}, got {value!r}") from None

    def boolean(self, key: str) -> bool:
        value = self._get(key, False)
        if value is _MISSING:
            return self._default(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, required: bool = False, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self._get(key, required)
        if value is _MISSING:
            return self._default(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        _check_range(value, minimum, maximum, False, lambda problem: self.error(key, problem))
        return value

    def number(self, key: str, minimum: float | None = None, maximum: float | None = None,
               exclusive_minimum: bool = False) -> float:
        value = self._get(key, False)
        if value is _MISSING:
            return self._default(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, got {value!r}")
        if not _is_finite(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        _check_range(value, minimum, maximum, exclusive_minimum, lambda problem: self.error(key, problem))
        return float(value)

    def numbers(self, key: str, length: int | None = None, positive: bool = False,
                default: Sequence[float] | None = None) -> tuple[float, ...]:
        """A list of finite numbers; ``default`` only for one the schema derives (e.g. one value per channel)."""
        value = self._get(key, False)
        if value is _MISSING:
            return tuple(default) if default is not None else self._default(key)
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self.error(key, f"must be a list of numbers, got {value!r}")
        if not all(_is_finite(v) for v in value):
            raise self.error(key, f"values must all be finite numbers, got {value!r}")
        if length is not None and len(value) != length:
            raise self.error(key, f"must have {length} values (one per input channel), got {len(value)}")
        if positive and any(v <= 0 for v in value):
            raise self.error(key, f"values must all be > 0, got {value!r}")
        return tuple(float(v) for v in value)

    def integers(self, key: str, positive: bool = False) -> tuple[int, ...]:
        value = self._get(key, False)
        if value is _MISSING:
            return self._default(key)
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.error(key, f"must be a non-empty list of integers, got {value!r}")
        if positive and any(v <= 0 for v in value):
            raise self.error(key, f"values must all be > 0, got {value!r}")
        return tuple(value)


@functools.cache
def _fields_of(schema: type) -> dict[str, dataclasses.Field]:
    return {spec.name: spec for spec in dataclasses.fields(schema)}


def _choices(enum: type[Enum]) -> str:
    return ", ".join(e.value for e in enum)


def _is_finite(value: int | float) -> bool:
    """False for NaN, +-inf and integers too large for a float (all pass range checks unnoticed)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_range(value: float, minimum: float | None, maximum: float | None,
                 exclusive_minimum: bool, error: Callable[[str], ValueError]) -> None:
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise error(f"must be {'>' if exclusive_minimum else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"must be <= {maximum}, got {value}")


def _check_relpath(text: str, error: Callable[[str], ValueError]) -> str:
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or "\\" in text or not path.parts:
        raise error(f"'{text}' must be a relative path inside the bundle (no '..', no leading '/')")
    return path.as_posix()
