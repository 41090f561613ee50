"""Small functions for tests of robot_model_deployer.isolation: each behaves badly in one way."""
from __future__ import annotations

import os
import signal
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
