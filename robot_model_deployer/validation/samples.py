"""Disagreement samples: frames on which a candidate and the live model answered differently.

Numbers say how much a candidate differs; samples show what. The shadow
node keeps the first ``max_samples`` disagreeing frames of a run, each as
``NNN.png`` (the camera image, RGB) and ``NNN.json`` (both outputs and why
they differ), in the candidate's version directory of the store
(``derived/shadow-samples/``). The manager empties that directory before each
run and tells the node where it is; ``rmd store samples`` lists it. The JSON
file is written last and atomically, so a listed sample is always whole.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.shadow_report import Disagreement

SAMPLES_SUBDIR = "shadow-samples"
# Enough to see a pattern, small enough that a long run costs a few MB at most.
DEFAULT_MAX_SAMPLES = 16


def samples_dir(derived_dir: Path) -> Path:
    """Where the disagreement samples of a version live, given its derived/ directory."""
    return derived_dir / SAMPLES_SUBDIR


@dataclass(frozen=True)
class SavedSample:
    """One sample as listed: its image file and what its JSON says."""

    index: int
    image: Path
    stamp_ns: int
    reason: str
    candidate: dict[str, Any]
    live: dict[str, Any]


def prediction_record(prediction: Prediction) -> dict[str, Any]:
    """A Prediction as plain JSON values (keypoints, and each mask's pixel count, when it has them)."""
    record: dict[str, Any] = {
        "class_ids": [int(c) for c in prediction.class_ids], "labels": list(prediction.labels),
        "scores": [round(float(s), 6) for s in prediction.scores],
        "boxes": [[round(float(v), 2) for v in box] for box in prediction.boxes]}
    if prediction.keypoints.size:
        record["keypoints"] = np.round(prediction.keypoints.astype(np.float64), 2).tolist()
    if prediction.masks.size:
        record["mask_pixels"] = [int(m.sum()) for m in prediction.masks]
    return record


def write_sample(directory: Path, index: int, image_rgb: np.ndarray, disagreement: Disagreement,
                 versions: dict[str, str]) -> None:
    """Write sample ``index``: the image as PNG, then the JSON that makes it listed.

    ``image_rgb`` is HxWx3 RGB or HxW grey uint8; ``versions`` names the two
    models (``{"candidate": ..., "live": ...}``).
    """
    stem = f"{index:03d}"
    Image.fromarray(np.ascontiguousarray(image_rgb)).save(directory / f"{stem}.png")
    record = {"index": index, "image": f"{stem}.png", "stamp_ns": disagreement.stamp_ns,
              "reason": disagreement.reason, "versions": dict(versions),
              "candidate": prediction_record(disagreement.candidate), "live": prediction_record(disagreement.live)}
    partial = directory / f".{stem}.json.partial"
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, directory / f"{stem}.json")


def list_samples(directory: Path) -> list[SavedSample]:
    """The samples in ``directory``, oldest first; a missing directory has none.

    Raises ValueError naming the file when a sample's JSON is not one this
    module wrote.
    """
    if not directory.is_dir():
        return []
    samples = []
    for path in sorted(directory.glob("[0-9][0-9][0-9].json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            samples.append(SavedSample(int(record["index"]), directory / str(record["image"]),
                                       int(record["stamp_ns"]), str(record["reason"]), dict(record["candidate"]),
                                       dict(record["live"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a disagreement sample ({type(exc).__name__}: {exc})") from None
    return samples
