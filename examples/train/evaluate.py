#!/usr/bin/env python
"""Evaluate the committed ONNX models on the committed samples; write metrics.json and the
metrics table of examples/models/README.md (between the ``metrics`` markers).

Needs only numpy, uproot, awkward, onnxruntime and hepaudit (no torch). Inputs are rebuilt
from the ROOT branches with ``hepaudit.data.recipes``, exactly as tests/test_examples.py does.

    PYTHONPATH=. python examples/train/evaluate.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402

BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"
SHIFTED = common.EXAMPLES / "data" / "shifted_wqcd.root"


def classifier_models(models_dir: Path) -> list[str]:
    names = ["topodnn.onnx", "topodnn_dynamo.onnx", "pfn.onnx"]
    names += sorted(p.relative_to(models_dir).as_posix()
                    for p in (models_dir / "ensemble").glob("*.onnx"))
    return [n for n in names if (models_dir / n).exists()]


def run(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: feeds[k] for k in names})[0]


def signal_score(out: np.ndarray) -> np.ndarray:
    return out[:, 1] if out.shape[1] == 2 else out[:, 0]


def feeds_for(path: Path) -> dict:
    arrays, labels = common.load_jets(path)
    feats, mask = common.pfn_inputs(arrays)
    return {"x": common.topodnn_inputs(arrays), "features": feats, "mask": mask}, labels


def markdown(metrics: dict) -> str:
    lines = [f"Test sample: `{metrics['test_sample']}` ({metrics['n_signal']} top + "
             f"{metrics['n_background']} QCD jets, generator seed independent of training).",
             "",
             "| model | test AUC | test accuracy | test 1/ε_B at ε_S=0.3 | "
             "validation AUC | W-vs-QCD AUC (shifted) | epochs | train time [s] |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["classifiers"].items():
        rej = "∞ (no QCD jet passes)" if m["rejection_at_30"] is None else m["rejection_at_30"]
        lines.append(f"| `{name}` | {m['auc']:.4f} | {m['accuracy']:.4f} | {rej} | "
                     f"{m.get('validation_auc', float('nan')):.4f} | "
                     f"{m['shifted_auc']:.4f} | {m.get('epochs_run', '')} | "
                     f"{m.get('train_seconds', '')} |")
    ae = metrics.get("autoencoder")
    if ae:
        lines += ["", "| autoencoder | test MSE | shifted MSE | shifted W jets MSE | "
                  "OOD AUROC (shifted W vs test top) | epochs | train time [s] |",
                  "|---|---|---|---|---|---|---|",
                  f"| `{ae['model']}` | {ae['mse_test']:.6f} | {ae['mse_shifted']:.6f} | "
                  f"{ae['mse_shifted_signal']:.6f} | {ae['ood_auroc_w_vs_top']:.4f} | "
                  f"{ae.get('epochs_run', '')} | {ae.get('train_seconds', '')} |"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(common.MODELS))
    ap.add_argument("--test", default=str(common.DEFAULT_TEST))
    ap.add_argument("--shifted", default=str(SHIFTED))
    args = ap.parse_args(argv)
    models_dir = Path(args.models)

    feeds, labels = feeds_for(Path(args.test))
    sfeeds, slabels = feeds_for(Path(args.shifted))
    metrics = {"test_sample": Path(args.test).resolve().relative_to(common.REPO).as_posix(),
               "n_signal": int(labels.sum()), "n_background": int((labels == 0).sum()),
               "shifted_sample": Path(args.shifted).resolve().relative_to(common.REPO).as_posix(),
               "definitions": {
                   "auc": "Mann-Whitney U / (n_sig n_bkg), ties averaged",
                   "accuracy": "fraction of jets with (score > 0.5) == is_signal",
                   "rejection_at_30": "1/eps_B at the score cut keeping 30% of signal; "
                                      "null if no background jet passes",
                   "mse": "mean over jets and the 90 inputs of (reconstruction - x)^2"},
               "classifiers": {}}
    for name in classifier_models(models_dir):
        path = models_dir / name
        m = common.summary(signal_score(run(path, feeds)), labels)
        m["shifted_auc"] = round(common.auc(signal_score(run(path, sfeeds)), slabels), 4)
        side = path.with_suffix(".json")
        if side.exists():
            tr = json.loads(side.read_text()).get("training", {})
            m["validation_auc"] = tr.get("validation", {}).get("auc")
            m["epochs_run"] = tr.get("epochs_run")
            m["train_seconds"] = tr.get("train_seconds")
        metrics["classifiers"][name] = m
        print(name, m, flush=True)
    ae_path = models_dir / "autoencoder.onnx"
    if ae_path.exists():
        def mse(x):
            return np.mean((run(ae_path, {"x": x}) - x) ** 2, axis=1)
        e_test, e_shift = mse(feeds["x"]), mse(sfeeds["x"])
        is_top, is_w = labels == 1, slabels == 1
        ae = {"model": "autoencoder.onnx", "mse_test": round(float(e_test.mean()), 6),
              "mse_shifted": round(float(e_shift.mean()), 6),
              "mse_shifted_signal": round(float(e_shift[is_w].mean()), 6),
              "ood_auroc_w_vs_top": round(common.auc(
                  np.concatenate([e_test[is_top], e_shift[is_w]]),
                  np.r_[np.zeros(is_top.sum()), np.ones(is_w.sum())]), 4)}
        tr = json.loads(ae_path.with_suffix(".json").read_text()).get("training", {})
        ae.update(epochs_run=tr.get("epochs_run"), train_seconds=tr.get("train_seconds"))
        metrics["autoencoder"] = ae
        print("autoencoder", ae, flush=True)

    common.write_json(models_dir / "metrics.json", metrics)
    readme = models_dir / "README.md"
    table = markdown(metrics)
    if readme.exists() and BEGIN in readme.read_text():
        text = readme.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(table)


if __name__ == "__main__":
    main()
