"""Run risky work (loading an untrusted model, quantizing it) in a child process with limits.

A model can allocate gigabytes per run, hang in a loop, or crash the runtime.
In a child process with an address-space limit and a deadline it can do none
of that to the manager: the child is killed, the manager's memory stays where
it was, and the caller gets one reason that names the limit.

The child is a fresh interpreter (``python -m`` this module), not a fork: the
parent runs DDS threads, and forking a threaded process is not safe. Its
output goes to temporary files of which only the tail is read, so a child
that floods stdout or stderr costs the parent no memory either.

Long work reports progress with ``report_progress`` (one JSON line on a pipe
the parent reads while it waits), and a parent's ``cancel`` event kills the
child within a poll period: a cancel never waits for the work to notice it.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping

MIB = 1 << 20
_RESULT_MARK = "RMD-CHILD-RESULT "
_STDOUT_TAIL = 1 << 20   # the result line is the last one; values are small
_STDERR_TAIL = 64 << 10  # enough for the last lines of a traceback or a runtime's complaint
# glibc reserves 64 MiB of address space per malloc arena (one per thread, up to 8 per core), and
# RLIMIT_AS counts it: ONNX Runtime with 16 threads reached 1.3 GiB of it for 110 MiB resident; with
# two arenas, 440 MiB. Capped, the memory limit is about what the work uses, whatever the core count.
_CHILD_ENV = {"MALLOC_ARENA_MAX": "2"}
_PROGRESS_FD_ENV = "RMD_CHILD_PROGRESS_FD"
_PROGRESS_LINE_MAX = 4096  # a longer progress line is dropped, not buffered
_progress_fd: int | None = None  # in a child: the write end of its progress pipe (see _child_main)
POLL_PERIOD_S = 0.05
"""How often a waiting parent checks its cancel event and the deadline (so a cancel kills within this)."""


class ChildFailure(str, Enum):
    """Why a child did not return a value."""

    ERROR = "error"          # the work raised; the message is its own
    MEMORY = "memory"        # it hit the memory limit
    TIMEOUT = "timeout"      # it ran past the deadline and was killed
    CRASHED = "crashed"      # it died without a result (a signal or a hard exit)
    CANCELLED = "cancelled"  # the caller's cancel event was set and the child was killed


@dataclass(frozen=True)
class ChildLimits:
    """What a child may use: address space in MiB and wall-clock seconds.

    No defaults here: each kind of work has its own (the model check's are
    inference.model_check.MODEL_CHECK_LIMITS), and a caller's parameters set them.
    """

    memory_mb: int
    seconds: float

    def __post_init__(self) -> None:
        if self.memory_mb < 64:
            raise ValueError(f"ChildLimits.memory_mb must be >= 64, got {self.memory_mb}")
        if not self.seconds > 0:
            raise ValueError(f"ChildLimits.seconds must be > 0, got {self.seconds}")


class ChildError(RuntimeError):
    """The work in the child did not succeed; ``failure`` says how, the message says what to do."""

    def __init__(self, failure: ChildFailure, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.failure = failure
        self.error_type = error_type


def run_in_child(target: str, kwargs: Mapping[str, Any], limits: ChildLimits, *,
                 cancel: threading.Event | None = None,
                 progress: Callable[[Any], None] | None = None) -> Any:
    """Call ``target`` ("package.module:function") with JSON-able ``kwargs`` in a limited child.

    Returns the function's JSON-able return value; raises ChildError otherwise
    (ChildFailure.CANCELLED when ``cancel`` was set; the child is killed).
    ``progress`` receives each value the work passes to ``report_progress``,
    on the calling thread while it waits.
    """
    if cancel is not None and cancel.is_set():
        raise ChildError(ChildFailure.CANCELLED, "cancelled before it started")
    request = json.dumps({"target": target, "kwargs": dict(kwargs), "memory_mb": limits.memory_mb})
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as stdout_file, tempfile.TemporaryFile() as stderr_file, \
            tempfile.TemporaryFile() as stdin_file:
        stdin_file.write(request.encode("utf-8"))
        stdin_file.seek(0)
        try:
            child = subprocess.Popen([sys.executable, "-m", __name__], stdin=stdin_file, stdout=stdout_file,
                                     stderr=stderr_file, pass_fds=(write_end,),
                                     env={**os.environ, **_CHILD_ENV, _PROGRESS_FD_ENV: str(write_end)})
        finally:
            os.close(write_end)  # the child holds the only write end: end of file means it is gone
        try:
            _wait(child, read_end, limits, cancel, progress)
        finally:
            os.close(read_end)
            if child.poll() is None:
                child.kill()
                child.wait()
        stdout, stderr = _tail(stdout_file, _STDOUT_TAIL), _tail(stderr_file, _STDERR_TAIL)
    result = _parse_result(stdout)
    if result is None:
        if child.returncode < 0:
            raise ChildError(ChildFailure.CRASHED, f"crashed ({_signal_name(-child.returncode)}); with a memory "
                             f"limit of {limits.memory_mb} MiB this is most likely the model running out of it")
        tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        if "MemoryError" in stderr or "bad_alloc" in stderr:
            raise ChildError(ChildFailure.MEMORY, f"ran out of its memory limit of {limits.memory_mb} MiB")
        raise ChildError(ChildFailure.CRASHED, f"exited with code {child.returncode} without a result: {tail}")
    if result["ok"]:
        return result["value"]
    failure = ChildFailure.MEMORY if result["memory"] else ChildFailure.ERROR
    message = (f"ran out of its memory limit of {limits.memory_mb} MiB ({result['message']})"
               if result["memory"] else result["message"])
    raise ChildError(failure, message, result["type"])


def report_progress(value: Any) -> None:
    """From work running in a child: hand ``value`` (JSON-able) to the parent's ``progress``; else a no-op."""
    if _progress_fd is None:
        return
    line = json.dumps(value).encode("utf-8") + b"\n"
    if len(line) <= _PROGRESS_LINE_MAX:
        os.write(_progress_fd, line)


def _wait(child: subprocess.Popen, progress_fd: int, limits: ChildLimits, cancel: threading.Event | None,
          progress: Callable[[Any], None] | None) -> None:
    """Until the child exits: pass its progress on; kill it at the deadline or on cancel (and raise)."""
    deadline = time.monotonic() + limits.seconds
    pending, open_pipe = b"", True
    while True:
        if cancel is not None and cancel.is_set():
            raise ChildError(ChildFailure.CANCELLED, "cancelled by the caller and stopped")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChildError(ChildFailure.TIMEOUT, f"did not finish within its time limit of {limits.seconds:g} s "
                             "and was stopped")
        if not open_pipe:
            try:
                child.wait(timeout=min(POLL_PERIOD_S, remaining))
                return
            except subprocess.TimeoutExpired:
                continue
        readable, _, _ = select.select([progress_fd], [], [], min(POLL_PERIOD_S, remaining))
        if not readable:
            continue
        chunk = os.read(progress_fd, 1 << 16)
        if not chunk:
            open_pipe = False
            continue
        *lines, pending = (pending + chunk).split(b"\n")
        pending = pending if len(pending) <= _PROGRESS_LINE_MAX else b""
        for line in lines:
            if progress is not None:
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                progress(value)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(file: Any, size: int) -> str:
    """The last ``size`` bytes the child wrote to ``file``, decoded leniently."""
    end = file.seek(0, os.SEEK_END)
    file.seek(max(0, end - size))
    return file.read().decode("utf-8", errors="replace")


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            try:
                return json.loads(line[len(_RESULT_MARK):])
            except ValueError:
                return None
    return None


_MEMORY_WORDS = ("bad_alloc", "Failed to allocate", "out of memory", "std::bad_alloc", "MemoryError")


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    # The work imports this module anew (this copy runs as __main__): tell that copy where progress goes.
    # Not inherited, so processes the work starts neither write to it nor keep it open.
    descriptor = int(os.environ.pop(_PROGRESS_FD_ENV))
    os.set_inheritable(descriptor, False)
    importlib.import_module(__spec__.name)._progress_fd = descriptor
    limit = request["memory_mb"] * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    module_name, _, function_name = request["target"].partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        result: dict[str, Any] = {"ok": True, "value": function(**request["kwargs"])}
    except MemoryError as exc:
        result = {"ok": False, "type": "MemoryError", "message": str(exc) or "MemoryError", "memory": True}
    except Exception as exc:  # the child's whole job is to report any failure to the parent
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result = {"ok": False, "type": type(exc).__name__, "message": text,
                  "memory": any(word in str(exc) for word in _MEMORY_WORDS)}
    sys.stdout.write("\n" + _RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _child_main()
