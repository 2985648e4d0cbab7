"""glibc's heap reused inside a Dask task, and handed back to the system when it ends.

Dask's nannies start every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory
goes back to the system. Setting it also stops glibc from raising its mmap threshold as it
does by default, so every array over 128 kB becomes a fresh mapping, page-faulted and zeroed
anew each time it is allocated; a task reading, building and scoring chunks allocates such
arrays at every block, and pays for the page faults each time (docs/dask.md, "Memory").

:func:`reused_heap` wraps a task: while it runs, arrays up to :data:`MMAP_BYTES` come from the
heap and are reused block after block (the mmap and trim thresholds raised with ``mallopt``);
when it ends the thresholds are Dask's again and ``malloc_trim`` hands the free heap back, so
between tasks the worker holds what it held with Dask's setting. It does nothing where the
environment does not set ``MALLOC_TRIM_THRESHOLD_`` (glibc then adapts on its own), nor off
glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

#: arrays up to this size come from the heap inside a task (glibc's own ceiling when it adapts):
#: a block's temporaries and a chunk's branches and inputs; larger ones are still mapped
MMAP_BYTES = 32 << 20
_M_TRIM_THRESHOLD = -1  # mallopt's parameters (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3
_GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's initial mmap threshold, fixed once the env var is set

_lock = threading.Lock()
_inside = 0  # tasks running now in this process (a worker with several threads)


@functools.cache  # once per process: find_library runs ldconfig, and the environment is fixed at start
def _libc() -> Any | None:
    """glibc, when this process runs on it and its environment sets Dask's variable."""
    if not os.environ.get("MALLOC_TRIM_THRESHOLD_") or not hasattr(os, "confstr"):
        return None
    try:
        if "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
            return None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, ValueError):
        return None


def _set(libc: Any, trim: int, mmap: int) -> None:
    libc.mallopt(_M_TRIM_THRESHOLD, trim)
    libc.mallopt(_M_MMAP_THRESHOLD, mmap)


def _environment_thresholds() -> tuple[int, int]:
    """The thresholds the environment set (Dask's trim threshold; glibc's initial mmap one)."""
    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    return number("MALLOC_TRIM_THRESHOLD_", 65536), number("MALLOC_MMAP_THRESHOLD_", _GLIBC_MMAP_THRESHOLD)


@contextmanager
def reused_heap() -> Iterator[None]:
    """Inside: glibc reuses its heap for arrays up to :data:`MMAP_BYTES`; after the last task
    in this process leaves: the environment's thresholds again, and the free heap trimmed."""
    global _inside
    libc = _libc()
    if libc is None:
        yield
        return
    with _lock:
        _inside += 1
        if _inside == 1:
            _set(libc, 2 * MMAP_BYTES, MMAP_BYTES)
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                _set(libc, *_environment_thresholds())
                libc.malloc_trim(0)


F = TypeVar("F", bound=Callable[..., Any])


def reusing_heap(task: F) -> F:
    """``task`` run inside :func:`reused_heap` (a Dask task function, pickled by its name, whose
    first argument is the audit's worker spec: ``[execution] reuse_heap = false`` leaves it out)."""
    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        config = getattr(args[0], "config", None) if args else None
        if config is not None and not config.execution.reuse_heap:
            return task(*args, **kwargs)
        with reused_heap():
            return task(*args, **kwargs)

    return cast(F, run)
