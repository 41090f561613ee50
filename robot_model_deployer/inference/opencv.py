"""OpenCV for resizing and colour conversion, loaded with its bundled OpenBLAS on one thread.

cv2 brings its own OpenBLAS, which reserves buffers per thread when it
loads (on two cores about 180 MiB of address space). Preprocessing never
calls BLAS, and the model check counts address space (RLIMIT_AS), so the
thread count is pinned for that one library load and the caller's
environment is put back afterwards (child processes do not inherit it).
"""
from __future__ import annotations

import os

_KEY = "OPENBLAS_NUM_THREADS"
_before = os.environ.get(_KEY)
os.environ[_KEY] = "1"
try:
    import cv2  # noqa: E402  (after the environment is set, on purpose)
finally:
    if _before is None:
        del os.environ[_KEY]
    else:
        os.environ[_KEY] = _before

__all__ = ["cv2"]
