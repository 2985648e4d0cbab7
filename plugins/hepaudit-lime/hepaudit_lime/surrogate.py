"""The local surrogate: a proximity-weighted, sparse linear fit of the logit around one jet.

Perturbations are drawn in standardised units (each feature's standard deviation over the
audited jets): ``z = x + scale · σ · ε`` with ε ~ N(0, 1) for every feature that varies.
Each perturbation is weighted by LIME's exponential kernel on its standardised distance d,
``π = sqrt(exp(−d² / w²))``; a weighted ridge fit picks the ``max_features`` largest
coefficients ("highest weights", as the lime package does), and a weighted least-squares
refit on those gives the surrogate. Coefficients are in logit units per σ of the feature;
the local fidelity is the weighted R² of the surrogate on its own perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Surrogate:
    coefficients: np.ndarray  # (features,), zero for features not selected
    intercept: float
    r2: float


def kernel_weights(eps: np.ndarray, width: float) -> np.ndarray:
    """LIME's kernel on the standardised distance of each perturbation from the jet."""
    d2 = (eps ** 2).sum(axis=1)
    return np.sqrt(np.exp(-d2 / width ** 2))


def _weighted_lstsq(x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Weighted ridge regression with an unpenalised intercept: (coefficients, intercept)."""
    sw = w / w.sum()
    xm, ym = sw @ x, float(sw @ y)
    xc, yc = x - xm, y - ym
    a = (xc * w[:, None]).T @ xc + ridge * np.eye(x.shape[1])
    beta = np.linalg.solve(a, (xc * w[:, None]).T @ yc)
    return beta, ym - float(xm @ beta)


def fit(eps: np.ndarray, y: np.ndarray, weights: np.ndarray, max_features: int, ridge: float = 1.0) -> Surrogate:
    """The sparse surrogate of ``y`` on the standardised perturbations ``eps`` (samples, features)."""
    n_feat = eps.shape[1]
    beta, _ = _weighted_lstsq(eps, y, weights, ridge)
    chosen = np.sort(np.argsort(-np.abs(beta), kind="stable")[:min(max_features, n_feat)])
    sub, intercept = _weighted_lstsq(eps[:, chosen], y, weights, 1e-9)
    coefficients = np.zeros(n_feat)
    coefficients[chosen] = sub
    residual = y - (eps[:, chosen] @ sub + intercept)
    mean = float(weights @ y / weights.sum())
    total = float(weights @ (y - mean) ** 2)
    r2 = 1.0 - float(weights @ residual ** 2) / total if total > 0 else 1.0
    return Surrogate(coefficients, intercept, r2)
