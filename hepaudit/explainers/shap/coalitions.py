"""Exact Shapley values: every coalition of M players and the Shapley weights.

Coalitions are bit masks: bit i set means player i takes the jet's value. With v(S) for all
2^M coalitions, φ_i = Σ_{S ⊆ N \\ {i}} |S|! (M − |S| − 1)! / M! · (v(S ∪ {i}) − v(S)).
"""

from __future__ import annotations

from math import comb, factorial

import numpy as np


def all_coalitions(m: int) -> np.ndarray:
    """Every coalition of ``m`` players as a bool matrix (2^m, m); row s has the bits of s."""
    codes = np.arange(1 << m, dtype=np.int64)
    return ((codes[:, None] >> np.arange(m)) & 1).astype(bool)


def shapley_weights(m: int) -> np.ndarray:
    """w[s] = s! (m − s − 1)! / m!, the weight of a coalition of size s not holding player i."""
    return np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)])


def kernel_weight(m: int, size: int) -> float:
    """The Shapley kernel π(S) = (m − 1) / (C(m, |S|) |S| (m − |S|)) of one coalition (0 < |S| < m)."""
    return (m - 1) / (comb(m, size) * size * (m - size))


def exact_shapley(values: np.ndarray) -> np.ndarray:
    """Shapley values (n, m) from v of every coalition, ``values`` (n, 2^m) indexed by bit mask."""
    n, total = values.shape
    m = total.bit_length() - 1
    if 1 << m != total:
        raise ValueError(f"expected 2^m coalition values, got {total}")
    codes = np.arange(total, dtype=np.int64)
    sizes = np.array([bin(c).count("1") for c in range(total)])
    weights = shapley_weights(m) if m else np.zeros(0)
    phi = np.empty((n, m))
    for i in range(m):
        without = codes[(codes >> i) & 1 == 0]
        phi[:, i] = (values[:, without | (1 << i)] - values[:, without]) @ weights[sizes[without]]
    return phi
