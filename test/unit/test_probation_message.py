"""The probation line on the status topic: counts, reasons, and a wait for /clock said as such."""
from __future__ import annotations

from robot_model_deployer.nodes.live_checks import probation_message
from robot_model_deployer.validation.health import HealthState, HealthStatus


def status(**changes) -> HealthStatus:
    fields = dict(state=HealthState.HEALTHY, reasons=(), watched_s=2.0, inputs=60, outputs=57, errors=0,
                  non_finite=0, output_ratio=0.95, latency_p99_ms=12.0)
    return HealthStatus(**{**fields, **changes})


def test_a_running_probation_shows_its_counts_and_errors():
    assert probation_message(status(), 35.0) == "probation: healthy, 57/60 frames answered"
    assert probation_message(status(errors=2), 35.0) == "probation: healthy, 57/60 frames answered, 2 errors"


def test_a_stopped_clock_is_shown_as_waiting_for_clock_with_the_limit():
    line = probation_message(status(clock_idle_s=4.2), 35.0)
    assert line == ("probation: healthy, 57/60 frames answered; waiting for /clock: ROS time has not advanced "
                    "for 4 s (probation ends unjudged after 35 s of wall-clock time)")
    assert "waiting for /clock" not in probation_message(status(clock_idle_s=1.0), 35.0)


def test_reasons_are_shown_instead_of_the_wait():
    line = probation_message(status(state=HealthState.TIMED_OUT, reasons=("is /clock paused?",), clock_idle_s=40.0),
                             35.0)
    assert line == "probation: timed_out, 57/60 frames answered (is /clock paused?)"
