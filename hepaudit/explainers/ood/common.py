"""Shared pieces of the OOD explainers: reference sampling, thresholds, fractions, jet kinematics.

The reference sample is split and subsampled by a hash of each jet's entry number (seeded
with the audit seed), never by position in a chunk, so the result does not depend on how
the executor cut the sample into chunks and states merge exactly:

- ``entry_keys``: a 64-bit splitmix hash per entry; its lowest bit picks the half (0: the
  *fit* half, which fits the autoencoder and sets the threshold; 1: the *held-out* half,
  on which the reference flagged fraction is measured), the remaining bits order the jets.
- :class:`Reservoir`: the ``capacity`` jets with the smallest keys (a bottom-k sample: a
  uniform random subsample of fixed size, mergeable by taking the bottom k of a union).
  ``bound`` lets a caller skip expensive work on jets that cannot enter any more.

The threshold is the ``quantile`` of the fit half's scores; a jet is flagged when its score
is strictly above it. The flagged fraction of n jets drawn from the reference distribution
is then 1 − quantile within the binomial uncertainty sqrt(q (1 − q) / n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hepaudit.explainers.base import AuditContext, Chunk
from hepaudit.lazy import lazy_module
from hepaudit.metrics import roc_auc
from hepaudit.sampling import seeded_keys

if TYPE_CHECKING:
    import awkward as ak
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    ak = lazy_module("awkward")

LOW_AUROC = (
    "AUROC well below 0.5: the audited jets score lower than the reference (for an autoencoder, "
    "e.g. simpler jets that it reconstructs better); the data differ from the reference although "
    "few jets are flagged"
)
def entry_keys(entries: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (entry, seed): a deterministic pseudo-random 64-bit key per jet."""
    return seeded_keys(entries, seed % 2**32 + 1)


def held_out(keys: np.ndarray) -> np.ndarray:
    """True for the held-out half of the reference (lowest key bit set)."""
    return (keys & np.uint64(1)).astype(bool)


@dataclass
class Reservoir:
    """The ``capacity`` jets with the smallest keys seen so far, with per-jet columns."""

    capacity: int
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def bound(self) -> np.uint64:
        """Keys at or above this cannot enter the reservoir any more."""
        if len(self.keys) < self.capacity:
            return np.uint64(np.iinfo(np.uint64).max)
        return self.keys.max()

    def candidates(self, keys: np.ndarray) -> np.ndarray:
        """Which of these keys could still enter (a mask)."""
        if len(self.keys) < self.capacity:
            return np.ones(len(keys), bool)
        return keys < self.bound()

    def add(self, keys: np.ndarray, **columns: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if not self.columns:
            self.columns = {k: v[:0] for k, v in columns.items()}
        keys = np.concatenate([self.keys, keys])
        joined = {k: np.concatenate([self.columns[k], columns[k]]) for k in self.columns}
        if len(keys) > self.capacity:
            keep = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            keys = keys[keep]
            joined = {k: v[keep] for k, v in joined.items()}
        self.keys = keys
        self.columns = joined

    def merged(self, other: Reservoir) -> Reservoir:
        out = Reservoir(self.capacity, self.keys.copy(), dict(self.columns))
        out.add(other.keys, **other.columns)
        return out

    def sorted_columns(self) -> dict[str, np.ndarray]:
        """The columns in key order, so anything fitted on them is independent of chunking."""
        order = np.argsort(self.keys, kind="stable")
        return {k: v[order] for k, v in self.columns.items()}


def quantile_threshold(scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the fit-half scores (numpy's default linear interpolation)."""
    if len(scores) == 0:
        raise ValueError("the reference sample has no jets in its fit half; give a larger reference")
    return float(np.quantile(scores, quantile))


def flagged_fraction(scores: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """Fraction of jets with score > threshold, and its binomial standard error."""
    n = len(scores)
    if n == 0:
        return None, None
    p = float(np.mean(scores > threshold))
    return p, float(np.sqrt(max(p * (1 - p), 1.0 / n) / n))


def auroc_reference_vs_audited(reference: np.ndarray, audited: np.ndarray) -> float | None:
    """AUROC of the score separating audited (1) from reference (0) jets; 0.5 = indistinguishable."""
    if len(reference) == 0 or len(audited) == 0:
        return None
    scores = np.concatenate([reference, audited])
    labels = np.concatenate([np.zeros(len(reference), np.int8), np.ones(len(audited), np.int8)])
    value = roc_auc(scores, labels)
    return None if np.isnan(value) else value


def real_reference(context: AuditContext, options: Any) -> bool:
    """A reference other than the audited data: ``[reference]`` or the explainer's own table."""
    own = getattr(options, "reference", None)
    return bool(context.has_reference or (isinstance(own, dict) and own))


def resolve_path(context: AuditContext, path: str) -> str:
    """An option's path, relative to the config file's folder (the current folder without one)."""
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_absolute() or context.config_dir is None:
        return str(p)
    return str(context.config_dir / p)


# -- jet kinematics for the binned flagged fractions ---------------------------------------------

_JET_PT = ("jet_pt", "pt", "fj_pt", "jet_pT")
_JET_MASS = ("jet_mass", "jet_m", "mass", "fj_mass", "jet_sdmass", "fj_msoftdrop")


def jet_kinematics(chunk: Chunk) -> tuple[np.ndarray, np.ndarray] | None:
    """Jet pT and mass per jet: the sum of the constituents' four-momenta of the first
    constituents input (``Chunk.jet_momentum``, shared with the other explainers), else flat
    branches named like ``jet_pt`` / ``jet_mass``; None if neither."""
    jet = chunk.jet_momentum()
    if jet is not None:
        return jet.pt_and_mass()
    arrays = chunk.arrays
    if arrays is None:
        return None
    fields = set(arrays.fields)
    pt_name = next((b for b in _JET_PT if b in fields), None)
    mass_name = next((b for b in _JET_MASS if b in fields), None)
    if pt_name is None or mass_name is None:
        return None
    return (
        ak.to_numpy(arrays[pt_name]).astype(np.float64),
        ak.to_numpy(arrays[mass_name]).astype(np.float64),
    )


def binned_fraction(values: np.ndarray, flags: np.ndarray, edges: np.ndarray) -> dict[str, list[Any]]:
    """Flagged fraction and its binomial error in bins of ``values`` (edges include both ends).

    Values outside the edges (reference jets beyond the audited jets' range) are left out,
    not counted in the outermost bins."""
    inside = (values >= edges[0]) & (values <= edges[-1])
    if not inside.all():
        values, flags = values[inside], flags[inside]
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(index, minlength=len(edges) - 1).astype(float)
    k = np.bincount(index, weights=flags.astype(float), minlength=len(edges) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n > 0, k / n, np.nan)
        err = np.where(n > 0, np.sqrt(np.maximum(frac * (1 - frac), 1.0 / np.maximum(n, 1)) / n), np.nan)
    return {
        "jets": n.astype(int).tolist(),
        "flagged_fraction": [None if not np.isfinite(v) else float(v) for v in frac],
        "error": [None if not np.isfinite(v) else float(v) for v in err],
    }


def quantile_edges(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Edges with about equal numbers of jets per bin (fewer bins when values repeat)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.array([0.0, 1.0])
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def kinematic_bins(
    audited: dict[str, np.ndarray], reference: dict[str, np.ndarray], threshold: float, bins: int = 10
) -> dict[str, Any]:
    """Flagged fraction vs jet pT and vs jet mass, for audited and held-out reference jets.

    ``audited`` and ``reference`` hold ``score``, ``pt``, ``mass`` arrays (pt/mass may be
    missing); the bin edges are quantiles of the audited jets.
    """
    out: dict[str, Any] = {}
    for var in ("pt", "mass"):
        if var not in audited or len(audited[var]) == 0:
            continue
        edges = quantile_edges(audited[var], bins)
        entry: dict[str, Any] = {
            "edges": edges.tolist(),
            "audited": binned_fraction(audited[var], audited["score"] > threshold, edges),
        }
        if var in reference and len(reference[var]):
            entry["reference"] = binned_fraction(reference[var], reference["score"] > threshold, edges)
        out[f"flagged_vs_{var}"] = entry
    return out
