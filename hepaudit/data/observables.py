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

from typing import TYPE_CHECKING

import numpy as np

from hepaudit.data.constituents import momenta_from_cartesian, momenta_from_ptetaphi, wrap_phi
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import awkward as ak

    from hepaudit.data.builders import JetMomentum
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")

#: names of the observables :func:`jet_observables` returns, in order
OBSERVABLES: tuple[str, ...] = ("mass", "pt", "n_constituents", "tau1", "tau2", "tau3", "tau21", "tau32")


class _Constituents:
    """Every constituent of a chunk in one flat array, jet after jet (no padding): the cost of
    the minimisation follows the number of constituents, not jets × the largest multiplicity."""

    def __init__(self, pt: np.ndarray, y: np.ndarray, phi: np.ndarray, jet: np.ndarray, n_jets: int) -> None:
        self.pt, self.y, self.phi, self.jet, self.n_jets = pt, y, phi, jet, n_jets
        # constituents per jet: ``jet`` runs in order, so a per-jet value reaches its
        # constituents by np.repeat, which is faster than indexing with ``jet``
        self.counts = np.bincount(jet, minlength=n_jets)

    def subset(self, keep_jets: np.ndarray) -> _Constituents:
        """The constituents of the jets where ``keep_jets`` (a bool per jet) holds, renumbered."""
        sel = keep_jets[self.jet]
        renumber = np.cumsum(keep_jets) - 1
        return _Constituents(self.pt[sel], self.y[sel], self.phi[sel], renumber[self.jet[sel]],
                             int(keep_jets.sum()))

    def distances(self, axes: np.ndarray) -> np.ndarray:
        """(K, T) squared ΔR between each constituent and its jet's K axes (``axes``: (N, K, 2)),
        axis-major so that the reductions over the few axes run along long contiguous rows.

        Coordinates are relative to the jet axis (see :func:`jet_observables`), so constituents
        and axes sit well inside |φ| < π/2 and a plain difference needs no wrap at ±π."""
        dy = self.y - np.repeat(axes[:, :, 0].T, self.counts, axis=1)
        dphi = self.phi - np.repeat(axes[:, :, 1].T, self.counts, axis=1)
        dy *= dy
        dphi *= dphi
        dy += dphi
        return dy

    def per_jet(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.jet, weights=values, minlength=self.n_jets)

    def tau(self, dr2: np.ndarray, norm: np.ndarray) -> np.ndarray:
        return self.per_jet(self.pt * np.sqrt(np.minimum.reduce(dr2, axis=0))) / norm

    def first_max(self, values: np.ndarray) -> np.ndarray:
        """Per jet, the flat index of its first constituent with the largest ``values`` (-1: none)."""
        best = np.full(self.n_jets, -np.inf)
        np.maximum.at(best, self.jet, values)
        hits = np.flatnonzero(values == best[self.jet])
        first = hits[np.r_[True, self.jet[hits][1:] != self.jet[hits][:-1]]] if hits.size else hits
        out = np.full(self.n_jets, -1)
        out[self.jet[first]] = first
        return out

    def weighted_means(self, slot: np.ndarray, weight: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """Per (jet, axis) slot ``jet·K + a``: the ``weight``-weighted mean (y, φ) of the
        constituents in it; slots without weight keep their current ``axes``."""
        n, k = axes.shape[:2]
        total = np.bincount(slot, weights=weight, minlength=n * k)
        out = axes.reshape(n * k, 2).copy()
        ok = total > 0
        out[ok, 0] = np.bincount(slot, weights=weight * self.y, minlength=n * k)[ok] / total[ok]
        out[ok, 1] = np.bincount(slot, weights=weight * self.phi, minlength=n * k)[ok] / total[ok]
        return out.reshape(n, k, 2)


def _refine(parts: _Constituents, axes: np.ndarray, norm: np.ndarray, iterations: int,
            tolerance: float = 1e-4) -> np.ndarray:
    """One-pass (Weiszfeld) minimisation for β = 1; returns τ per jet, never above the seeds'.

    Only jets still improving by more than ``tolerance`` (relative) are iterated further,
    so the cost is set by the few slow jets, not by every jet times the iteration cap."""
    dr2 = parts.distances(axes)
    tau = parts.tau(dr2, norm)
    active = np.arange(parts.n_jets)
    k = axes.shape[1]
    for _ in range(iterations):
        if active.size == 0:
            break
        ax = axes[active]
        nearest = dr2.argmin(axis=0)
        d = np.sqrt(np.take_along_axis(dr2, nearest[None], axis=0)[0])
        # a constituent sitting on the axis has no direction to pull in (and 1/ΔR would pin
        # the axis to it for ever): the modified Weiszfeld step leaves it out
        weight = np.where(d > 1e-9, parts.pt / np.maximum(d, 1e-9), 0.0)
        new = parts.weighted_means(parts.jet * k + nearest, weight, ax)
        new_dr2 = parts.distances(new)
        new_tau = parts.tau(new_dr2, norm[active])
        better = new_tau < tau[active]
        axes[active[better]] = new[better]
        gain = tau[active] - new_tau
        tau[active[better]] = new_tau[better]
        keep = better & (gain > tolerance * np.maximum(tau[active], 1e-12))
        # the jets iterated further all took their new axes: their distances are new_dr2's
        dr2 = new_dr2[:, keep[parts.jet]]
        parts = parts.subset(keep)
        active = active[keep]
    return tau


def _nsubjettiness_flat(parts: _Constituents, n_max: int, r0: float, iterations: int) -> np.ndarray:
    n = parts.n_jets
    counts = parts.counts
    norm = parts.per_jet(parts.pt) * r0
    norm = np.where(norm > 0, norm, 1.0)
    out = np.zeros((n, n_max))
    if len(parts.pt) == 0:
        return out
    points = np.stack([parts.y, parts.phi], axis=-1)  # (T, 2)
    # pT order within each jet (stable, as argsort of -pT per jet), and each jet's first index
    order = np.lexsort((-parts.pt, parts.jet))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    greedy = np.zeros((n, 1, 2))
    greedy[has, 0] = points[order[starts[has]]]  # the hardest constituent
    for n_axes in range(1, n_max + 1):
        if n_axes > 1:
            contribution = parts.pt * np.sqrt(np.minimum.reduce(parts.distances(greedy), axis=0))
            pick = parts.first_max(contribution)
            extra = greedy[:, 0].copy()  # a jet with no constituent keeps a copy (τ is 0 there)
            extra[pick >= 0] = points[pick[pick >= 0]]
            greedy = np.concatenate([greedy, extra[:, None, :]], axis=1)
        hardest = greedy.copy()  # jets with fewer constituents than axes keep the greedy ones
        for a in range(n_axes):
            enough = counts > a
            hardest[enough, a] = points[order[starts[enough] + a]]
        nearest = parts.distances(greedy).argmin(axis=0)
        centroids = parts.weighted_means(parts.jet * n_axes + nearest, parts.pt, greedy)
        # with one axis the hardest constituent is the greedy seed: refined once, not twice
        seed_sets = (greedy, centroids) if n_axes == 1 else (greedy, hardest, centroids)
        taus = [_refine(parts, seeds.copy(), norm, iterations) for seeds in seed_sets]
        out[:, n_axes - 1] = np.minimum.reduce(taus)
    return out


#: jets per thread below which splitting the minimisation across threads does not pay
THREAD_JETS = 256


def _on_threads(parts: _Constituents, n_max: int, r0: float, iterations: int,
                threads: int | None = None) -> np.ndarray:
    """:func:`_nsubjettiness_flat` on contiguous runs of jets, one per thread: every step is per
    jet or per constituent, so the numbers are those of one pass, and numpy's long array
    operations release the GIL."""
    from hepaudit.metrics import on_threads
    from hepaudit.model.blocks import block_threads

    threads = min(threads or block_threads(0), parts.n_jets // THREAD_JETS)
    if threads <= 1:
        return _nsubjettiness_flat(parts, n_max, r0, iterations)
    bounds = np.linspace(0, parts.n_jets, threads + 1).astype(np.int64)
    jets = np.arange(parts.n_jets)

    def run(i: int) -> np.ndarray:
        keep = (jets >= bounds[i]) & (jets < bounds[i + 1])
        return _nsubjettiness_flat(parts.subset(keep), n_max, r0, iterations)

    return np.concatenate(on_threads(run, threads, threads))


def nsubjettiness(
    pt: np.ndarray, y: np.ndarray, phi: np.ndarray, n_max: int = 3, r0: float = 0.8, iterations: int = 10
) -> np.ndarray:
    """(N, n_max) τ_1..τ_n_max for zero-padded constituents (N, M): pT (0 for padding),
    rapidity and φ; β = 1. See the module docstring for the axis choice."""
    pt = np.asarray(pt, dtype=np.float64)
    real = pt > 0  # padding (and pT = 0) weighs nothing in any sum
    jet = np.broadcast_to(np.arange(pt.shape[0])[:, None], pt.shape)[real]
    parts = _Constituents(pt[real], np.asarray(y, dtype=np.float64)[real],
                          np.asarray(phi, dtype=np.float64)[real], jet, pt.shape[0])
    return _nsubjettiness_flat(parts, n_max, r0, iterations)


def jet_observables(parts: ak.Array, tau: bool = True, r0: float = 0.8,
                    tau_jets: np.ndarray | None = None, jet: JetMomentum | None = None) -> dict[str, np.ndarray]:
    """Mass, pT and multiplicity of the jets (the sum of all constituents), and with ``tau``
    the N-subjettiness τ1, τ2, τ3 and ratios τ21, τ32, from vector ``Momentum4D`` records.

    ``tau_jets`` (a bool per jet): the jets whose τ are computed, NaN elsewhere (τ costs
    far more than the rest: a sample of jets is enough for correlations). ``jet``: the
    constituents' summed four-momentum when already known (``Chunk.jet_momentum``)."""
    if jet is None:
        px, py, pz, energy = (ak.to_numpy(ak.sum(c, axis=1)).astype(np.float64)
                              for c in (parts.px, parts.py, parts.pz, parts.E))
    else:
        px, py, pz, energy = jet.px, jet.py, jet.pz, jet.energy
    out = {
        "mass": np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)),
        "pt": np.hypot(px, py),
        "n_constituents": ak.to_numpy(ak.num(parts, axis=1)).astype(np.float64),
    }
    if tau and (tau_jets is None or tau_jets.all()):
        out.update(tau_observables(parts, px, py, pz, energy, r0))
    elif tau:
        assert tau_jets is not None
        some = tau_observables(parts[tau_jets], px[tau_jets], py[tau_jets], pz[tau_jets], energy[tau_jets], r0)
        for name, values in some.items():
            out[name] = np.full(len(px), np.nan)
            out[name][tau_jets] = values
    return out


def tau_observables(parts: ak.Array, px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray,
                    r0: float = 0.8) -> dict[str, np.ndarray]:
    """τ1, τ2, τ3, τ21 and τ32 of the jets ``parts`` (whose summed four-momentum is px, py, pz, E)."""
    counts = ak.to_numpy(ak.num(parts, axis=1))
    jet = np.repeat(np.arange(len(counts)), counts)
    pt = ak.to_numpy(ak.flatten(parts.pt)).astype(np.float64)
    # rapidity and φ relative to the jet axis: the N-subjettiness sums are translation
    # invariant, and small offsets keep the φ wrap away from the constituents
    jet_y = 0.5 * np.log(np.maximum(energy + pz, 1e-300) / np.maximum(energy - pz, 1e-300))
    jet_phi = np.arctan2(py, px)
    y = np.nan_to_num(ak.to_numpy(ak.flatten(parts.rapidity)).astype(np.float64) - jet_y[jet])
    phi = wrap_phi(ak.to_numpy(ak.flatten(parts.phi)).astype(np.float64) - jet_phi[jet])
    real = pt > 0
    taus = _on_threads(_Constituents(pt[real], y[real], phi[real], jet[real], len(counts)), 3, r0, 10)
    out = {"tau1": taus[:, 0], "tau2": taus[:, 1], "tau3": taus[:, 2]}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tau21"] = np.where(taus[:, 0] > 1e-12, taus[:, 1] / taus[:, 0], np.nan)
        out["tau32"] = np.where(taus[:, 1] > 1e-12, taus[:, 2] / taus[:, 1], np.nan)
    return out


#: names of the observables :func:`tau_observables` returns
TAU_OBSERVABLES: tuple[str, ...] = ("tau1", "tau2", "tau3", "tau21", "tau32")


def constituents_from_arrays(arrays: ak.Array, momentum: object) -> ak.Array:
    """The constituents of a chunk as ``Momentum4D`` records, from an input's ``momentum`` config."""
    m = momentum
    if getattr(m, "px", None):
        return momenta_from_cartesian(arrays[m.px], arrays[m.py], arrays[m.pz], arrays[m.energy])  # type: ignore[attr-defined]
    return momenta_from_ptetaphi(arrays[m.pt], arrays[m.eta], arrays[m.phi], arrays[m.mass])  # type: ignore[attr-defined]
