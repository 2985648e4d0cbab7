"""Passes over row blocks on several Python threads, each block on a single-threaded session.

onnxruntime releases the GIL inside ``run``, and so does numpy in its array loops. For the
small models the OOD explainers run many times over the same jets (ensemble members, the
autoencoder), T Python threads each scoring their own block of rows with a one-thread
session keep T cores busy with no synchronisation inside a forward pass, where one session
spreading every call over T threads waits for its slowest thread at every layer. On 2
cores, five TopoDNN members over 200k jets (``benchmarks/bench_ood.py``, which prints both):
0.49–0.65 s in blocks on 2 threads, against 0.55–0.73 s for default sessions at their
faster batch size (65536 or 4096 rows), faster by 0.03–0.18 s in each of eight runs; in a
plain loop over the same members, 0.47–0.52 s against 0.68–0.74 s for 4096-row calls in one
two-thread session.

Each block writes only its own rows of preallocated outputs, and anything summed over
jets is summed per block and then added in block order, so results do not depend on the
number of threads or on which thread ran which block.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import onnxruntime as ort
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of it
    ort = lazy_module("onnxruntime")


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def block_threads(threads: int) -> int:
    """Threads for block-parallel passes: the configured onnxruntime threads (``model.threads``),
    or, at 0 (onnxruntime's default: every core), the cores this process may run on."""
    return threads if threads > 0 else usable_cores()


def shared_rows(rows: int) -> int:
    """Rows per block of a block-parallel pass: half of ``rows`` (what stays in cache for one
    pass), as two blocks in flight share the cache; 2048 for CACHED_ROWS.

    Fixed, not taken from the number of threads: a jet's outputs can differ in the last bit
    with its place in a block (onnxruntime's and BLAS's kernels treat row tails apart), so
    the same blocks on any number of threads, or on Dask workers, give the same numbers.
    """
    return max(64, rows // 2)


def block_starts(n: int, rows: int) -> range:
    """First row of each block of ``rows`` rows of ``n``."""
    return range(0, n, max(1, rows))


def for_blocks(n: int, rows: int, threads: int, work: Callable[[int, int, int], None]) -> None:
    """``work(block, start, stop)`` for every block of ``rows`` rows of ``n``.

    With ``threads`` > 1 and more than one block, blocks run on that many threads in any
    order; the first exception raised by a block is raised here once every block is done.
    """
    starts = block_starts(n, rows)
    if threads <= 1 or len(starts) <= 1:
        for i, start in enumerate(starts):
            work(i, start, min(start + rows, n))
        return
    with ThreadPoolExecutor(min(threads, len(starts)), thread_name_prefix="hepaudit-block") as pool:
        futures = [pool.submit(work, i, start, min(start + rows, n)) for i, start in enumerate(starts)]
    for future in futures:
        future.result()


def for_blocks_helped(n: int, rows: int, threads: int, work: Callable[[int, int, int], None],
                      helping: Callable[[], bool]) -> None:
    """:func:`for_blocks` where the calling thread takes the blocks in order and up to
    ``threads - 1`` helpers take blocks only while ``helping()`` holds (asked before each
    block; a helper finding it false looks again 2 ms later): for work that should use idle
    cores and leave busy ones alone. The first exception raised by a block is raised here."""
    starts = block_starts(n, rows)
    if threads <= 1 or len(starts) <= 1:
        for_blocks(n, rows, 1, work)
        return
    lock = threading.Lock()
    taken = [0]
    errors: list[BaseException] = []

    def take() -> int | None:
        with lock:
            if taken[0] >= len(starts) or errors:
                return None
            taken[0] += 1
            return taken[0] - 1

    def run(helper: bool) -> None:
        while True:
            if helper and not helping():
                if taken[0] >= len(starts) or errors:
                    return
                time.sleep(0.002)
                continue
            i = take()
            if i is None:
                return
            try:
                work(i, starts[i], min(starts[i] + rows, n))
            except BaseException as exc:  # raised by the caller once every thread is done
                errors.append(exc)
                return

    helpers = [threading.Thread(target=run, args=(True,), name="hepaudit-helper", daemon=True)
               for _ in range(min(threads, len(starts)) - 1)]
    for h in helpers:
        h.start()
    run(False)
    for h in helpers:
        h.join()
    if errors:
        raise errors[0]


def one_thread_session(model: bytes | str, log_severity: int = 3) -> ort.InferenceSession:
    """A CPU onnxruntime session for block-parallel passes: one thread (the blocks run on
    several Python threads instead), and idle threads asleep rather than spinning, since
    numpy work runs between the calls. ``model``: serialized bytes or a path."""
    opts = ort.SessionOptions()
    opts.log_severity_level = log_severity
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
