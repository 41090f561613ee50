"""The demo's timeline as a PNG: per-frame latency, the version serving each frame, stage bands.

Drawn from story.py's data alone (matplotlib, no display needed).
"""
from __future__ import annotations

from pathlib import Path

from robot_model_deployer.demo.story import Band, DemoLog, frame_points, judged_points, stage_bands

_STAGE_COLOURS = {"verify": "#d9d9d9", "stage": "#bdbdbd", "optimize": "#c6dbef", "shadow": "#fdd0a2",
                  "swap": "#fcbba1", "probation": "#c7e9c0", "commit": "#a1d99b", "rollback": "#fbb4b9"}


def draw_timeline(log: DemoLog, end_t: float, path: Path) -> Path:
    """Write the PNG to ``path``: latency on top, serving version below, each step's stages as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    points = frame_points(log)
    versions = sorted({p.version for p in points if p.version is not None})
    colours = {version: plt.cm.tab10(index % 10) for index, version in enumerate(versions)}
    figure, (latency_axes, version_axes) = plt.subplots(2, 1, sharex=True, figsize=(14, 7),
                                                       gridspec_kw={"height_ratios": [3, 1.3]})
    bands = stage_bands(log, end_t)
    for axes in (latency_axes, version_axes):
        _draw_bands(axes, bands)
    for version in versions:
        mine = [p for p in points if p.version == version]
        latency_axes.scatter([p.t for p in mine], [p.latency_ms for p in mine], s=6, color=colours[version],
                             label=version)
        version_axes.scatter([p.t for p in mine], [versions.index(version)] * len(mine), s=6,
                             color=colours[version], marker="|")
    missed = [p.t for p in judged_points(points, end_t) if p.version is None]
    if missed:
        latency_axes.scatter(missed, [0.0] * len(missed), s=14, color="red", marker="x", label="no result")
    for band in bands:
        if band.stage in ("shadow", "probation", "rollback", "optimize"):
            latency_axes.annotate(f"{band.step} {band.stage}", (band.t_start, 1.0), xycoords=("data", "axes fraction"),
                                  rotation=90, va="top", ha="left", fontsize=7, color="#444444")
    latency_axes.set_ylabel("image stamp to result (ms)")
    latency_axes.set_title("Demo: latency of every camera frame, the version that answered it, and the deployment "
                           "stages")
    stages = [Patch(color=_STAGE_COLOURS[name], alpha=0.6, label=name) for name in _STAGE_COLOURS
              if any(band.stage == name for band in bands)]
    latency_axes.legend(handles=[*latency_axes.get_legend_handles_labels()[0], *stages], loc="upper right",
                        fontsize=8, markerscale=2, ncol=2)
    latency_axes.set_ylim(bottom=0)
    version_axes.set_yticks(range(len(versions)), versions)
    version_axes.set_ylim(-0.7, max(len(versions), 1) - 0.3)
    version_axes.set_ylabel("serving")
    version_axes.set_xlabel("seconds since the demo started")
    version_axes.set_xlim(0, max(end_t, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _draw_bands(axes, bands: list[Band]) -> None:
    for band in bands:
        axes.axvspan(band.t_start, max(band.t_end, band.t_start + 0.05), color=_STAGE_COLOURS.get(band.stage, "#eeeeee"),
                     alpha=0.6, linewidth=0)
