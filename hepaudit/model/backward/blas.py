"""Limit numpy's OpenBLAS to a few threads while the backward pass runs.

The backward engine alternates with onnxruntime (forward of a chunk, backward of the
chunk, next forward, ...). Multi-threaded OpenBLAS hurts that loop: its idle worker
threads busy-wait for a while after every call and then compete with onnxruntime's own
thread pool for the same cores, and the backward's matrices are skinny (one dimension is
a layer width of 1..300) so the second thread gains little. benchmarks/bench_lrp.py
measured the LRP backward about twice as fast with one BLAS thread on a 2-core machine.

numpy ships no API for this; like threadpoolctl we call OpenBLAS's own setter through
ctypes, on the library numpy has loaded. Any failure (another BLAS, no symbol, not Linux)
leaves BLAS as it is: the result never depends on this, only the speed.
"""

from __future__ import annotations

import ctypes
import os
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


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS on at most ``n`` threads (None: leave it alone)."""
    controls = _controls() if n else None
    if controls is None:
        yield
        return
    local, set_global, get_global = controls
    if local is not None:
        previous = local(int(n))  # type: ignore[arg-type]
        try:
            yield
        finally:
            local(previous)
        return
    previous = get_global()
    set_global(int(n))  # type: ignore[arg-type]
    try:
        yield
    finally:
        set_global(previous)
