"""Keep a long audit's resident memory close to what it holds: glibc's mmap threshold.

Every chunk allocates and frees tens of arrays of 4-40 MB (the branches read, the built
inputs, the occluded scores). glibc serves an allocation from its heap when it is below
the *mmap threshold*, and raises that threshold to the size of each large block freed (up
to 32 MB), so after the first chunks nearly all of them come from the heap. The heap then
fragments and stays resident: the local 2M-jet ΔAUC + MAD audit ended at 1.4 GB for a
0.7 GB state, and ``malloc_trim`` got little of it back (docs/dask.md, "Memory").

A fixed threshold (``mallopt(M_MMAP_THRESHOLD, ...)``, which also stops the raising) gives
every array at or above it its own mapping, returned to the system when freed. The price
is fresh pages for each such array, a few percent of a TopoDNN audit's time.
``[execution] malloc_mmap_threshold_mb`` sets it (0: leave malloc alone). It is a process
setting: hepaudit applies it when an audit starts (in a Dask worker, when the worker first
builds its audit context) and never lowers a threshold set by the environment
(``MALLOC_MMAP_THRESHOLD_``). Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
_applied: int | None = None


def set_mmap_threshold(megabytes: int) -> bool:
    """Fix glibc's mmap threshold at ``megabytes`` MB for this process; True if it was set.

    Does nothing (False) for 0, off Linux, without glibc, or when the environment already
    sets ``MALLOC_MMAP_THRESHOLD_`` (the user's choice wins).
    """
    global _applied
    if megabytes <= 0 or not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if _applied == megabytes:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, megabytes << 20) != 1:
        return False
    _applied = megabytes
    return True
