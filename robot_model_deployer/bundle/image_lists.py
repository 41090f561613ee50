"""Image lists in a manifest: a file, a folder or a glob, each resolved against the bundle's own file list.

``calibration.images`` and ``validation.images`` may name folders
(``validation``: every image file under it) and globs (``validation/*.jpg``,
``*`` and ``?`` within one path part). They are resolved against the paths a
bundle lists in ``files.json`` (or, for a bundle directory being packed, the
files found in it), never against the file system: a pattern can only ever
name files inside the bundle, every name has passed the bundle's name rules,
and the result is sorted, so every reader resolves a manifest to the same
images. Matching is a linear scan per path part (no regular expression is
built from the manifest), and a list may hold at most MAX_IMAGES images.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from robot_model_deployer.bundle.manifest import Manifest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".npy")
"""What a folder entry picks up (what validation.labelled.load_bundle_image reads); case-insensitive."""
MAX_IMAGES = 5000
_WILDCARDS = frozenset("*?")


class ImageListError(ValueError):
    """An image list entry names nothing, or too much."""


def is_pattern(entry: str) -> bool:
    return any(char in _WILDCARDS for char in entry)


def resolve_images(entries: Iterable[str], listed: Iterable[str], field: str) -> tuple[str, ...]:
    """The files ``entries`` name among ``listed`` bundle paths, de-duplicated, in entry order.

    A listed path is taken as itself; an entry with ``*`` or ``?`` is a glob
    (its matches sorted; matching nothing is an error); any other entry is a
    folder whose image files (IMAGE_SUFFIXES, at any depth, sorted) it names,
    or, if it has none, a file path kept as it is for the caller's check
    that every named file is listed (which says it is missing).
    """
    paths = sorted(set(listed))
    present = set(paths)
    chosen: dict[str, None] = {}
    for entry in entries:
        if entry in present:
            matched = [entry]
        elif is_pattern(entry):
            parts = entry.split("/")
            matched = [p for p in paths if _parts_match(parts, p.split("/"))]
        else:
            prefix = entry.rstrip("/") + "/"
            # No folder of images by that name: a file, which the caller's file check reports as missing.
            matched = [p for p in paths if p.startswith(prefix) and p.lower().endswith(IMAGE_SUFFIXES)] or [entry]
        if not matched:
            raise ImageListError(f"{field}: '{entry}' matches no file the bundle lists; add the images or fix "
                                 "the glob")
        for path in matched:
            chosen[path] = None
        if len(chosen) > MAX_IMAGES:
            raise ImageListError(f"{field} names more than {MAX_IMAGES} images; name fewer (a narrower glob or "
                                 "folder)")
    return tuple(chosen)


def resolve_manifest_images(manifest: Manifest, listed: Iterable[str],
                            error: Callable[[str], Exception] = ImageListError) -> Manifest:
    """``manifest`` with its calibration and validation image lists resolved to files (see resolve_images)."""
    paths = tuple(listed)
    try:
        calibration = resolve_images(manifest.calibration.images, paths, "calibration.images")
        validation = resolve_images(manifest.validation.images, paths, "validation.images")
    except ImageListError as exc:
        raise error(str(exc)) from None
    return dataclasses.replace(
        manifest, calibration=dataclasses.replace(manifest.calibration, images=calibration),
        validation=dataclasses.replace(manifest.validation, images=validation))


def _parts_match(pattern: list[str], parts: list[str]) -> bool:
    return len(pattern) == len(parts) and all(_part_matches(p, n) for p, n in zip(pattern, parts))


def _part_matches(pattern: str, name: str) -> bool:
    """fnmatch's ``*`` and ``?`` (no character classes), by the two-pointer scan: O(len(pattern) * len(name))."""
    p = n = 0
    star, resume = -1, 0
    while n < len(name):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, n, p + 1
        elif star >= 0:
            resume += 1
            p, n = star + 1, resume
        else:
            return False
    return all(char == "*" for char in pattern[p:])
