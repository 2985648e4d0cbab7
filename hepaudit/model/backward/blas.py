"""Limit numpy's OpenBLAS to a few threads while the backward pass runs.

The backward engine alternates with onnxruntime (forward of a chunk, backward of the
chunk, next forward, ...). Multi-threaded OpenBLAS hurts that loop: its idle worker
threads busy-wait for a while after every call and then compete with onnxruntime's own
thread pool for the same cores, and the backward's matrices are skinny (one dimension is
a layer width of 1..300) so the second thread gains little. benchmarks/bench_lrp.py
measured the LRP backward about twice as fast with one BLAS thread on a 2-core machine.

numpy ships no API for this; like threadpoolctl we call OpenBLAS's own setter through
ctypes, on the library numpy has loaded. Any failure (another BLAS, no symbol, not Linux)
leaves BLAS as it is: the results then differ at most in the last bits (a product split
over more threads may add its terms in another order), the speed more.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

# thread-local setter first (OpenBLAS ≥ 0.3.27: only this thread's calls, returns the old
# value), then the global setter/getter pairs under the symbol prefixes numpy's wheels use
_LOCAL = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local")
_GLOBAL = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _loaded_openblas() -> list[str]:
    import numpy  # noqa: F401  (loads numpy's BLAS so it appears in the process map)

    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    return paths


@lru_cache(maxsize=1)
def _controls() -> tuple[Any, Any, Any] | None:
    """(local setter, global setter, global getter) of numpy's OpenBLAS, or None."""
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        local = next((getattr(lib, s) for s in _LOCAL if hasattr(lib, s)), None)
        pair = next(
            ((getattr(lib, s), getattr(lib, g)) for s, g in _GLOBAL if hasattr(lib, s) and hasattr(lib, g)),
            None,
        )
        if local is None and pair is None:
            continue
        if local is not None:
            local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
        if pair is not None:
            pair[0].argtypes, pair[0].restype = [ctypes.c_int], None
            pair[1].argtypes, pair[1].restype = [], ctypes.c_int
        return local, *(pair or (None, None))
    return None


_lock = threading.Lock()
_holders = 0  # blocks inside blas_threads now, on any thread
_saved = 0  # the thread count to restore when the last one leaves


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS on at most ``n`` threads (None: leave it alone).

    OpenBLAS's thread count is one setting for the whole process (its "local" setter, too,
    changes it for every thread), so the blocks of a block-parallel pass that each set and
    restored it raced: one block's restore let the other's products run on two threads,
    rounded differently and oversubscribing the cores. Entries now hold the setting
    together: the first one in sets it, the last one out restores it, and an entry while it
    is held keeps the holder's count."""
    global _holders, _saved
    controls = _controls() if n else None
    if controls is None:
        yield
        return
    local, set_global, get_global = controls
    with _lock:
        if _holders == 0:
            if local is not None:
                _saved = local(int(n))  # type: ignore[arg-type]
            else:
                _saved = get_global()
                set_global(int(n))  # type: ignore[arg-type]
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                (local or set_global)(_saved)
