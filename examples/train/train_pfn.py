#!/usr/bin/env python
"""Train a Particle Flow Network (recipe ``pfn``, 60 constituents) and export to ONNX.

ONNX: inputs ``features`` (N, 60, 3) float32 = (pT/sum pT, eta - eta_jet, phi - phi_jet)
and ``mask`` (N, 60) float32 (1 = real constituent); output ``prob`` (N, 2) softmax,
column 1 = signal (top), column 0 = QCD.

    PYTHONPATH=. python examples/train/train_pfn.py --seed 0 --out examples/models/pfn.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402

INPUTS = [
    {"name": "features", "shape": ["N", 60, 3], "dtype": "float32",
     "meaning": "PFN inputs (recipe 'pfn', max_particles=60): per constituent "
                "(pT / sum pT, eta - eta_jet, phi - phi_jet wrapped to [-pi, pi)), the sums "
                "and the jet axis over all constituents; pT-ordered, zero padding",
     "preprocess": "pfn", "max_particles": 60, "features": ["pt_frac", "deta", "dphi"],
     "layout": "particles"},
    {"name": "mask", "shape": ["N", 60], "dtype": "float32",
     "meaning": "1.0 for a real constituent, 0.0 for padding (of 'features')", "kind": "mask"},
]
OUTPUTS = [{"name": "prob", "shape": ["N", 2], "dtype": "float32",
            "meaning": "softmax probabilities: column 0 = QCD, column 1 = top (signal)"}]


def main(argv=None):
    import torch
    from nets import PFN

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(ap, str(common.MODELS / "pfn.onnx"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.time()
    arrays, labels = common.load_jets(args.train, args.max_jets)
    feats, mask = common.pfn_inputs(arrays)
    del arrays
    print(f"inputs {feats.shape} built in {time.time() - t0:.1f} s", flush=True)
    tr, va = common.split_indices(len(labels))

    common.seed_everything(args.seed, args.threads)
    model = PFN()
    real = feats[tr][mask[tr] > 0]  # standardise on real constituents only
    model.norm.set(real.mean(axis=0), real.std(axis=0))
    del real
    f_t, m_t = torch.from_numpy(feats), torch.from_numpy(mask)
    y = torch.from_numpy(labels)
    ce = torch.nn.CrossEntropyLoss()

    def loss_fn(m, fb, mb, yb):
        return ce(m.logits(fb, mb), yb)

    info = common.fit(model, loss_fn, (f_t[tr], m_t[tr], y[tr]), (f_t[va], m_t[va], y[va]),
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      patience=args.patience, seed=args.seed)
    before = common.predict(model, feats[va], mask[va])
    model.fold_normalization()  # the exported network takes the raw recipe inputs
    val = common.predict(model, feats[va], mask[va])
    assert np.allclose(before, val, atol=1e-4), "folding changed the outputs"
    val = val[:, 1]
    info["validation"] = common.summary(val, labels[va])
    info["validation"]["n_jets"] = int(len(va))
    info.update(train_jets=int(len(tr)), seed=args.seed, **common.settings(args))
    print(f"validation: {info['validation']}", flush=True)

    ex_f = torch.from_numpy(feats[va[:4]].copy())
    ex_m = torch.from_numpy(mask[va[:4]].copy())
    ref = model(ex_f, ex_m).detach().numpy()
    common.export_onnx(model, (ex_f, ex_m), args.out, ["features", "mask"], ["prob"])
    common.onnx_check(args.out, {"features": ex_f.numpy(), "mask": ex_m.numpy()}, ref)
    common.write_json(Path(args.out).with_suffix(".json"), {
        "model": Path(args.out).name, "name": "PFN",
        "description": "Particle Flow Network (arXiv:1810.05165): Phi 3-100-100-64 per "
                       "particle (ReLU), masked sum, F 64-100-100-2 (ReLU), softmax",
        "inputs": INPUTS, "outputs": OUTPUTS,
        "signal": "top (fully contained, see examples/generate_jets.py)",
        "exporter": "torch.onnx.export(dynamo=False)",
        "training": {k: v for k, v in info.items() if k != "history"}})
    print(f"exported {args.out}", flush=True)


if __name__ == "__main__":
    main()
