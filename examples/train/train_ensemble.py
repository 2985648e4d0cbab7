#!/usr/bin/env python
"""Train an ensemble of TopoDNNs that differ only in their seed (initialisation and batch
order), for the ``ood_ensemble`` explainer. Same inputs/outputs as ``topodnn.onnx``.

    PYTHONPATH=. python examples/train/train_ensemble.py --seeds 1 2 3 4 5 \
        --out-dir examples/models/ensemble
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import train_topodnn  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(ap, "")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--out-dir", default=str(common.MODELS / "ensemble"))
    args = ap.parse_args(argv)

    t0 = time.time()
    x, labels, tr, va = train_topodnn.build_data(args.train, args.max_jets)
    print(f"inputs {x.shape} built in {time.time() - t0:.1f} s", flush=True)
    for seed in args.seeds:
        out = Path(args.out_dir) / f"topodnn_seed{seed}.onnx"
        model, info = train_topodnn.train_one(x, labels, tr, va, seed, args,
                                              prefix=f"[seed {seed}] ")
        print(f"[seed {seed}] validation: {info['validation']}", flush=True)
        train_topodnn.export(model, out)
        train_topodnn.sidecar(out, f"TopoDNN ensemble member (seed {seed})",
                              "TopoDNN 90-300-102-12-6-1 (ReLU, sigmoid); one of the "
                              "ensemble members that differ only in their seed", info,
                              {"exporter": "torch.onnx.export(dynamo=False)",
                               "ensemble_seeds": args.seeds})


if __name__ == "__main__":
    main()
