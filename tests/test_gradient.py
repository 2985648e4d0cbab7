"""The gradient explainer through real audits, checked against independent numpy gradients.

The network is the tests' ReLU MLP; its gradient is computed here by hand (back through
the ReLU masks with numpy) and, for integrated gradients, completeness is checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import uproot

sys.path.insert(0, str(Path(__file__).parent))
from builders import dense_weights, mlp_logits, mlp_model  # noqa: E402
from test_lrp import audit_folder  # noqa: E402

import hepaudit  # noqa: E402


def hand_gradient(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """∂z/∂x of the ReLU MLP, by the chain rule written out in numpy (float64)."""
    out = np.zeros(x.shape)
    for n in range(len(x)):
        h = x[n].astype(np.float64)
        masks = []
        for w, b in weights[:-1]:
            pre = h @ w.astype(np.float64) + b
            masks.append(pre > 0)
            h = np.maximum(pre, 0)
        g = weights[-1][0][:, 0].astype(np.float64)
        for (w, _), m in zip(reversed(weights[:-1]), reversed(masks)):
            g = w.astype(np.float64) @ (g * m)
        out[n] = g
    return out


def read(tmp_path: Path) -> tuple[np.ndarray, dict]:
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        cols = f["hepaudit"].arrays(library="np")
    with uproot.open(tmp_path / "jets.root") as f:
        raw = f["jets"].arrays(["f0", "f1", "f2", "f3"], library="np")
    x = np.stack([raw[f"f{k}"] for k in range(4)], axis=1)[cols["entry"]].astype(np.float32)
    return x, cols


def test_gradient_x_input_and_probability_target(tmp_path: Path) -> None:
    weights = dense_weights([4, 6, 3, 1], seed=21)
    cfg = audit_folder(
        tmp_path,
        mlp_model(weights, "gemm"),
        {"gradient": {"method": "gradient_x_input", "target": "probability", "per_jet": True}},
    )
    report = hepaudit.audit(cfg, out=tmp_path / "out")
    assert report.explainers["gradient"].status == "ok", report.explainers["gradient"].error
    x, cols = read(tmp_path)
    z = mlp_logits(weights, x)[:, 0]
    f = 1 / (1 + np.exp(-z))
    expected = hand_gradient(weights, x) * (f * (1 - f))[:, None] * x
    got = np.stack([cols[f"grad_f{k}"] for k in range(4)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    data = json.loads((tmp_path / "out" / "report.json").read_text())["explainers"]["gradient"]
    ranking = {s["feature"]: s["score"] for s in data["feature_importance"]}
    np.testing.assert_allclose([ranking[f"f{k}"] for k in range(4)], np.abs(expected).mean(axis=0), rtol=1e-4)


def test_integrated_gradients_completeness_and_smoothgrad(tmp_path: Path) -> None:
    weights = dense_weights([4, 6, 3, 1], seed=22)
    cfg = audit_folder(
        tmp_path,
        mlp_model(weights, "matmul"),
        {"gradient": {"method": "integrated_gradients", "baseline": "zero", "steps": 64, "per_jet": True}},
    )
    report = hepaudit.audit(cfg, out=tmp_path / "out")
    result = report.explainers["gradient"]
    assert result.status == "ok", result.error
    x, cols = read(tmp_path)
    ig = np.stack([cols[f"grad_f{k}"] for k in range(4)], axis=1).astype(np.float64)
    # midpoint Riemann sum of the hand gradient along the straight path from 0
    alphas = (np.arange(64) + 0.5) / 64
    expected = x * np.mean([hand_gradient(weights, a * x) for a in alphas], axis=0)
    np.testing.assert_allclose(ig, expected, rtol=1e-3, atol=1e-5)
    # completeness: Σ IG ≈ z(x) − z(0)
    dz = mlp_logits(weights, x)[:, 0] - mlp_logits(weights, np.zeros((1, 4)))[0, 0]
    assert np.mean(np.abs(ig.sum(axis=1) - dz)) < 0.05 * np.mean(np.abs(dz))
    assert result.fields["completeness_mean_abs_error"] < 0.05 * np.mean(np.abs(dz))

    smooth = tmp_path / "smooth"
    smooth.mkdir()
    cfg = audit_folder(
        smooth,
        mlp_model(weights, "matmul"),
        {"gradient": {"method": "smoothgrad", "noise": 0.0, "samples": 2, "per_jet": True}},
    )
    hepaudit.audit(cfg, out=smooth / "out")
    x, cols = read(smooth)
    got = np.stack([cols[f"grad_f{k}"] for k in range(4)], axis=1)
    # zero noise: SmoothGrad is the plain gradient
    np.testing.assert_allclose(got, hand_gradient(weights, x), rtol=1e-4, atol=1e-7)
