"""Jet observables computed from the constituents: mass, pT, multiplicity, N-subjettiness.

Used by the ``latent`` explainer to ask what physics a hidden layer encodes. Everything
works on a chunk at once: jagged constituent four-momenta in, one float64 per jet out.

N-subjettiness (Thaler & Van Tilburg, arXiv:1011.2268), β = 1, R0 = 0.8:

    τ_N = Σ_k pT_k · min_a ΔR(k, a) / Σ_k pT_k R0

with ΔR in the (rapidity, φ) plane. τ_N is defined with the axes that minimise it. fastjet
is not a dependency, so the axes come from a small, documented numpy procedure rather
than exclusive-kT clustering:

1. three seed sets: (a) *greedy*: the hardest constituent, then repeatedly the constituent
   with the largest contribution pT·ΔR to the current τ (the one farthest, in pT-weighted
   distance, from every axis so far); (b) the N hardest constituents; (c) the pT-weighted
   centroids of the constituents nearest to each greedy axis (one k-means step);
2. from each seed set, a few iterations of the one-pass minimisation for β = 1 (assign each
   constituent to its nearest axis, move each axis to the Weiszfeld update
   Σ w_k x_k / Σ w_k with w_k = pT_k / ΔR_k, a step that never increases τ), keeping a
   step only for the jets where it lowered τ;
3. τ_N = the smallest of the three results.

Any axes give an upper bound on the true minimum; for N well-separated prongs the greedy
seeds find them and τ_N is exact (N massless prongs: τ_N = 0). Jets with fewer than N
constituents get τ_N = 0; τ_21 = τ2/τ1 and τ_32 = τ3/τ2 are NaN where the denominator is 0 (below 1e-12).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepaudit.data.constituents import momenta_from_cartesian, momenta_from_ptetaphi, wrap_phi

#: names of the observables :func:`jet_observables` returns, in order
OBSERVABLES: tuple[str, ...] = ("mass", "pt", "n_constituents", "tau1", "tau2", "tau3", "tau21", "tau32")


def _distances(y: np.ndarray, phi: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(N, M, K) squared ΔR between constituents (N, M) and axes (N, K, 2).

    Coordinates are relative to the jet axis (see :func:`jet_observables`), so constituents
    and axes sit well inside |φ| < π/2 and a plain difference needs no wrap at ±π.
    """
    dy = y[:, :, None] - axes[:, None, :, 0]
    dphi = phi[:, :, None] - axes[:, None, :, 1]
    return dy * dy + dphi * dphi


def _nearest(y: np.ndarray, phi: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(N, M) ΔR from each constituent to its nearest axis."""
    return np.sqrt(_distances(y, phi, axes).min(axis=2))


def _tau(pt: np.ndarray, dr_min: np.ndarray, norm: np.ndarray) -> np.ndarray:
    return (pt * dr_min).sum(axis=1) / norm


def _refine(
    pt: np.ndarray,
    y: np.ndarray,
    phi: np.ndarray,
    axes: np.ndarray,
    norm: np.ndarray,
    iterations: int,
    tolerance: float = 1e-4,
) -> np.ndarray:
    """One-pass (Weiszfeld) minimisation for β = 1; returns τ per jet, never above the seeds'.

    Only jets still improving by more than ``tolerance`` (relative) are iterated further,
    so the cost is set by the few slow jets, not by every jet times the iteration cap.
    """
    tau = _tau(pt, _nearest(y, phi, axes), norm)
    active = np.arange(len(pt))
    k = axes.shape[1]
    for _ in range(iterations):
        if active.size == 0:
            break
        p, yy, ff, ax = pt[active], y[active], phi[active], axes[active]
        dr2 = _distances(yy, ff, ax)
        nearest = dr2.argmin(axis=2)  # (n, M)
        d = np.sqrt(np.take_along_axis(dr2, nearest[:, :, None], axis=2)[:, :, 0])
        # a constituent sitting on the axis has no direction to pull in (and 1/ΔR would pin
        # the axis to it for ever): the modified Weiszfeld step leaves it out
        weight = np.where(d > 1e-9, p / np.maximum(d, 1e-9), 0.0)
        new = ax.copy()
        for a in range(k):
            w = np.where(nearest == a, weight, 0.0)
            total = w.sum(axis=1)
            ok = total > 0
            safe = np.where(ok, total, 1.0)
            new[:, a, 0] = np.where(ok, (w * yy).sum(axis=1) / safe, ax[:, a, 0])
            new[:, a, 1] = np.where(ok, (w * ff).sum(axis=1) / safe, ax[:, a, 1])
        new_tau = _tau(p, _nearest(yy, ff, new), norm[active])
        better = new_tau < tau[active]
        axes[active[better]] = new[better]
        gain = tau[active] - new_tau
        tau[active[better]] = new_tau[better]
        active = active[better & (gain > tolerance * np.maximum(tau[active], 1e-12))]
    return tau


def _centroids(pt: np.ndarray, y: np.ndarray, phi: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """pT-weighted centroids of the constituents nearest to each seed (one k-means step)."""
    nearest = _distances(y, phi, seeds).argmin(axis=2)
    out = seeds.copy()
    for a in range(seeds.shape[1]):
        w = np.where(nearest == a, pt, 0.0)
        total = w.sum(axis=1)
        ok = total > 0
        out[ok, a, 0] = (w * y).sum(axis=1)[ok] / total[ok]
        out[ok, a, 1] = (w * phi).sum(axis=1)[ok] / total[ok]
    return out


def nsubjettiness(
    pt: np.ndarray, y: np.ndarray, phi: np.ndarray, n_max: int = 3, r0: float = 0.8, iterations: int = 10
) -> np.ndarray:
    """(N, n_max) τ_1..τ_n_max for zero-padded constituents (N, M): pT (0 for padding),
    rapidity and φ; β = 1. See the module docstring for the axis choice."""
    n, m = pt.shape
    pt = pt.astype(np.float64)
    norm = pt.sum(axis=1) * r0
    norm = np.where(norm > 0, norm, 1.0)
    out = np.zeros((n, n_max))
    if m == 0:
        return out
    order = np.argsort(-pt, axis=1, kind="stable")
    rows = np.arange(n)
    points = np.stack([y, phi], axis=-1).astype(np.float64)  # (N, M, 2)
    greedy = points[rows, order[:, 0]][:, None, :]  # (N, 1, 2): the hardest constituent
    for n_axes in range(1, n_max + 1):
        if n_axes > 1:
            contribution = pt * _nearest(y, phi, greedy)
            pick = contribution.argmax(axis=1)
            greedy = np.concatenate([greedy, points[rows, pick][:, None, :]], axis=1)
        hardest = points[rows[:, None], order[:, :n_axes]] if n_axes <= m else greedy
        taus = [
            _refine(pt, y, phi, seeds.copy(), norm, iterations)
            for seeds in (greedy, hardest, _centroids(pt, y, phi, greedy))
        ]
        out[:, n_axes - 1] = np.minimum.reduce(taus)
    return out


def _padded(values: ak.Array, width: int) -> np.ndarray:
    return ak.to_numpy(ak.fill_none(ak.pad_none(values, width, axis=1, clip=True), 0.0)).astype(np.float64)


def jet_observables(parts: ak.Array, tau: bool = True, r0: float = 0.8) -> dict[str, np.ndarray]:
    """Mass, pT and multiplicity of the jets (the sum of all constituents), and with ``tau``
    the N-subjettiness τ1, τ2, τ3 and ratios τ21, τ32, from vector ``Momentum4D`` records."""
    px = ak.to_numpy(ak.sum(parts.px, axis=1)).astype(np.float64)
    py = ak.to_numpy(ak.sum(parts.py, axis=1)).astype(np.float64)
    pz = ak.to_numpy(ak.sum(parts.pz, axis=1)).astype(np.float64)
    energy = ak.to_numpy(ak.sum(parts.E, axis=1)).astype(np.float64)
    out = {
        "mass": np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)),
        "pt": np.hypot(px, py),
        "n_constituents": ak.to_numpy(ak.num(parts, axis=1)).astype(np.float64),
    }
    if tau:
        width = int(ak.max(ak.num(parts, axis=1), initial=0))
        pt = _padded(parts.pt, width)
        # rapidity and φ relative to the jet axis: the N-subjettiness sums are translation
        # invariant, and small offsets keep the φ wrap away from the constituents
        jet_y = 0.5 * np.log(np.maximum(energy + pz, 1e-300) / np.maximum(energy - pz, 1e-300))
        jet_phi = np.arctan2(py, px)
        y = np.where(pt > 0, _padded(parts.rapidity, width) - jet_y[:, None], 0.0)
        phi = np.where(pt > 0, wrap_phi(_padded(parts.phi, width) - jet_phi[:, None]), 0.0)
        taus = nsubjettiness(pt, np.nan_to_num(y), phi, 3, r0)
        out["tau1"], out["tau2"], out["tau3"] = taus[:, 0], taus[:, 1], taus[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["tau21"] = np.where(taus[:, 0] > 1e-12, taus[:, 1] / taus[:, 0], np.nan)
            out["tau32"] = np.where(taus[:, 1] > 1e-12, taus[:, 2] / taus[:, 1], np.nan)
    return out


def constituents_from_arrays(arrays: ak.Array, momentum: object) -> ak.Array:
    """The constituents of a chunk as ``Momentum4D`` records, from an input's ``momentum`` config."""
    m = momentum
    if getattr(m, "px", None):
        return momenta_from_cartesian(arrays[m.px], arrays[m.py], arrays[m.pz], arrays[m.energy])  # type: ignore[attr-defined]
    return momenta_from_ptetaphi(arrays[m.pt], arrays[m.eta], arrays[m.phi], arrays[m.mass])  # type: ignore[attr-defined]
