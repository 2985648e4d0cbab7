"""IQR outlier clipping of per-jet values, per unit and class: the paper's post-processing.

Khot, Neubauer & Roy (arXiv:2210.04371) clip MAD's Δ and LRP's relevance before averaging:
per feature and class, the quartiles Q1, Q3 of the values (NaN ignored) fence
[Q1 − 1.5 IQR, Q3 + 1.5 IQR], values outside are set to 0, then the mean of |value| is
taken. The values of a whole audit are needed for the quartiles, so the explainers keep them
in :class:`~hepaudit.explainers.columns.SpilledColumns` and call :func:`clipped_class_sums`
once at the end, one unit at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def clip_outliers(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """``values`` with those beyond 1.5 IQR from the quartiles set to 0 (a copy), and whether the
    IQR was 0 while some values differ (then everything off the quartile is clipped)."""
    d = np.array(values, np.float64)
    q1, q3 = np.nanpercentile(d, [25, 75])
    iqr = q3 - q1
    flat = bool(iqr == 0 and np.any(d[np.isfinite(d)] != q1))
    d[(d < q1 - 1.5 * iqr) | (d > q3 + 1.5 * iqr)] = 0.0
    return d, flat


def clipped_class_sums(row: Callable[[int], np.ndarray], n_units: int, classes: np.ndarray, weights: np.ndarray,
                       transform: Callable[[np.ndarray], np.ndarray] | None = None,
                       boot: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]], np.ndarray | None]:
    """Per class (0 background, 1 signal, 2 unlabelled) and unit: Σ w·|clipped value|, the class
    weights, and per class the units whose IQR was 0. ``row(k)`` gives unit k's values over all
    jets; ``transform`` is applied before clipping (``np.abs`` clips |value|). With ``boot``
    (R, jets) bootstrap weights (times the jets' own), also each replicate's mean |clipped value|
    per unit, (R, units): the fences stay the sample's (re-deriving them per replicate would need
    every replicate's quartiles)."""
    reps = None if boot is None else np.zeros((len(boot), n_units))
    boot_total = None if boot is None else np.maximum(boot.sum(axis=1), 1e-300)
    sums = np.zeros((3, n_units))
    weight = np.zeros(3)
    flat: dict[int, list[int]] = {}
    selections: Sequence[tuple[int, np.ndarray]] = [(c, classes == c) for c in range(3)]
    selections = [(c, sel) for c, sel in selections if sel.any()]
    for c, sel in selections:
        weight[c] = weights[sel].sum()
    for k in range(n_units):
        values = np.asarray(row(k), np.float64)
        kept = np.zeros(len(values))
        for c, sel in selections:
            d = values[sel] if transform is None else transform(values[sel])
            clipped, is_flat = clip_outliers(d)
            if is_flat:
                flat.setdefault(c, []).append(k)
            kept[sel] = np.nan_to_num(np.abs(clipped))
            sums[c, k] = kept[sel] @ weights[sel]
        if reps is not None and boot is not None and boot_total is not None:
            reps[:, k] = (boot @ kept) / boot_total
    return sums, weight, flat, reps
