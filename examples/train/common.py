"""Shared helpers for the example training scripts (PyTorch, CPU).

Inputs are always built with :mod:`hepaudit.data.recipes` (``topodnn_arrays`` and
``pfn_arrays``), so training and auditing share one implementation of the preprocessing.
PyTorch is only needed here, never by hepaudit itself.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hepaudit.data.recipes import pfn_arrays, topodnn_arrays  # noqa: E402

EXAMPLES = REPO / "examples"
MODELS = EXAMPLES / "models"
DEFAULT_TRAIN = EXAMPLES / "work" / "top_qcd_train.root"
DEFAULT_TEST = EXAMPLES / "data" / "top_qcd_test.root"
MOMENTUM = ("part_px", "part_py", "part_pz", "part_energy")


def load_jets(path: str | os.PathLike, max_jets: int | None = None):
    """Read the constituents' four-momenta and the labels from a ``jets`` tree."""
    import uproot

    with uproot.open(path) as f:
        tree = f["jets"]
        arrays = tree.arrays([*MOMENTUM, "is_signal"], entry_stop=max_jets)
    labels = np.asarray(arrays["is_signal"], dtype=np.int64)
    return arrays, labels


def topodnn_inputs(arrays) -> np.ndarray:
    return topodnn_arrays(*(arrays[k] for k in MOMENTUM), max_particles=30)


def pfn_inputs(arrays) -> tuple[np.ndarray, np.ndarray]:
    return pfn_arrays(*(arrays[k] for k in MOMENTUM), max_particles=60)


def seed_everything(seed: int, threads: int = 2) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def split_indices(n: int, val_fraction: float = 0.1, seed: int = 0):
    """A fixed train/validation split (same for every model: seed 0)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


# --- metrics (numpy only; the tests use the same definitions) -----------------------------

def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties get average ranks)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rejection_at(scores: np.ndarray, labels: np.ndarray, eff_s: float = 0.3) -> float:
    """Background rejection 1/eps_B at signal efficiency ``eff_s`` (inf if no bkg passes)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    cut = np.quantile(scores[labels], 1.0 - eff_s)
    eps_b = np.mean(scores[~labels] > cut)
    return float("inf") if eps_b == 0 else float(1.0 / eps_b)


def accuracy(scores: np.ndarray, labels: np.ndarray, cut: float = 0.5) -> float:
    return float(np.mean((np.asarray(scores).ravel() > cut) == np.asarray(labels).astype(bool)))


def summary(scores: np.ndarray, labels: np.ndarray) -> dict:
    """AUC, accuracy (cut 0.5) and 1/eps_B at eps_S = 0.3 (None if no background passes)."""
    rej = rejection_at(scores, labels, 0.3)
    return {"auc": round(auc(scores, labels), 4),
            "accuracy": round(accuracy(scores, labels), 4),
            "rejection_at_30": None if np.isinf(rej) else round(rej, 1)}


# --- training loop ---------------------------------------------------------------------------

def fit(model, loss_fn, train_tensors, val_tensors, *, epochs=20, batch_size=1024, lr=2e-3,
        patience=3, seed=0, log_prefix=""):
    """Adam with early stopping on the validation loss; restores the best weights.

    ``train_tensors``/``val_tensors`` are tuples whose last element is the target;
    ``loss_fn(model, *tensors)`` returns the mean loss of a batch.
    """
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    gen = torch.Generator().manual_seed(seed)
    n = len(train_tensors[0])
    best, best_state, bad = float("inf"), None, 0
    history = []
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model, *(t[idx] for t in train_tensors))
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val = 0.0
            nv = len(val_tensors[0])
            for start in range(0, nv, 8192):
                sl = slice(start, start + 8192)
                val += loss_fn(model, *(t[sl] for t in val_tensors)).item() * len(
                    val_tensors[0][sl])
            val /= nv
        sched.step(val)
        history.append({"epoch": epoch + 1, "train_loss": total / n, "val_loss": val})
        print(f"{log_prefix}epoch {epoch + 1:2d} train {total / n:.5f} val {val:.5f} "
              f"lr {opt.param_groups[0]['lr']:.1e} ({time.time() - t0:.0f} s)", flush=True)
        if val < best - 1e-5:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs_run": len(history), "best_val_loss": best,
            "train_seconds": round(time.time() - t0, 1), "history": history}


def add_common_args(ap, default_out: str) -> None:
    """The options every training script shares."""
    ap.add_argument("--train", default=str(DEFAULT_TRAIN), help="training ROOT file")
    ap.add_argument("--max-jets", type=int, default=None, help="use the first N jets")
    ap.add_argument("--epochs", type=int, default=20, help="maximum epochs")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    ap.add_argument("--patience", type=int, default=3, help="early-stopping patience")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--out", default=default_out)


def settings(args) -> dict:
    return {"epochs_max": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "patience": args.patience, "optimizer": "Adam, ReduceLROnPlateau(0.5, 1)",
            "train_file": Path(args.train).name, "max_jets": args.max_jets}


def predict(model, *arrays, batch_size=8192) -> np.ndarray:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(arrays[0]), batch_size):
            outs.append(model(*(torch.from_numpy(a[start:start + batch_size])
                                for a in arrays)).numpy())
    return np.concatenate(outs)


# --- ONNX export ---------------------------------------------------------------------------

def export_onnx(model, example_inputs: tuple, path: str | os.PathLike, input_names, output_names,
                dynamo: bool = False) -> None:
    """Export with a dynamic batch dimension (axis 0 of every input and output)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    if dynamo:
        batch = torch.export.Dim("batch", min=1)
        onnx_program = torch.onnx.export(
            model, example_inputs, dynamo=True, input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=tuple({0: batch} for _ in example_inputs))
        onnx_program.save(str(path))
    else:
        axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
        torch.onnx.export(model, example_inputs, str(path), dynamo=False,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes, opset_version=17, do_constant_folding=True)
    # Keep a single self-contained file (small models: no external data).
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path), save_as_external_data=False)
    data = path.with_suffix(path.suffix + ".data")
    if data.exists():
        data.unlink()


def onnx_check(path, feeds: dict, reference: np.ndarray, atol=1e-4) -> float:
    """Run the exported file with onnxruntime and compare with the PyTorch output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    diff = float(np.max(np.abs(out - reference)))
    if diff > atol:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff}")
    return diff


def write_json(path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
