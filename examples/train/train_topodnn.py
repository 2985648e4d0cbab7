#!/usr/bin/env python
"""Train TopoDNN (30 constituents x (pT, eta, phi), recipe ``topodnn``) and export to ONNX.

ONNX: input ``x`` (N, 90) float32, flattened particle-major (pt_0, eta_0, phi_0, pt_1, ...);
output ``score`` (N, 1), the sigmoid signal score. ``--dynamo-out`` additionally exports
the same network through the dynamo-based exporter (``torch.onnx.export(dynamo=True)``).

    PYTHONPATH=. python examples/train/train_topodnn.py --seed 0 \
        --out examples/models/topodnn.onnx --dynamo-out examples/models/topodnn_dynamo.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402

INPUTS = [{"name": "x", "shape": ["N", 90], "dtype": "float32",
           "meaning": "TopoDNN inputs (recipe 'topodnn', max_particles=30): the 30 leading "
                      "constituents' (pT/1700, eta, phi) after shift to constituent 0, "
                      "rotation of constituent 1 onto the negative phi axis and the eta flip; "
                      "flattened particle-major pt_0, eta_0, phi_0, pt_1, ...; zero padding",
           "preprocess": "topodnn", "max_particles": 30, "features": ["pt", "eta", "phi"],
           "layout": "flat"}]
OUTPUTS = [{"name": "score", "shape": ["N", 1], "dtype": "float32",
            "meaning": "sigmoid score, 1 = top (signal), 0 = QCD"}]


def build_data(train_path, max_jets=None):
    arrays, labels = common.load_jets(train_path, max_jets)
    x = common.topodnn_inputs(arrays)
    tr, va = common.split_indices(len(labels))
    return x, labels, tr, va


def train_one(x, labels, tr, va, seed, args, prefix=""):
    import torch
    from nets import TopoDNN

    common.seed_everything(seed, args.threads)
    model = TopoDNN()
    model.norm.set(x[tr].mean(axis=0), x[tr].std(axis=0))
    y = torch.from_numpy(labels.astype(np.float32))[:, None]
    xt = torch.from_numpy(x)
    bce = torch.nn.BCEWithLogitsLoss()

    def loss_fn(m, xb, yb):
        return bce(m.logits(xb), yb)

    info = common.fit(model, loss_fn, (xt[tr], y[tr]), (xt[va], y[va]), epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                      seed=seed, log_prefix=prefix)
    before = common.predict(model, x[va])
    model.fold_normalization()  # the exported network takes the raw recipe inputs
    val_scores = common.predict(model, x[va])
    assert np.allclose(before, val_scores, atol=1e-4), "folding changed the outputs"
    info["validation"] = common.summary(val_scores, labels[va])
    info["validation"]["n_jets"] = int(len(va))
    info.update(train_jets=int(len(tr)), seed=seed, **common.settings(args))
    return model, info


def export(model, out, dynamo_out=None):
    import torch

    example = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 90)).astype(np.float32))
    ref = model(example).detach().numpy()
    common.export_onnx(model, (example,), out, ["x"], ["score"])
    common.onnx_check(out, {"x": example.numpy()}, ref)
    results = {"legacy": str(out)}
    if dynamo_out:
        try:
            common.export_onnx(model, (example,), dynamo_out, ["x"], ["score"], dynamo=True)
            common.onnx_check(dynamo_out, {"x": example.numpy()}, ref)
            results["dynamo"] = str(dynamo_out)
        except Exception as exc:  # report, do not hide
            print(f"dynamo export failed: {exc!r}", file=sys.stderr)
            results["dynamo_error"] = repr(exc)
    return results


def sidecar(path, name, description, info, extra=None):
    obj = {"model": Path(path).name, "name": name, "description": description,
           "inputs": INPUTS, "outputs": OUTPUTS, "signal": "top (fully contained, see "
           "examples/generate_jets.py)", "training": {k: v for k, v in info.items()
                                                      if k != "history"}}
    obj.update(extra or {})
    common.write_json(Path(path).with_suffix(".json"), obj)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(ap, str(common.MODELS / "topodnn.onnx"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dynamo-out", default=None,
                    help="also export with the dynamo exporter to this path")
    args = ap.parse_args(argv)

    t0 = time.time()
    x, labels, tr, va = build_data(args.train, args.max_jets)
    print(f"inputs {x.shape} built in {time.time() - t0:.1f} s", flush=True)
    model, info = train_one(x, labels, tr, va, args.seed, args)
    print(f"validation: {info['validation']}", flush=True)
    exported = export(model, args.out, args.dynamo_out)
    sidecar(args.out, "TopoDNN", "TopoDNN (arXiv:2210.04371): dense 90-300-102-12-6-1, "
            "ReLU, sigmoid output", info, {"exporter": "torch.onnx.export(dynamo=False)"})
    if "dynamo" in exported:
        sidecar(args.dynamo_out, "TopoDNN (dynamo export)", "the same TopoDNN weights as "
                f"{Path(args.out).name}, exported with torch.onnx.export(dynamo=True)", info,
                {"exporter": "torch.onnx.export(dynamo=True)"})
    print(f"exported {exported}", flush=True)


if __name__ == "__main__":
    main()
