"""What the OOD explainers share once every jet has a score: its flag, the audited jets'
kinematics kept chunk by chunk, and the threshold part of the result.

``ood_ae`` (reconstruction error) and ``ood_ensemble`` (disagreement) differ in how a jet is
scored; from there on the scheme of :mod:`hepaudit.explainers.ood.common` is the same:
a jet is flagged when its score is above the threshold, each explainer's flag is ORed into
the shared ``ood_flag`` column, and the report has flagged fractions (audited and held-out
reference), the AUROC reference vs audited and the flagged fraction in bins of jet pT and
mass, the score histograms the figure draws, or, without a reference sample, a note saying
why the reference numbers are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepaudit.explainers.base import Chunk
from hepaudit.explainers.ood.common import (
    LOW_AUROC,
    Reservoir,
    auroc_reference_vs_audited,
    entry_keys,
    flagged_fraction,
    held_out,
    jet_kinematics,
    kinematic_bins,
)


def flag_jets(chunk: Chunk, name: str, score: np.ndarray, threshold: float) -> np.ndarray:
    """``{name}_flag`` per jet (score > threshold), also ORed into the shared ``ood_flag``."""
    flag = score > threshold
    chunk.per_jet[f"{name}_flag"] = flag
    previous = chunk.per_jet.get("ood_flag")
    chunk.per_jet["ood_flag"] = flag if previous is None else (previous | flag)
    return flag


def reference_split(chunk: Chunk, seed: int, fit: Reservoir, held: Reservoir
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference chunk's jet keys, and which jets can still enter the fit half's reservoir
    and which the held-out half's (the others need no work)."""
    keys = entry_keys(chunk.entries, seed)
    is_held = held_out(keys)
    return keys, ~is_held & fit.candidates(keys), is_held & held.candidates(keys)


def add_held_out(held: Reservoir, chunk: Chunk, keys: np.ndarray, keep: np.ndarray, **columns: np.ndarray) -> None:
    """The ``keep`` jets of a reference chunk (``columns`` already selected) into the held-out
    reservoir, with their pT and mass for the binned fractions."""
    if not keep.any():
        return
    kin = jet_kinematics(chunk)
    if kin is not None:
        columns.update(pt=kin[0][keep], mass=kin[1][keep])
    held.add(keys[keep], **columns)


@dataclass
class Kinematics:
    """Jet pT and mass of the audited jets, chunk by chunk (float32), for the binned fractions."""

    pt: list[np.ndarray] = field(default_factory=list)
    mass: list[np.ndarray] = field(default_factory=list)

    def add(self, chunk: Chunk) -> None:
        kin = jet_kinematics(chunk)
        if kin is not None:
            self.pt.append(kin[0].astype(np.float32))
            self.mass.append(kin[1].astype(np.float32))

    def merged(self, other: Kinematics) -> Kinematics:
        return Kinematics(self.pt + other.pt, self.mass + other.mass)

    def with_scores(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """``score``, and ``pt`` and ``mass`` when known: what the binned fractions and figures take."""
        out = {"score": scores}
        if self.pt:
            out.update(pt=np.concatenate(self.pt), mass=np.concatenate(self.mass))
        return out


def score_histogram(audited: np.ndarray, reference: np.ndarray | None, bins: int = 60) -> dict[str, Any] | None:
    """Jet counts of the audited and held-out reference scores in shared bins (what the
    figure draws, kept in report.json): log-spaced when the scores span more than two decades,
    as reconstruction errors do. None without a finite score."""
    finite = [v[np.isfinite(v)] for v in (audited, reference) if v is not None]
    joined = np.concatenate(finite) if finite else np.zeros(0)
    if len(joined) == 0:
        return None
    lo, hi = float(joined.min()), float(joined.max())
    log_x = lo > 0 and hi / lo > 100
    if log_x:
        edges = np.geomspace(lo, hi, bins + 1)
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    return {
        "edges": edges.tolist(),
        "log_x": bool(log_x),
        "audited": np.histogram(finite[0], edges)[0].tolist(),
        "reference": np.histogram(finite[1], edges)[0].tolist() if len(finite) > 1 else None,
    }


def threshold_fields(audited: dict[str, np.ndarray], reference: dict[str, np.ndarray], threshold: float,
                     real_reference: bool, note: str) -> tuple[dict[str, Any], list[str]]:
    """The result fields about the threshold, and warnings.

    ``audited`` and ``reference`` (the held-out half) hold ``score`` and, when known, ``pt``
    and ``mass``. ``note`` says what is missing when the audited data is its own reference.
    """
    warnings: list[str] = []
    if not real_reference:
        fields: dict[str, Any] = {
            "reference": "audited data (no reference configured)",
            "flagged_fraction": None,
            "reference_flagged_fraction": None,
            "auroc": None,
            "note": note,
            "score_histogram": score_histogram(audited["score"], None),
        }
        fields.update(kinematic_bins(audited, {}, threshold))
        return fields, [note]
    fraction, fraction_error = flagged_fraction(audited["score"], threshold)
    ref_fraction, ref_error = flagged_fraction(reference["score"], threshold)
    auroc = auroc_reference_vs_audited(reference["score"], audited["score"])
    fields = {
        "reference": "reference sample (held-out half for the reference numbers)",
        "flagged_fraction": fraction,
        "flagged_fraction_error": fraction_error,
        "reference_flagged_fraction": ref_fraction,
        "reference_flagged_fraction_error": ref_error,
        "auroc": auroc,
        "score_histogram": score_histogram(audited["score"], reference["score"]),
    }
    fields.update(kinematic_bins(audited, reference, threshold))
    if auroc is not None and auroc < 0.4:
        warnings.append(LOW_AUROC)
    return fields, warnings
