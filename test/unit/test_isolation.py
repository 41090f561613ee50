"""Work in a limited child process: values come back, failures come back as one reason naming the limit."""
from __future__ import annotations

import threading
import time

import pytest

from peak_memory import peak_rss_growth
from robot_model_deployer.isolation.child import ChildError, ChildFailure, ChildLimits, run_in_child

TARGETS = "robot_model_deployer.testing.child_targets"
LIMITS = ChildLimits(memory_mb=512, seconds=20)


def test_the_value_comes_back():
    assert run_in_child(f"{TARGETS}:echo", {"value": {"a": [1, 2]}}, LIMITS) == {"a": [1, 2]}


def test_an_exception_comes_back_with_its_type_and_first_line():
    with pytest.raises(ChildError) as caught:
        run_in_child(f"{TARGETS}:fail", {"message": "bad model\nsecond line"}, LIMITS)
    assert caught.value.failure is ChildFailure.ERROR
    assert caught.value.error_type == "ValueError"
    assert str(caught.value) == "bad model"


def test_allocating_past_the_memory_limit_is_reported_as_the_limit():
    with pytest.raises(ChildError, match="memory limit of 512 MiB") as caught:
        run_in_child(f"{TARGETS}:allocate", {"megabytes": 2048}, LIMITS)
    assert caught.value.failure is ChildFailure.MEMORY
    assert run_in_child(f"{TARGETS}:allocate", {"megabytes": 64}, LIMITS) == 64 << 20


def test_a_child_past_its_deadline_is_stopped():
    started = time.monotonic()
    with pytest.raises(ChildError, match="time limit of 2 s") as caught:
        run_in_child(f"{TARGETS}:hang", {"seconds": 60}, ChildLimits(memory_mb=512, seconds=2))
    assert caught.value.failure is ChildFailure.TIMEOUT
    assert time.monotonic() - started < 10


def test_a_child_killed_by_a_signal_is_a_crash():
    with pytest.raises(ChildError, match="SIGSEGV") as caught:
        run_in_child(f"{TARGETS}:die", {"signal_name": "SIGSEGV"}, LIMITS)
    assert caught.value.failure is ChildFailure.CRASHED


@pytest.mark.parametrize("memory_mb, seconds", [(10, 1.0), (512, 0.0), (512, -1.0)])
def test_limits_are_checked(memory_mb, seconds):
    with pytest.raises(ValueError, match="ChildLimits"):
        ChildLimits(memory_mb=memory_mb, seconds=seconds)


def test_a_child_flooding_its_output_costs_the_caller_no_memory():
    with peak_rss_growth() as growth:
        assert run_in_child(f"{TARGETS}:flood", {"megabytes": 64}, LIMITS) == 64
    assert growth.mib < 16


def test_malloc_arenas_do_not_eat_the_memory_limit():
    # Without a cap glibc reserves 64 MiB of address space per thread's arena (about 1 GiB here).
    assert run_in_child(f"{TARGETS}:peak_with_threads", {"threads": 16}, ChildLimits(memory_mb=1024, seconds=20)) < 512


def test_progress_from_the_child_reaches_the_caller_while_it_works():
    seen: list[tuple[float, object]] = []
    started = time.monotonic()
    assert run_in_child(f"{TARGETS}:count_with_progress", {"count": 5, "period_s": 0.2}, LIMITS,
                        progress=lambda value: seen.append((time.monotonic(), value))) == 5
    finished = time.monotonic()
    assert [value for _, value in seen] == [{"step": step} for step in range(5)]  # the oversized line is dropped
    assert seen[0][0] - started < finished - started - 0.5, "the first step arrived only at the end"


def test_cancel_kills_a_working_child_promptly():
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ChildError, match="cancelled") as caught:
        run_in_child(f"{TARGETS}:hang", {"seconds": 60}, LIMITS, cancel=cancel)
    assert caught.value.failure is ChildFailure.CANCELLED
    assert time.monotonic() - started < 1.0 + 0.5


def test_a_set_cancel_starts_no_child():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ChildError) as caught:
        run_in_child(f"{TARGETS}:die", {"signal_name": "SIGKILL"}, LIMITS, cancel=cancel)
    assert caught.value.failure is ChildFailure.CANCELLED
