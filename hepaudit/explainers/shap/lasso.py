"""Feature selection for Kernel SHAP by the Lasso (shap's ``l1_reg``), in numpy.

KernelExplainer can restrict the regression to the players a Lasso selects, chosen along the
LARS-Lasso path (Efron et al., "Least angle regression", 2004) by AIC or BIC, or as the first
N players to enter the path. The selected players are then fitted by the usual constrained
weighted least squares; the others get φ = 0. Like shap, the Lasso sees the efficiency
constraint softly, through an augmented design: every coalition z appears twice, as
(z, y) with weight π·(M − |z|) and as (z − 1, y − total) with weight π·|z| (π the kernel
weight), the columns scaled to unit standard deviation and an intercept fitted.

The information criteria follow the usual definitions (as scikit-learn's LassoLarsIC):
n·log(2πσ²) + RSS/σ² + k·df with k = 2 (AIC) or log n (BIC), df the number of non-zero
coefficients and σ² the residual variance of the full least-squares fit, which needs more
rows than columns.
"""

from __future__ import annotations

import numpy as np

#: correlations below this fraction of the first step's are zero: the path has ended
_TINY = 1e-12


def lars_lasso_path(x: np.ndarray, y: np.ndarray, max_steps: int | None = None,
                    lasso: bool = True) -> np.ndarray:
    """Coefficients (steps + 1, p) at each knot of the LARS path of centred ``x`` (n, p), ``y`` (n,).

    With ``lasso`` a coefficient that crosses zero leaves the active set (the Lasso path);
    without, it is plain LAR (each step adds one variable). Columns that are linear
    combinations of the active ones never enter.
    """
    n, p = x.shape
    limit = min(n - 1, p) if max_steps is None else min(max_steps, p)
    beta = np.zeros(p)
    path = [beta.copy()]
    active: list[int] = []
    banned = np.zeros(p, bool)  # collinear with the active set
    corr = x.T @ y
    first = float(np.abs(corr).max()) if p else 0.0
    if first <= 0:
        return np.array(path)
    dropped = False  # a step that ended by dropping a variable adds none at the next
    for _ in range(8 * p + 8):  # the Lasso may drop and re-add; this bounds the loop
        inactive = np.ones(p, bool)
        inactive[active] = False
        inactive &= ~banned
        if not dropped:
            if len(active) >= limit or not inactive.any():
                break
            candidates = np.flatnonzero(inactive)
            j = int(candidates[np.argmax(np.abs(corr[candidates]))])
            if active and abs(corr[j]) <= _TINY * first:
                break
            trial = active + [j]
            if np.linalg.matrix_rank(x[:, trial]) < len(trial):
                banned[j] = True
                continue
            active = trial
            inactive[j] = False
        dropped = False
        c_now = float(np.abs(corr[active]).max())
        if c_now <= _TINY * first:
            break
        signs = np.sign(corr[active])
        xa = x[:, active] * signs
        g1 = np.linalg.solve(xa.T @ xa, np.ones(len(active)))
        norm = 1.0 / np.sqrt(float(g1.sum()))
        w = norm * g1
        a = x.T @ (xa @ w)
        gamma = c_now / norm  # the step that brings every correlation to zero
        free = np.flatnonzero(inactive)
        if len(free):
            with np.errstate(divide="ignore", invalid="ignore"):
                g = np.concatenate([(c_now - corr[free]) / (norm - a[free]),
                                    (c_now + corr[free]) / (norm + a[free])])
            # a root at ~0 is a tie that already happened (a variable just added or just dropped)
            g = g[np.isfinite(g) & (g > 1e-11 * gamma)]
            if len(g):
                gamma = min(gamma, float(g.min()))
        direction = signs * w
        leaving = -1
        if lasso:
            with np.errstate(divide="ignore", invalid="ignore"):
                cross = -beta[active] / direction
            cross[~np.isfinite(cross) | (cross <= 1e-15)] = np.inf
            k = int(np.argmin(cross))
            if cross[k] < gamma:
                gamma, leaving = float(cross[k]), k
        beta[active] += gamma * direction
        corr = corr - gamma * a
        if leaving >= 0:
            beta[active[leaving]] = 0.0
            del active[leaving]
            dropped = bool(active)
        path.append(beta.copy())
    return np.array(path)


def augmented(z: np.ndarray, w: np.ndarray, y: np.ndarray, total: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """shap's augmented Lasso problem for one jet: rows (2C, M) and targets (2C,), already
    multiplied by √weight."""
    size = z.sum(axis=1)
    m = z.shape[1]
    root = np.sqrt(np.concatenate([w * (m - size), w * size]))
    rows = np.concatenate([z, z - 1.0]) * root[:, None]
    target = np.concatenate([y, y - total]) * root
    return rows, target


def _standardised(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns scaled to unit standard deviation, then x and y centred (an intercept)."""
    std = x.std(axis=0)
    std[std == 0] = 1.0
    xs = x / std
    return xs - xs.mean(axis=0), y - y.mean()


def information_criterion(x: np.ndarray, y: np.ndarray, path: np.ndarray, criterion: str) -> np.ndarray:
    """AIC or BIC of each step of ``path`` on centred data (the constant n·log 2πσ² left out)."""
    n, p = x.shape
    dof = n - p - 1
    if dof <= 0:
        raise ValueError(f"{criterion.upper()} needs more rows than columns to estimate the noise variance "
                         f"({n} rows, {p} columns)")
    full, *_ = np.linalg.lstsq(x, y, rcond=None)
    sigma2 = float(((y - x @ full) ** 2).sum()) / dof
    rss = ((y[:, None] - x @ path.T) ** 2).sum(axis=0)
    factor = 2.0 if criterion == "aic" else float(np.log(n))
    df = (np.abs(path) > 0).sum(axis=1)
    if sigma2 <= 0:  # an exact fit: the criterion only counts the coefficients
        return np.where(rss <= 1e-20 * max(float((y ** 2).sum()), 1e-300), factor * df, np.inf)
    return rss / sigma2 + factor * df


def select_players(z: np.ndarray, w: np.ndarray, y: np.ndarray, total: float, rule: str | int,
                   most: int | None = None) -> np.ndarray:
    """The players (indices) that Kernel SHAP keeps for one jet: ``rule`` "aic", "bic" or N (the
    first N to enter the LAR path, as shap's ``num_features(N)``); AIC and BIC choose among
    the steps with at most ``most`` players."""
    rows, target = augmented(z.astype(np.float64), w, y, total)
    xs, ys = _standardised(rows, target)
    if isinstance(rule, int):
        path = lars_lasso_path(xs, ys, max_steps=rule, lasso=False)
        return np.flatnonzero(path[-1])
    path = lars_lasso_path(xs, ys)
    score = information_criterion(xs, ys, path, rule)
    if most is not None:
        score[(np.abs(path) > 0).sum(axis=1) > most] = np.inf
    best = int(np.argmin(score))
    return np.flatnonzero(path[best])
