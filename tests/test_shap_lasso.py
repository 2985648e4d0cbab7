"""Kernel SHAP's feature selection (``l1_reg``) and its small-budget regime.

The LARS-Lasso path is checked against the Lasso's optimality (KKT) conditions at every
knot, which any correct path satisfies, and against scikit-learn's ``lars_path`` where it is
installed. The l1 options run in real audits (ROOT file, ONNX model, onnxruntime). The
small-budget estimates are compared with a converged permutation reference and, where
``shap`` is installed, with ``shap.KernelExplainer`` at the same budget.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, mlp_model, save  # noqa: E402
from test_shap import config, features, run, shap_matrix, write_data  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.explainers.shap.kernel import kernel_design, kernel_shap, permutation_shap  # noqa: E402
from hepaudit.explainers.shap.lasso import _standardised, lars_lasso_path, select_players  # noqa: E402


def correlated_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(25, 80))
    x = rng.normal(size=(n, 20))
    x[:, 3] = 0.9 * x[:, 2] + 0.1 * x[:, 5] + 0.05 * rng.normal(size=n)  # coefficients cross zero
    y = x[:, :4] @ np.array([2.0, -1.0, 0.5, 0.3]) + 0.5 * rng.normal(size=n)
    return _standardised(x, y)


@pytest.mark.parametrize("seed", range(40))
def test_lasso_path_satisfies_the_kkt_conditions(seed: int) -> None:
    """At each knot with λ = max |Xᵀr|: every active coefficient has |Xᵀr| = λ and the sign of
    its correlation, every inactive one |Xᵀr| ≤ λ; the path ends at least squares."""
    x, y = correlated_problem(seed)
    path = lars_lasso_path(x, y)
    start = float(np.abs(x.T @ y).max())
    for beta in path[1:]:
        corr = x.T @ (y - x @ beta)
        lam = float(np.abs(corr).max())
        if lam < 1e-8 * start:
            continue
        active = np.abs(beta) > 1e-12
        np.testing.assert_allclose(np.abs(corr[active]), lam, rtol=1e-8)
        assert (np.sign(beta[active]) == np.sign(corr[active])).all()
    ols, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(path[-1], ols, atol=1e-8)


def test_lasso_path_equals_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    crossings = 0
    for seed in range(60):
        x, y = correlated_problem(seed)
        ours = lars_lasso_path(x, y)
        _, _, coefs = linear_model.lars_path(x, y, method="lasso")
        assert ours.shape == coefs.T.shape, seed
        np.testing.assert_allclose(ours, coefs.T, atol=1e-8)
        crossings += int(len(ours) > x.shape[1] + 1)
    assert crossings > 0  # some paths dropped a variable: the Lasso step was exercised


def test_first_n_players_of_the_lar_path() -> None:
    """l1_reg = N keeps the first N players to enter; on a game whose values are a sum of a
    few players' terms those are the players with the largest terms."""
    m, rng = 12, np.random.default_rng(0)
    a = np.zeros(m)
    a[[2, 7, 9]] = [3.0, -2.0, 1.0]
    design = kernel_design(m, 300, rng)
    y = (design.coalitions * a).sum(axis=1) + 0.01 * rng.normal(size=len(design.coalitions))
    assert sorted(select_players(design.coalitions, design.weights, y, float(a.sum()), 2)) == [2, 7]
    aic = set(select_players(design.coalitions, design.weights, y, float(a.sum()), "aic").tolist())
    bic = set(select_players(design.coalitions, design.weights, y, float(a.sum()), "bic").tolist())
    assert {2, 7, 9} <= bic <= aic  # BIC's penalty log n > 2 keeps fewer; both keep the real terms


def test_l1_reg_in_an_audit(tmp_path: Path) -> None:
    m = 20
    write_data(tmp_path, 140, m)
    save(mlp_model(dense_weights([m, 16, 1], seed=5), "gemm"), tmp_path / "m.onnx")
    common = {"jets": 4, "max_exact": 0, "samples": 400}
    tree_off, off = run(tmp_path, m, common)
    tree_n, top3 = run(tmp_path, m, {**common, "l1_reg": 3})
    tree_aic, aic = run(tmp_path, m, {**common, "l1_reg": "aic"})
    assert off.fields["l1_reg"] is None and top3.fields["l1_reg"] == 3 and aic.fields["l1_reg"] == "aic"
    for tree, result in ((tree_n, top3), (tree_aic, aic)):
        phi = shap_matrix(tree, features(m))
        assert result.fields["additivity_max_abs_error"] < 1e-6  # the selected players carry f(x) − E[f]
        assert ((np.abs(phi) > 0).sum(axis=1) <= (3 if result is top3 else m)).all()
    assert (np.abs(shap_matrix(tree_n, features(m))) > 0).sum(axis=1).max() == 3
    # with enough coalitions the selection keeps what matters: the rankings agree at the top
    top_off = off.feature_importance[0].feature
    assert top_off in [s.feature for s in aic.feature_importance[:3]]


def test_l1_reg_options_and_too_few_coalitions(tmp_path: Path) -> None:
    m = 20
    write_data(tmp_path, 140, m)
    save(mlp_model(dense_weights([m, 8, 1], seed=2), "gemm"), tmp_path / "m.onnx")
    for bad in ("lasso", True, 0):
        proc = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit",
                               str(config(tmp_path, m, {"l1_reg": bad})), "--out", str(tmp_path / "bad")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "l1_reg" in proc.stderr, (bad, proc.stderr)
    # AIC needs a noise variance: 8 coalitions (16 augmented rows) cannot give one for 20 players
    report = hepaudit.audit(config(tmp_path, m, {"jets": 2, "max_exact": 0, "samples": 8, "l1_reg": "aic"}),
                            out=None, progress=False)
    result = report.explainers["shap"]
    assert result.status == "failed" and "noise variance" in result.error
    # "auto" then leaves the selection out instead
    _, auto = run(tmp_path, m, {"jets": 2, "max_exact": 0, "samples": 8, "l1_reg": "auto"})
    assert auto.fields["l1_reg"] is None


def tanh_game(m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=m) * np.linspace(2.0, 0.1, m), rng.normal(size=(6, m))


@pytest.mark.parametrize("budget", [10, 50, 200])
def test_small_budgets_against_a_converged_reference_and_kernel_explainer(budget: int) -> None:
    """90 players: φ stays finite, adds up, and is no worse than the equal split (the answer
    that assumes nothing) nor, where shap is installed, than KernelExplainer at the same
    number of model evaluations."""
    m = 90
    a, x = tanh_game(m)

    def f(rows: np.ndarray) -> np.ndarray:  # a model whose value with a zero background is the game
        return np.tanh(rows @ a / 4.0)

    def game(coalitions: np.ndarray) -> np.ndarray:
        return np.tanh(x @ (coalitions.T * a[:, None]) / 4.0)

    v_empty = np.zeros(len(x))
    f_x = f(x)
    reference, se = permutation_shap(game, m, 4000, v_empty, f_x, np.random.default_rng(0))
    assert np.sqrt((se ** 2).mean()) < 0.05 * np.sqrt((reference ** 2).mean())
    errors = []
    for seed in range(3):
        design = kernel_design(m, budget, np.random.default_rng(seed))
        phi, _ = kernel_shap(design, game(design.coalitions), v_empty, f_x)
        assert np.isfinite(phi).all()
        np.testing.assert_allclose(phi.sum(axis=1), f_x - v_empty, atol=1e-9)
        errors.append(float(np.sqrt(((phi - reference) ** 2).mean())))
    ours = float(np.mean(errors))
    equal_split = float(np.sqrt(((f_x[:, None] / m - reference) ** 2).mean()))
    assert ours <= equal_split * 1.001, (ours, equal_split)
    shap = pytest.importorskip("shap")
    peer_errors = []
    for seed in range(3):
        np.random.seed(seed)
        explainer = shap.KernelExplainer(f, np.zeros((1, m)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shap's singular-matrix and deprecation warnings
            phi = np.asarray(explainer.shap_values(x, nsamples=budget, l1_reg=False, silent=True))
        peer_errors.append(float(np.sqrt(((phi.reshape(len(x), m) - reference) ** 2).mean())))
    assert ours <= float(np.mean(peer_errors)), (ours, peer_errors)

