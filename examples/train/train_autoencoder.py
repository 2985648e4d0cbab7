#!/usr/bin/env python
"""Train a dense autoencoder on the TopoDNN inputs (for the ``ood_ae`` explainer).

90 -> 32 -> 8 -> 32 -> 90 (ReLU inside, linear output), mean-squared-error loss, trained on
the training jets of both classes (the in-distribution reference). ONNX: input ``x`` (N, 90),
the TopoDNN inputs exactly as ``topodnn.onnx`` takes them; output ``reconstruction``
(N, 90). The OOD score of a jet is mean((reconstruction - x)^2) over the 90 inputs.

    PYTHONPATH=. python examples/train/train_autoencoder.py --seed 0 \
        --out examples/models/autoencoder.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402
from train_topodnn import INPUTS  # noqa: E402

OUTPUTS = [{"name": "reconstruction", "shape": ["N", 90], "dtype": "float32",
            "meaning": "the reconstructed TopoDNN inputs; OOD score per jet = "
                       "mean over the 90 values of (reconstruction - x)^2"}]


def main(argv=None):
    import torch
    from nets import AutoEncoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(ap, str(common.MODELS / "autoencoder.onnx"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.time()
    arrays, labels = common.load_jets(args.train, args.max_jets)
    x = common.topodnn_inputs(arrays)
    print(f"inputs {x.shape} built in {time.time() - t0:.1f} s", flush=True)
    tr, va = common.split_indices(len(labels))
    common.seed_everything(args.seed, args.threads)
    model = AutoEncoder()
    model.norm.set(x[tr].mean(axis=0), x[tr].std(axis=0))
    xt = torch.from_numpy(x)

    def loss_fn(m, xb, target):
        return torch.mean((m(xb) - target) ** 2)

    info = common.fit(model, loss_fn, (xt[tr], xt[tr]), (xt[va], xt[va]), epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                      seed=args.seed)
    before = common.predict(model, x[va])
    model.fold_normalization()  # the exported network takes the raw recipe inputs
    rec = common.predict(model, x[va])
    assert np.allclose(before, rec, atol=1e-4), "folding changed the outputs"
    info["validation"] = {"mse": float(np.mean((rec - x[va]) ** 2)), "n_jets": int(len(va))}
    info.update(train_jets=int(len(tr)), seed=args.seed, **common.settings(args))
    print(f"validation: {info['validation']}", flush=True)

    example = torch.from_numpy(x[va[:4]].copy())
    ref = model(example).detach().numpy()
    common.export_onnx(model, (example,), args.out, ["x"], ["reconstruction"])
    common.onnx_check(args.out, {"x": example.numpy()}, ref)
    common.write_json(Path(args.out).with_suffix(".json"), {
        "model": Path(args.out).name, "name": "TopoDNN-input autoencoder",
        "description": "dense autoencoder 90-32-8-32-90 (ReLU inside, linear output) on the "
                       "TopoDNN inputs, trained with MSE on top and QCD training jets",
        "inputs": INPUTS, "outputs": OUTPUTS, "exporter": "torch.onnx.export(dynamo=False)",
        "training": {k: v for k, v in info.items() if k != "history"}})
    print(f"exported {args.out}", flush=True)


if __name__ == "__main__":
    main()
