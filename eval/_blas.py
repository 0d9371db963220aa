"""Run numpy's OpenBLAS on one thread for the duration of a ``with`` block.

The neighbour search runs one BLAS product per worker thread and selects the top K in the same
thread. OpenBLAS's own thread pool, left at its default, keeps spinning after each product and
slowed the numba selection about three times on a 2-core machine; one BLAS thread per worker
avoids that. This finds the OpenBLAS libraries loaded in the process (Linux ``/proc/self/maps``)
and calls their documented ``openblas_set_num_threads``, as threadpoolctl does; anywhere else
(another BLAS, another OS) it does nothing and the search is just as exact, only slower.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading

_SUFFIXES = ("", "64_")
_PREFIXES = ("openblas", "scipy_openblas")
_lock = threading.Lock()
# Nested or concurrent users share one limit: the first in saves the setting, the last out
# restores it.
_users = 0
_saved: list = []


def _openblas_controls():
    """``(get, set)`` ctypes functions of each OpenBLAS library mapped into the process."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = sorted({line.split(None, 5)[5].strip() for line in fh
                            if "openblas" in line.lower() and len(line.split(None, 5)) == 6})
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    put.argtypes = [ctypes.c_int]
                    controls.append((get, put))
    return controls


@contextlib.contextmanager
def single_threaded_blas():
    """Context manager: OpenBLAS on one thread inside, its previous setting restored after.

    Yields
    ------
    bool
        Whether an OpenBLAS library was found and limited.
    """
    global _users
    with _lock:
        if _users == 0:
            _saved[:] = [(put, get()) for get, put in _openblas_controls()]
            for put, _ in _saved:
                put(1)
        _users += 1
        found = bool(_saved)
    try:
        yield found
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for put, n in _saved:
                    put(n)
                _saved.clear()
