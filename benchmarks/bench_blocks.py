"""Occluded passes unit by unit over a chunk, or block of rows by block of rows.

Why ``Chunk.occluded`` works in blocks of ``CACHED_ROWS`` jets (hepaudit.model.session) (docs/dask.md): one
onnxruntime session (``--threads``, default 1 as in a Dask worker) scores a chunk of TopoDNN
inputs with each of the 90 inputs set to its mean in turn, either one input after the other
over the whole chunk, or every input in a block of rows before the next block. Run two
copies at once to see whether two processes slow each other down:

    python benchmarks/bench_blocks.py & python benchmarks/bench_blocks.py; wait
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, default=25_000, help="jets in the chunk (data.step_size)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each order counts")
    args = parser.parse_args()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(EXAMPLE_MODEL), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).normal(size=(args.jets, 90)).astype(np.float32)
    mean = x.mean(axis=0)

    def occlude(block: np.ndarray) -> None:
        for k in range(x.shape[1]):
            saved = block[:, k].copy()
            block[:, k] = mean[k]
            session.run(None, {name: block})
            block[:, k] = saved

    orders = {"unit by unit over the chunk": lambda: occlude(x)}
    for rows in (8192, 4096, 2048, 1024, 512, 256):
        orders[f"blocks of {rows} jets"] = lambda rows=rows: [occlude(x[s:s + rows]) for s in range(0, len(x), rows)]
    best = {k: float("inf") for k in orders}
    for _ in range(args.rounds):
        for label, run in orders.items():
            t0 = time.perf_counter()
            run()
            best[label] = min(best[label], time.perf_counter() - t0)
    print(f"machine: {machine()}; {args.jets} jets x {x.shape[1]} occlusions, {args.threads} onnxruntime thread(s)")
    for label, seconds in best.items():
        print(f"{label:28s} {seconds:6.2f} s = {seconds / args.jets / x.shape[1] * 1e6:.3f} us per jet and pass")


if __name__ == "__main__":
    main()
