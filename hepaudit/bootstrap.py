"""An error bar on every importance: a Poisson bootstrap over jets that merges like a sum.

Each jet gets R weights w_r ~ Poisson(1), drawn from a hash of its chain entry number, the
audit's seed and r — not from a random stream — so a jet has the same weights whichever
chunk, partition or Dask worker reads it, and the replicates of a sum are sums themselves
(they merge across chunks and workers). A replicate of a mean over jets is
Σ w_r,i x_i / Σ w_r,i; its spread over the R replicates is the standard error
(``score_std``) and its 2.5 and 97.5 percentiles the 95 % interval (``score_ci95``).
``execution.bootstrap`` sets R (0 turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import exp, factorial

import numpy as np

from hepaudit.metrics import on_threads
from hepaudit.results import FeatureScore
from hepaudit.sampling import salt_for, salted_uniform

#: the default number of replicates (``execution.bootstrap``)
REPLICATES = 32
#: from this many jets on, the replicates are drawn on several threads (a chunk's are drawn on one)
THREADED_JETS = 200_000
# the Poisson(1) cumulative distribution, up to where it is 1 in double precision
_CDF = np.cumsum([exp(-1.0) / factorial(k) for k in range(20)])


def poisson_counts(entries: np.ndarray, seed: int, replicates: int, out: np.ndarray | None = None) -> np.ndarray:
    """(R, n) Poisson(1) counts of the jets with these chain entry numbers, uint8 unless
    ``out`` (any numeric dtype, written in place: a large sample's replicates need no second copy)."""
    entries = np.asarray(entries)
    if out is None:
        out = np.empty((replicates, len(entries)), np.uint8)
    target = out

    def row(r: int) -> None:
        target[r] = _inverse_cdf(salted_uniform(entries, salt_for(seed, f"bootstrap-{r}")))

    # the replicates of a whole sample (ΔAUC's finish) on every core: numpy's passes release the GIL
    on_threads(row, replicates, None if len(entries) >= THREADED_JETS else 1)
    return out


def class_weights(labels: np.ndarray | None, weights: np.ndarray | None, n: int) -> np.ndarray:
    """(3, n) float64: each jet's weight (1 without weights) in the row of its class (0
    background, 1 signal, 2 unlabelled: every jet when there are no labels), 0 elsewhere;
    a jet of any other label is in no row. Sums per class are then products with it."""
    out = np.zeros((3, n))
    cls = np.full(n, 2, np.intp) if labels is None else np.asarray(labels).astype(np.intp)
    known = (cls >= 0) & (cls <= 2)
    rows = np.flatnonzero(known)
    out[cls[rows], rows] = 1.0 if weights is None else np.asarray(weights, np.float64)[rows]
    return out


def poisson_weights(entries: np.ndarray, seed: int, replicates: int, out: np.ndarray | None = None) -> np.ndarray:
    """(R, n) float64 Poisson(1) weights (:func:`poisson_counts` as floats)."""
    return poisson_counts(entries, seed, replicates, np.empty((replicates, len(entries))) if out is None else out)


def _inverse_cdf(u: np.ndarray) -> np.ndarray:
    """The Poisson(1) count of each uniform u: how many CDF values are <= u (searchsorted's
    right side), as uint8. Three comparisons settle 98 % of the jets; the rest (u above
    the CDF at 3) are searched."""
    counts = (u >= _CDF[0]).view(np.uint8).copy()
    counts += (u >= _CDF[1]).view(np.uint8)
    counts += (u >= _CDF[2]).view(np.uint8)
    tail = np.flatnonzero(u >= _CDF[3])
    counts[tail] = np.searchsorted(_CDF, u[tail], side="right")
    return counts


@dataclass
class BootstrapMeans:
    """Per class (0 background, 1 signal, 2 unlabelled) and replicate: Σ w·x per unit and Σ w."""

    replicates: int
    seed: int
    sums: np.ndarray | None = None  # (3, R, F)
    weight: np.ndarray = field(default_factory=lambda: np.zeros((3, 0)))  # (3, R)

    def add(self, values: np.ndarray, labels: np.ndarray | None, weights: np.ndarray | None,
            entries: np.ndarray, counts: np.ndarray | None = None) -> None:
        """``values`` (n, F) per jet (e.g. |attribution|); ``weights`` the jets' own weights;
        ``counts`` the jets' :func:`poisson_counts` when already drawn."""
        self.add_weighted(values, class_weights(labels, weights, len(values)), entries, counts)

    def add_weighted(self, values: np.ndarray, per_class: np.ndarray, entries: np.ndarray,
                     counts: np.ndarray | None = None) -> None:
        """:meth:`add` with the jets' :func:`class_weights` ``per_class`` (3, n) already made."""
        n, f = values.shape
        if self.sums is None:
            self.sums = np.zeros((3, self.replicates, f))
            self.weight = np.zeros((3, self.replicates))
        present = np.flatnonzero(per_class.any(axis=1))
        w = (poisson_weights(entries, self.seed, self.replicates) if counts is None
             else counts.astype(np.float64))
        # every present class's replicates as rows of one matrix: one product over the jets
        stacked = (per_class[present, None, :] * w[None, :, :]).reshape(len(present) * self.replicates, n)
        sums = (stacked @ values.astype(np.float64, copy=False)).reshape(len(present), self.replicates, f)
        self.sums[present] += sums
        self.weight[present] += stacked.sum(axis=1).reshape(len(present), self.replicates)

    def merge(self, other: BootstrapMeans) -> BootstrapMeans:
        if self.sums is None:
            return other
        if other.sums is None:
            return self
        return BootstrapMeans(self.replicates, self.seed, self.sums + other.sums, self.weight + other.weight)

    def overall(self) -> np.ndarray | None:
        """(R, F): each replicate's mean over every jet."""
        if self.sums is None:
            return None
        return self.sums.sum(axis=0) / np.maximum(self.weight.sum(axis=0), 1e-300)[:, None]


@dataclass(frozen=True)
class Replicates:
    """An explainer's bootstrap replicates of its ranking: unit names and (R, units) scores."""

    units: str  # "features" or "groups"
    names: list[str]
    values: np.ndarray


def with_intervals(scores: list[FeatureScore], reps: Replicates | None) -> list[FeatureScore]:
    """The scores with ``score_std`` and ``score_ci95`` from the replicates (same names)."""
    if reps is None or not len(reps.values):
        return scores
    index = {n: i for i, n in enumerate(reps.names)}
    std = reps.values.std(axis=0, ddof=1) if len(reps.values) > 1 else np.zeros(reps.values.shape[1])
    low, high = np.percentile(reps.values, [2.5, 97.5], axis=0)
    out = []
    for s in scores:
        i = index.get(s.feature)
        if i is None:
            out.append(s)
            continue
        out.append(FeatureScore(s.feature, s.score, s.score_signal, s.score_background,
                                float(std[i]), [float(low[i]), float(high[i])]))
    return out


def merged(a: BootstrapMeans | None, b: BootstrapMeans | None) -> BootstrapMeans | None:
    """Two partial bootstrap states as one (either may be absent)."""
    if a is None:
        return b
    if b is None:
        return a
    return a.merge(b)


def ranked_with_intervals(scores: list[FeatureScore], boot: BootstrapMeans | None, names: list[str],
                          units: str = "features") -> tuple[list[FeatureScore], list[Replicates]]:
    """``scores`` with their intervals from ``boot`` (the replicates of the means of ``names``),
    and the replicates for the agreement's intervals."""
    reps = boot.overall() if boot is not None else None
    if reps is None:
        return scores, []
    r = Replicates(units, list(names), reps)
    return with_intervals(scores, r), [r]


def unit_intervals(features: list[FeatureScore], groups: list[FeatureScore], reps: np.ndarray | None,
                   feature_names: list[str], group_names: list[str]
                   ) -> tuple[list[FeatureScore], list[FeatureScore], list[Replicates]]:
    """Intervals for an occlusion explainer's units: ``reps`` (R, features + groups) replicates,
    the features' columns first."""
    if reps is None:
        return features, groups, []
    n = len(feature_names)
    replicates = [Replicates("features", list(feature_names), reps[:, :n]),
                  Replicates("groups", list(group_names), reps[:, n:])]
    return with_intervals(features, replicates[0]), with_intervals(groups, replicates[1]), replicates


def centred_interval(estimate: float, replicates: np.ndarray, bounds: tuple[float, float] = (-1.0, 1.0)
                     ) -> list[float] | None:
    """The 95 % interval of a rank correlation ``estimate`` (the sample's) from its bootstrap
    ``replicates``: their spread around their median, carried to the estimate. Resampling adds
    noise to both rankings, so the replicates sit below the sample's value; an interval of
    their own percentiles would not contain it. None with fewer than two finite replicates."""
    values = np.asarray(replicates, np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2 or not np.isfinite(estimate):
        return None
    low, mid, high = np.percentile(values, [2.5, 50.0, 97.5])
    return [float(max(bounds[0], estimate - (mid - low))), float(min(bounds[1], estimate + (high - mid)))]


def jet_weights(entries: list[np.ndarray], weights: np.ndarray, seed: int, replicates: int) -> np.ndarray | None:
    """(R, n) bootstrap weights times the jets' own for the jets kept chunk by chunk (None when off)."""
    if not replicates or not entries:
        return None
    return poisson_weights(np.concatenate(entries), seed, replicates) * weights
