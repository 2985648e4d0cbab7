"""Seeded, mergeable jet reservoirs and the SHAP background (mean, a sample, k-means).

A reservoir keeps the ``size`` jets with the smallest keys, where a jet's key is a hash of
its entry number and a salt derived from the seed. The kept set therefore depends only on
the seed and on which jets were audited, not on the chunking or on the order in which
partial states are merged: ``merge`` is the union of two reservoirs, cut again to ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hepaudit.sampling import salt_for, salted_uniform

__all__ = ["Reservoir", "add_by_class", "entry_keys", "kmeans", "merge_by_class", "salt_for"]

#: The sample keys (:mod:`hepaudit.sampling`), under the names this module has always given them.
entry_keys = salted_uniform


@dataclass
class Reservoir:
    """The ``size`` jets with the smallest keys: entries, inputs (flat rows), score, label."""

    size: int
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    def add(self, keys: np.ndarray, entries: np.ndarray, inputs: dict[str, np.ndarray], score: np.ndarray,
            labels: np.ndarray) -> None:
        if self.size <= 0 or len(keys) == 0:
            return
        # only candidates that can enter: cheap for large chunks
        if len(self.keys) >= self.size:
            cut = self.keys.max()
            keep = keys < cut
            keys, entries, score, labels = keys[keep], entries[keep], score[keep], labels[keep]
            inputs = {k: v[keep] for k, v in inputs.items()}
        if not self.inputs:
            self.inputs = {k: v[:0].copy() for k, v in inputs.items()}
        self._set(np.concatenate([self.keys, keys]), np.concatenate([self.entries, entries]),
                  {k: np.concatenate([self.inputs[k], inputs[k]]) for k in inputs},
                  np.concatenate([self.score, score]), np.concatenate([self.labels, labels]))

    def _set(self, keys: np.ndarray, entries: np.ndarray, inputs: dict[str, np.ndarray], score: np.ndarray,
             labels: np.ndarray) -> None:
        order = np.lexsort((entries, keys))[: self.size]
        self.keys, self.entries = keys[order], entries[order]
        self.score, self.labels = score[order], labels[order]
        self.inputs = {k: v[order] for k, v in inputs.items()}

    def merged(self, other: Reservoir) -> Reservoir:
        out = Reservoir(self.size, self.keys, self.entries, dict(self.inputs), self.score, self.labels)
        if len(other.keys):
            out.add(other.keys, other.entries, other.inputs, other.score, other.labels)
        return out

    def __len__(self) -> int:
        return len(self.keys)


def add_by_class(reservoirs: dict[int, Reservoir], size: int, keys: np.ndarray, entries: np.ndarray,
                 inputs: dict[str, np.ndarray], score: np.ndarray, labels: np.ndarray) -> None:
    """Each jet into its class's reservoir (0 background, 1 signal, 2 unlabelled; made on first
    use with ``size`` places): a sample of ``size`` jets per class. ``inputs`` are flat rows."""
    for c in np.unique(labels):
        sel = labels == c
        reservoir = reservoirs.setdefault(int(c), Reservoir(size))
        reservoir.add(keys[sel], entries[sel], {k: v[sel] for k, v in inputs.items()}, score[sel], labels[sel])


def merge_by_class(a: dict[int, Reservoir], b: dict[int, Reservoir]) -> dict[int, Reservoir]:
    """The per-class reservoirs of the union of two sets of jets."""
    out = dict(a)
    for c, reservoir in b.items():
        out[c] = out[c].merged(reservoir) if c in out else reservoir
    return out


def kmeans(data: np.ndarray, k: int, seed: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means (k-means++ start, Lloyd iterations): centres (k, D) and cluster sizes.

    Features are standardised for the distance (so a pT in GeV does not drown an η), the
    centres are returned in the original units. Empty clusters are dropped.
    """
    rng = np.random.default_rng(seed)
    data = np.asarray(data, np.float64)
    k = min(k, len(data))
    scale = data.std(axis=0)
    scale[scale == 0] = 1.0
    x = (data - data.mean(axis=0)) / scale
    centres = [x[rng.integers(len(x))]]
    dist = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        p = dist / dist.sum() if dist.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
        dist = np.minimum(dist, ((x - centres[-1]) ** 2).sum(axis=1))
    c = np.array(centres)
    assign = np.zeros(len(x), np.int64)
    for it in range(iterations):
        d = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None, :]
        new = d.argmin(axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(len(c)):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(axis=0)
    counts = np.bincount(assign, minlength=len(c))
    keep = counts > 0
    centres_orig = np.array([data[assign == j].mean(axis=0) for j in np.flatnonzero(keep)])
    return centres_orig, counts[keep].astype(np.float64)
