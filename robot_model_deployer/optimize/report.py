"""The optimization report: every variant tried, what it measured, and which one won.

Written as JSON next to the artifacts so the manager, the perception node
and a person reading the robot's store all see the same record of why a
variant is (or is not) being served. The optimizer writes it and serving
(deploy/serving.py) reads it, so it imports nothing of the optimizer.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.artifacts import CompiledArtifact

REPORT_NAME = "optimization_report.json"


class VariantStatus(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class VariantResult:
    """One candidate artifact and its verdict; ``reason`` says why it is not accepted."""

    name: str
    accelerator: Accelerator
    precision: Precision
    status: VariantStatus = VariantStatus.SKIPPED
    reason: str = ""
    providers: tuple[str, ...] = ()
    quantization: str = ""
    float_nodes: tuple[str, ...] = ()
    size_bytes: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    top1_agreement: float | None = None
    detection_f1: float | None = None
    score_drift: float | None = None
    mask_iou: float | None = None
    keypoint_oks: float | None = None
    memory_mb: float | None = None
    build_seconds: float = 0.0
    artifact: CompiledArtifact | None = None
    notes: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status is VariantStatus.ACCEPTED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accelerator"] = self.accelerator.value
        data["precision"] = self.precision.value
        data["status"] = self.status.value
        data["artifact"] = self.artifact.to_dict() if self.artifact else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VariantResult":
        values = dict(data)
        values["accelerator"] = Accelerator(values["accelerator"])
        values["precision"] = Precision(values["precision"])
        values["status"] = VariantStatus(values["status"])
        values["artifact"] = CompiledArtifact.from_dict(values["artifact"]) if values["artifact"] else None
        for key in ("providers", "float_nodes", "notes"):
            values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class OptimizationReport:
    """The outcome of one optimize run for one bundle on one target."""

    bundle_name: str
    bundle_version: str
    target: str
    chosen: str
    variants: list[VariantResult]
    hardware: dict[str, Any] = field(default_factory=dict)
    int8_advice: str = ""
    wall_seconds: float = 0.0
    time_limited: bool = False

    def variant(self, name: str) -> VariantResult:
        for result in self.variants:
            if result.name == name:
                return result
        raise KeyError(f"no variant named {name} in the report (have {', '.join(v.name for v in self.variants)})")

    @property
    def chosen_variant(self) -> VariantResult:
        return self.variant(self.chosen)

    def speedup_over(self, baseline: str) -> float | None:
        """p50 of ``baseline`` divided by the chosen variant's p50."""
        base, best = self.variant(baseline).p50_ms, self.chosen_variant.p50_ms
        return base / best if base and best else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["variants"] = [v.to_dict() for v in self.variants]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / REPORT_NAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> "OptimizationReport":
        data = json.loads((Path(directory) / REPORT_NAME).read_text(encoding="utf-8"))
        data["variants"] = [VariantResult.from_dict(v) for v in data["variants"]]
        return cls(**data)


def format_table(report: OptimizationReport) -> str:
    """The report as a fixed-width table for terminals and logs, chosen variant marked with '*'."""
    rows = [("", "variant", "status", "p50 ms", "p99 ms", "agree/F1/IoU/OKS", "MB", "why not")]
    for v in report.variants:
        score = next((m for m in (v.top1_agreement, v.detection_f1, v.mask_iou, v.keypoint_oks) if m is not None),
                     None)
        rows.append(("*" if v.name == report.chosen else "", v.name, v.status.value,
                     f"{v.p50_ms:.2f}" if v.p50_ms is not None else "-",
                     f"{v.p99_ms:.2f}" if v.p99_ms is not None else "-",
                     f"{score:.3f}" if score is not None else "-",
                     f"{v.size_bytes / 1e6:.1f}" if v.size_bytes else "-",
                     v.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1]
             for row in rows]
    return "\n".join(line.rstrip() for line in lines)
