"""The demo's summary and timeline, built from recorded events (no graph)."""
from __future__ import annotations

import importlib.util

import pytest

from robot_model_deployer.demo.story import (IN_FLIGHT_S, DemoLog, FrameSent, ResultSeen, StageSeen,
                                             StepOutcome, classify_outcome, frame_points, stage_bands, summarize,
                                             summary_text)



def stamp(frame: int) -> int:
    return 1_700_000_000_000_000_000 + frame * 100_000_000


def recorded_run() -> DemoLog:
    """100 frames: none answered before frame 5, v1 to frame 49, frames 50-52 lost in the swap, v2 after
    (frame 60 answered by both nodes: counted once, for the first answer)."""
    log = DemoLog()
    for frame in range(100):
        log.add(FrameSent(stamp(frame), frame / 10))
        version = None if frame < 5 or 50 <= frame <= 52 else "v1 1.0.0" if frame < 50 else "v2 1.1.0"
        if version is not None and frame < 98:  # the last two are still in flight when the run ends
            log.add(ResultSeen(stamp(frame), frame / 10 + 0.02, version, 20.0 + frame % 3))
    log.add(ResultSeen(stamp(60), 6.05, "v1 1.0.0", 50.0))
    log.add(StageSeen(0.1, "v1", "verify", 0.0, "verifying"))
    log.add(StageSeen(0.2, "v1", "stage", 0.5, "extracting"))
    log.add(StageSeen(0.3, "v1", "stage", 1.0, "extracting"))
    log.add(StageSeen(0.4, "v1", "swap", 0.0, "loading"))
    log.add(StepOutcome("v1", "1.0.0", "live", "live", "v1 is live", 0.0, 0.6))
    log.add(StageSeen(4.0, "v2", "shadow", 0.0, "shadow"))
    log.add(StageSeen(5.0, "v2", "swap", 0.0, "loading"))
    log.add(StageSeen(5.5, "v2", "probation", 0.0, "watching"))
    log.add(StepOutcome("v2", "1.1.0", "live", "live", "v2 is live", 4.0, 8.0))
    log.add(StepOutcome("v3", "1.2.0", "refused in shadow", "refused in probation", "rolled back: NaN", 8.0, 9.0))
    return log


def test_frames_sent_answered_and_the_longest_run_without_a_result():
    summary = summarize(recorded_run(), end_t=10.0)
    assert summary.frames_sent == 100
    # Judged: from the first answer (frame 5) to 1 s before the end (frames still in flight are not held against it).
    last_judged = round((10.0 - IN_FLIGHT_S) * 10)
    assert summary.frames_judged == last_judged - 5 + 1
    assert summary.frames_judged - summary.frames_answered == 3
    assert summary.longest_unanswered_run == 3


def test_the_largest_gap_is_between_consecutive_results():
    summary = summarize(recorded_run(), end_t=10.0)
    assert summary.largest_gap_ms == pytest.approx(400.0)  # frame 49's result to frame 53's


def test_spans_say_which_version_served_each_stretch_by_first_answer():
    assert spans_of(recorded_run()) == [("v1 1.0.0", 0.5, 4.9, 45), ("v2 1.1.0", 5.3, 9.7, 45)]
    points = frame_points(recorded_run())
    assert points[60].version == "v2 1.1.0" and points[60].latency_ms == pytest.approx(20.0)
    assert points[51].version is None and points[51].latency_ms is None


def spans_of(log: DemoLog) -> list[tuple[str, float, float, int]]:
    return [(s.version, round(s.t_start, 3), round(s.t_end, 3), s.frames) for s in summarize(log, 10.0).spans]


def test_stage_bands_merge_repeated_feedback_and_end_at_the_next_stage_or_the_step():
    bands = [(b.step, b.stage, b.t_start, b.t_end) for b in stage_bands(recorded_run(), end_t=10.0)]
    assert bands == [("v1", "verify", 0.1, 0.2), ("v1", "stage", 0.2, 0.4), ("v1", "swap", 0.4, 0.6),
                     ("v2", "shadow", 4.0, 5.0), ("v2", "swap", 5.0, 5.5), ("v2", "probation", 5.5, 8.0)]


def test_the_table_names_each_step_its_outcome_whether_scripted_and_the_frames():
    text = summary_text(summarize(recorded_run(), end_t=10.0, stopped="--duration reached"))
    lines = text.splitlines()
    v3 = next(line for line in lines if line.startswith("v3"))
    assert "refused in probation" in v3 and "NO (expected refused in shadow)" in v3 and "rolled back: NaN" in v3
    assert any(line.startswith("v1") and " yes " in line for line in lines)
    assert "100 sent" in text and "at most 3 in a row" in text and "largest gap between results 400 ms" in text
    assert any(line.split()[:2] == ["v2", "1.1.0"] for line in lines[lines.index("Who served"):])
    assert text.endswith("Stopped before the scenario ended: --duration reached.")


@pytest.mark.parametrize("accepted, reason, stage, words", [
    (True, "v2 is live on perception_b", "commit", "live"),
    (False, "failed shadow validation: agreement 2%", "shadow", "refused in shadow"),
    (False, "rolled back to 1.1.0: NaN on 12 frames", "probation", "rolled back in probation"),
    (False, "signature does not match", "", "refused in verify"),
    (False, "cancelled by the caller", "optimize", "cancelled"),
])
def test_outcomes_are_worded_from_the_result_and_the_last_stage(accepted, reason, stage, words):
    assert classify_outcome(accepted, reason, stage) == words


def test_an_empty_run_summarizes_without_failing():
    summary = summarize(DemoLog(), end_t=3.0, stopped="interrupted (Ctrl-C)")
    assert (summary.frames_sent, summary.frames_answered, summary.largest_gap_ms, summary.spans) == (0, 0, 0.0, ())
    assert "0 sent" in summary_text(summary)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the demo extra) is missing")
def test_the_timeline_png_is_drawn_from_the_same_events(tmp_path):
    from PIL import Image

    from robot_model_deployer.demo.timeline import draw_timeline

    path = draw_timeline(recorded_run(), 10.0, tmp_path / "timeline.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 1000
        # Not a blank canvas: the bands and the points are drawn in several colours.
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20
