"""Rows per onnxruntime call for repeated passes, against the rows hepaudit chooses (issue 22).

For each ONNX model given (default: the example TopoDNN and, when ../shared/external-models
is there, DeepJet and DeepDoubleX), scores ``--jets`` random jets in calls of 16 … 4096 rows
on 1 and 2 onnxruntime threads (idle threads not spinning, as hepaudit runs them), best of
``--rounds``, and prints µs per jet for each, next to the model's tensors per jet
(``footprint.bytes_per_jet``) and the rows ``footprint.cache_rows`` gives. The choice is good
where its µs per jet is close to the row's best.

    python benchmarks/bench_rows.py [--jets 4096] [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, machine  # noqa: E402

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external-models"
DEFAULT = [EXAMPLE_MODEL, EXTERNAL / "cms-DeepJet-Run3-12X" / "DeepJet_Run3_122X.onnx",
           EXTERNAL / "cms-DeepDoubleX-102X-V02-BvL" / "BvL.onnx"]
ROWS = (16, 64, 256, 1024, 4096)


def random_feed(model: object, n: int) -> dict[str, np.ndarray]:
    graph = model.graph  # type: ignore[attr-defined]
    constants = {i.name for i in graph.initializer}
    rng = np.random.default_rng(0)
    feed = {}
    for i in graph.input:
        if i.name in constants:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        feed[i.name] = rng.normal(size=[n] + dims[1:]).astype(np.float32)
    return feed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--jets", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    from hepaudit.model.footprint import bytes_per_jet, cache_rows

    print(f"machine: {machine()}; {args.jets} random jets per model, best of {args.rounds}")
    models = args.models or [p for p in DEFAULT if p.exists()]
    for path in models:
        proto = onnx.load(str(path))
        feed = random_feed(proto, args.jets)
        per_jet = bytes_per_jet(proto, {k: v[:1] for k, v in feed.items()}, ["CPUExecutionProvider"])
        for threads in (1, 2):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            opts.log_severity_level = 4
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            cells = []
            for rows in ROWS:
                best = float("inf")
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    for start in range(0, args.jets, rows):
                        session.run(None, {k: v[start:start + rows] for k, v in feed.items()})
                    best = min(best, time.perf_counter() - t0)
                cells.append(f"{rows}: {best / args.jets * 1e6:7.2f}")
            chosen = cache_rows(per_jet, threads)
            print(f"{path.stem:28s} {per_jet / 1024:9.1f} kB/jet  threads {threads}  chosen {chosen:5d} | "
                  f"µs per jet at rows  {'  '.join(cells)}", flush=True)


if __name__ == "__main__":
    main()
