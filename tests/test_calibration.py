"""calibration: ECE against a direct computation, Platt and isotonic against independent fits.

The tagger is a real ONNX logistic model on flat Gaussian features whose logit is the exact
log-likelihood ratio (so it is calibrated for balanced classes), or that logit times 3 (a
deliberately over-confident model). Checks use scipy's optimiser and a brute-force
isotonic regression, never the explainer's own code paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import uproot
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).parent))

from builders import mlp_model, save, toml_dumps, write_jets  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.explainers.ood.calibration import fit_platt, pool_adjacent_violators  # noqa: E402
from hepaudit.explainers.ood.common import entry_keys, held_out  # noqa: E402

SHIFTS = np.array([1.2, 0.6, 0.4])
FEATURES = ["f0", "f1", "f2"]


def gaussian_jets(n: int, seed: int, signal_fraction: float = 0.5) -> dict[str, np.ndarray]:
    """f_k ~ N(shift_k · y, 1): the log-likelihood ratio is Σ shift_k f_k − Σ shift_k² / 2."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < signal_fraction).astype(np.int32)
    out: dict[str, np.ndarray] = {
        f: (rng.normal(0, 1, n) + s * y).astype(np.float32) for f, s in zip(FEATURES, SHIFTS)
    }
    out["is_signal"] = y
    out["weight"] = rng.uniform(0.5, 1.5, n)
    return out


def logistic_model(path: Path, scale: float) -> Path:
    w = (scale * SHIFTS).astype(np.float32).reshape(-1, 1)
    b = np.array([-scale * np.sum(SHIFTS**2) / 2], np.float32)
    return save(mlp_model([(w, b)]), path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("calibration")
    logistic_model(d / "calibrated.onnx", 1.0)
    logistic_model(d / "overconfident.onnx", 3.0)
    write_jets(d / "jets.root", gaussian_jets(6000, seed=1, signal_fraction=0.3))
    write_jets(d / "balanced.root", gaussian_jets(6000, seed=2))
    write_jets(d / "ref.root", gaussian_jets(6000, seed=3))
    return d


def audit(
    folder: Path, model: str, data: str, reference: str | None = None, weight: bool = False, options: str = ""
) -> dict:
    doc: dict = {
        "model": {"path": model},
        "data": {
            "files": [data],
            "label": "is_signal",
            "step_size": 2000,
            **({"weight": "weight"} if weight else {}),
        },
        "inputs": [{"name": "x", "kind": "jet", "branches": FEATURES}],
        "execution": {"progress": False},
    }
    if reference:
        doc["reference"] = {"files": [reference], "label": "is_signal"}
    path = folder / "audit.toml"
    path.write_text(toml_dumps(doc) + "\n[explainers.calibration]\n" + options)
    result = hepaudit.audit(path, out=None).explainers["calibration"]
    assert result.status == "ok", result.error
    return result.fields


def read(folder: Path, data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with uproot.open(folder / data) as f:
        a = f["jets"].arrays(FEATURES + ["is_signal", "weight"], library="np")
    x = np.stack([a[f] for f in FEATURES], axis=1).astype(np.float64)
    return x, a["is_signal"], a["weight"]


def direct_ece(score: np.ndarray, y: np.ndarray, w: np.ndarray, bins: int, balanced: bool = False) -> float:
    """ECE by its definition, one bin at a time."""
    if balanced:
        w = np.where(y == 1, w / w[y == 1].sum(), w / w[y == 0].sum())
    total, ece = w.sum(), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (score >= lo) & ((score < hi) if b < bins - 1 else (score <= hi))
        if w[sel].sum() > 0:
            ece += (
                w[sel].sum()
                / total
                * abs(np.average(y[sel], weights=w[sel]) - np.average(score[sel], weights=w[sel]))
            )
    return ece


@pytest.mark.parametrize("bins, weight", [(15, False), (7, True)])
def test_ece_matches_direct_computation(folder: Path, bins: int, weight: bool) -> None:
    f = audit(folder, "overconfident.onnx", "jets.root", weight=weight, options=f"bins = {bins}\n")
    x, y, w = read(folder, "jets.root")
    w = w if weight else np.ones(len(y))
    logit = 3.0 * (x @ SHIFTS - np.sum(SHIFTS**2) / 2)
    score = 1 / (1 + np.exp(-logit))
    assert f["ece"] == pytest.approx(direct_ece(score, y, w, bins), abs=1e-5)
    assert f["ece_balanced"] == pytest.approx(direct_ece(score, y, w, bins, balanced=True), abs=1e-5)
    assert f["ece"] != pytest.approx(f["ece_balanced"], abs=1e-3)  # 30 % signal: the balance matters
    observed = np.array(f["reliability"]["observed"], dtype=float)
    index = np.minimum((score * bins).astype(int), bins - 1)
    for b in range(bins):
        sel = index == b
        if sel.any():
            assert observed[b] == pytest.approx(np.average(y[sel], weights=w[sel]), abs=1e-9)


def test_calibrated_model_has_small_balanced_ece(folder: Path) -> None:
    f = audit(folder, "calibrated.onnx", "balanced.root")
    assert f["ece"] < 0.03  # the exact likelihood ratio on balanced classes: only statistical noise


@pytest.mark.parametrize("reference", [None, "ref.root"])
def test_platt_and_isotonic_repair_an_overconfident_model(folder: Path, reference: str | None) -> None:
    f = audit(folder, "overconfident.onnx", "balanced.root", reference=reference)
    rec = f["recalibration"]
    assert rec["platt"]["ece"] < rec["ece"] / 3
    assert rec["isotonic"]["ece"] < rec["ece"] / 2
    assert rec["platt"]["a"] == pytest.approx(1 / 3, abs=0.04)  # undoes the factor 3
    assert rec["platt"]["b"] == pytest.approx(0.0, abs=0.1)
    if reference:
        assert rec["fitted_on"] == "the reference sample" and rec["evaluation_jets"] == 6000
    else:
        half = held_out(entry_keys(np.arange(6000), 0))
        assert rec["evaluation_jets"] == half.sum() and rec["fit_jets"] == (~half).sum()
        assert "half" in rec["fitted_on"]


def test_platt_fit_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(4000) < 0.4).astype(float)
    z = 2.5 * (rng.normal(0, 1, 4000) + 1.1 * y) - 0.7
    w = rng.uniform(0.2, 2.0, 4000)
    a, b = fit_platt(z, y, w)

    def nll(t: np.ndarray) -> float:
        u = t[0] * z + t[1]
        return float(np.sum(w * (np.logaddexp(0, u) - y * u)))

    ref = minimize(
        nll, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000}
    )
    np.testing.assert_allclose([a, b], ref.x, atol=1e-5)


def test_pool_adjacent_violators_matches_min_max_formula() -> None:
    rng = np.random.default_rng(6)
    v, w = rng.normal(0, 1, 40) + np.linspace(0, 2, 40), rng.uniform(0.1, 3, 40)
    fit = pool_adjacent_violators(v, w)
    # the isotonic regression at i is max over j <= i of min over k >= i of the weighted mean of v[j..k]
    brute = [
        max(min(np.average(v[j : k + 1], weights=w[j : k + 1]) for k in range(i, 40)) for j in range(i + 1))
        for i in range(40)
    ]
    np.testing.assert_allclose(fit, brute, atol=1e-12)
    assert np.all(np.diff(fit) >= 0)
