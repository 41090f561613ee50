"""What happened in a demo run, from the events it recorded: the summary table and the timeline's data.

Pure: the scenario driver (demo/scenario.py) appends events as they arrive
over ROS; everything a reader sees at the end (per-step outcome and reason,
frames sent and answered, the largest gap, which version served each span,
the stage bands of the PNG) is computed here from those events alone, so it
is tested on recorded events without a graph.

Times ``t`` are seconds since the demo started (a monotonic clock); image
stamps are the camera's ROS time in nanoseconds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

# Frames sent in the last this many seconds may still be on their way: not counted as unanswered.
IN_FLIGHT_S = 1.0


@dataclass(frozen=True)
class FrameSent:
    stamp_ns: int
    t: float


@dataclass(frozen=True)
class ResultSeen:
    stamp_ns: int
    t: float
    version: str
    latency_ms: float  # image stamp to the result's arrival in the demo process


@dataclass(frozen=True)
class StageSeen:
    """One Deploy feedback (or status change) of a scenario step."""

    t: float
    step: str
    stage: str
    progress: float
    message: str


@dataclass(frozen=True)
class StepOutcome:
    step: str
    version: str
    expected: str
    outcome: str
    reason: str
    t_start: float
    t_end: float

    @property
    def as_scripted(self) -> bool:
        return self.outcome == self.expected


@dataclass
class DemoLog:
    """Every event of one run; appended from ROS callbacks on several threads."""

    frames: list[FrameSent] = field(default_factory=list)
    results: list[ResultSeen] = field(default_factory=list)
    stages: list[StageSeen] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, event: FrameSent | ResultSeen | StageSeen | StepOutcome) -> None:
        target = {FrameSent: self.frames, ResultSeen: self.results, StageSeen: self.stages,
                  StepOutcome: self.steps}[type(event)]
        with self._lock:
            target.append(event)

    def snapshot(self) -> "DemoLog":
        with self._lock:
            return DemoLog(list(self.frames), list(self.results), list(self.stages), list(self.steps))


@dataclass(frozen=True)
class Span:
    """Consecutive answered frames (in stamp order) served by one version."""

    version: str
    t_start: float
    t_end: float
    frames: int


@dataclass(frozen=True)
class Band:
    """One stage of one step, from its first feedback to the next step's or stage's."""

    step: str
    stage: str
    t_start: float
    t_end: float


@dataclass(frozen=True)
class FramePoint:
    """One camera frame on the timeline: when it was sent, and its first answer (None: none)."""

    t: float
    version: str | None
    latency_ms: float | None


@dataclass(frozen=True)
class Summary:
    steps: tuple[StepOutcome, ...]
    frames_sent: int
    frames_judged: int  # sent after the first answer and not still in flight at the end
    frames_answered: int  # of those judged
    largest_gap_ms: float  # longest time between two consecutive results
    longest_unanswered_run: int  # consecutive judged frames without an answer
    spans: tuple[Span, ...]
    stopped: str  # why the scenario did not end ('' when it did)


def classify_outcome(accepted: bool, reason: str, last_stage: str) -> str:
    """The words the summary uses: live, refused in <stage>, rolled back in probation, cancelled."""
    if accepted:
        return "live"
    if "rolled back" in reason:
        return "rolled back in probation"
    if "cancel" in reason:
        return "cancelled"
    return f"refused in {last_stage or 'verify'}"


def frame_points(log: DemoLog) -> list[FramePoint]:
    """Every frame sent, in stamp order, with its first result."""
    first: dict[int, ResultSeen] = {}
    for result in sorted(log.results, key=lambda r: r.t):
        first.setdefault(result.stamp_ns, result)
    points = []
    for frame in sorted(log.frames, key=lambda f: f.stamp_ns):
        answer = first.get(frame.stamp_ns)
        points.append(FramePoint(frame.t, answer.version if answer else None, answer.latency_ms if answer else None))
    return points


def spans(points: list[FramePoint]) -> list[Span]:
    """Which version served each stretch; unanswered frames do not break a span."""
    out: list[Span] = []
    for point in points:
        if point.version is None:
            continue
        if out and out[-1].version == point.version:
            last = out[-1]
            out[-1] = Span(last.version, last.t_start, point.t, last.frames + 1)
        else:
            out.append(Span(point.version, point.t, point.t, 1))
    return out


def stage_bands(log: DemoLog, end_t: float) -> list[Band]:
    """Stage bands for the timeline: each lasts until the next stage event or the step's end."""
    ends = {step.step: step.t_end for step in log.steps}
    stages = sorted(log.stages, key=lambda s: s.t)
    bands: list[Band] = []
    for index, stage in enumerate(stages):
        if bands and bands[-1].step == stage.step and bands[-1].stage == stage.stage:
            continue
        following = next((s.t for s in stages[index + 1:] if (s.step, s.stage) != (stage.step, stage.stage)), end_t)
        bands.append(Band(stage.step, stage.stage, stage.t, min(following, ends.get(stage.step, end_t))))
    return bands


def judged_points(points: list[FramePoint], end_t: float) -> list[FramePoint]:
    """Frames that should have an answer: sent after the first one answered, and not still in flight at the end."""
    first = next((p.t for p in points if p.version is not None), None)
    return [] if first is None else [p for p in points if first <= p.t <= end_t - IN_FLIGHT_S]


def summarize(log: DemoLog, end_t: float, stopped: str = "") -> Summary:
    points = frame_points(log)
    judged = judged_points(points, end_t)
    longest = run = 0
    for point in judged:
        run = run + 1 if point.version is None else 0
        longest = max(longest, run)
    arrivals = sorted(r.t for r in log.results)
    gap = max((b - a for a, b in zip(arrivals, arrivals[1:])), default=0.0)
    return Summary(steps=tuple(log.steps), frames_sent=len(points), frames_judged=len(judged),
                   frames_answered=sum(p.version is not None for p in judged), largest_gap_ms=gap * 1000.0,
                   longest_unanswered_run=longest, spans=tuple(spans(points)), stopped=stopped)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    line = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    return [line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]


def summary_text(summary: Summary, reason_width: int = 110) -> str:
    """The table the demo ends with."""
    rows = [(step.step, step.version, step.outcome, "yes" if step.as_scripted else f"NO (expected {step.expected})",
             f"{step.t_end - step.t_start:.1f}", _shorten(step.reason, reason_width)) for step in summary.steps]
    lines = ["Scenario", *_table(("step", "version", "outcome", "as scripted", "s", "reason"), rows), ""]
    unanswered = summary.frames_judged - summary.frames_answered
    lines.append(f"Frames: {summary.frames_sent} sent; {summary.frames_answered} of the {summary.frames_judged} "
                 f"sent after the first result answered ({unanswered} without a result, at most "
                 f"{summary.longest_unanswered_run} in a row); largest gap between results "
                 f"{summary.largest_gap_ms:.0f} ms")
    span_rows = [(span.version, f"{span.t_start:.1f}", f"{span.t_end:.1f}", str(span.frames)) for span in summary.spans]
    lines += ["", "Who served", *_table(("version", "from s", "to s", "frames"), span_rows)]
    if summary.stopped:
        lines += ["", f"Stopped before the scenario ended: {summary.stopped}."]
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."
