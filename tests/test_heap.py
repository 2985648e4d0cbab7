"""glibc's heap inside a Dask task (:mod:`hepaudit.executors.heap`), in fresh interpreters
started with the environment Dask's nannies give their workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION")
                                                                                  or ""), reason="glibc only")

# mallinfo2 (glibc 2.33+): bytes in mapped chunks (hblkhd) and in the heap (arena)
PROBE = '''
import ctypes, json
import numpy as np
from hepaudit.executors.heap import reused_heap

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped_for(size):
    before = libc.mallinfo2().hblkhd
    block = np.ones(size // 8)
    grown = libc.mallinfo2().hblkhd - before
    del block
    return grown

out = {"outside": mapped_for(2 << 20)}
with reused_heap():
    out["inside"] = mapped_for(2 << 20)
    out["large_inside"] = mapped_for(64 << 20)
    blocks = [np.ones((1 << 20) // 8) for _ in range(40)]  # 40 MB on the heap, then freed
    del blocks
    out["heap_inside"] = libc.mallinfo2().arena
out["heap_after"] = libc.mallinfo2().arena
out["after"] = mapped_for(2 << 20)

from types import SimpleNamespace as Spec
from hepaudit.executors.heap import reusing_heap

@reusing_heap
def task(spec):  # a Dask task's shape: the worker spec first, [execution] reuse_heap in its config
    return mapped_for(2 << 20)

out["task_on"] = task(Spec(config=Spec(execution=Spec(reuse_heap=True))))
out["task_off"] = task(Spec(config=Spec(execution=Spec(reuse_heap=False))))
print(json.dumps(out))
'''


def _probe(env: dict[str, str]) -> dict[str, int]:
    import json

    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "mallinfo2" in done.stderr:
        pytest.skip("glibc without mallinfo2")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@glibc
def test_a_task_takes_its_arrays_from_the_heap_and_gives_the_heap_back() -> None:
    """With Dask's MALLOC_TRIM_THRESHOLD_ every 2 MB array is a fresh mapping; inside
    ``reused_heap`` it comes from the heap (arrays over 32 MB are still mapped), and once the
    task ends the freed heap goes back to the system and arrays are mapped again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    seen = _probe({**env, "MALLOC_TRIM_THRESHOLD_": "65536"})
    assert seen["outside"] >= 2 << 20 and seen["inside"] == 0 and seen["large_inside"] >= 64 << 20
    assert seen["heap_inside"] >= 40 << 20 and seen["heap_after"] < 8 << 20
    assert seen["after"] >= 2 << 20
    assert seen["task_on"] == 0 and seen["task_off"] >= 2 << 20  # [execution] reuse_heap = false: as Dask set it


@glibc
def test_without_dasks_setting_nothing_is_changed() -> None:
    """A process whose glibc adapts its thresholds by itself (no MALLOC_TRIM_THRESHOLD_) is left
    to it: after the task a 2 MB array still comes from the heap (the freed ones raised glibc's
    threshold), where fixing the thresholds would have mapped it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    seen = _probe(env)
    assert seen["outside"] >= 2 << 20 and seen["after"] == 0
