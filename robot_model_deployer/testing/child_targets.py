"""Small functions for tests of robot_model_deployer.isolation: each behaves badly in one way."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time


def echo(value: object) -> object:
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes << 20)
    return len(block)


def hang(seconds: float) -> None:
    time.sleep(seconds)


def die(signal_name: str) -> None:
    os.kill(os.getpid(), signal.Signals[signal_name])


def flood(megabytes: int) -> int:
    """Write ``megabytes`` MiB to stdout and to stderr, then return normally."""
    line = "x" * 1023 + "\n"
    for stream in (sys.stdout, sys.stderr):
        for _ in range(megabytes << 10):
            stream.write(line)
        stream.flush()
    return megabytes


def peak_with_threads(threads: int) -> int:
    """VmPeak in MiB while ``threads`` threads each hold a few small (malloc arena) blocks."""
    barrier = threading.Barrier(threads + 1)
    held: list[list[bytearray]] = []

    def hold() -> None:
        held.append([bytearray(4096) for _ in range(64)])
        barrier.wait()
        barrier.wait()

    pool = [threading.Thread(target=hold) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    peak = _status_kib("VmPeak") >> 10
    barrier.wait()
    for thread in pool:
        thread.join()
    return peak


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def count_with_progress(count: int, period_s: float) -> int:
    """Report 0..count-1 as progress, ``period_s`` apart, then return ``count``."""
    from robot_model_deployer.isolation.child import report_progress

    for step in range(count):
        report_progress({"step": step})
        time.sleep(period_s)
    report_progress("x" * 10000)  # too long for one progress line: dropped
    return count


def optimize_with_crashing_quantizer(**kwargs: object) -> object:
    """optimize.pipeline.optimize_in_child, but ONNX Runtime's quantizer dies of SIGSEGV (as a native crash would)."""
    from robot_model_deployer.optimize import pipeline

    def crash(*args: object, **kw: object) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    pipeline.quantize_model = crash
    return pipeline.optimize_in_child(**kwargs)


def optimize_slowly(**kwargs: object) -> object:
    """optimize.pipeline.optimize_in_child after reporting progress, with every quantization taking a minute."""
    from robot_model_deployer.optimize import pipeline

    def slow(*args: object, **kw: object) -> None:
        time.sleep(60)

    pipeline.quantize_model = slow
    return pipeline.optimize_in_child(**kwargs)
