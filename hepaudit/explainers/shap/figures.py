"""What SHAP's figures need beyond the shared ones: each player's value per jet.

The beeswarm and dependence plots themselves are the shared ones of every per-jet
attribution (:mod:`hepaudit.report.explanation_figures`); a group of features is shown at
its first feature's value (for ``particle_i`` groups, the constituent's pT).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepaudit.data.builders import FeatureSlot
from hepaudit.explainers.shap.evaluate import Players


def player_values(players: Players, slots: Sequence[FeatureSlot], jets: dict[str, np.ndarray]) -> np.ndarray:
    """(n, M): each player's value per jet, for players that are single features."""
    n = len(next(iter(jets.values())))
    out = np.empty((n, len(players)))
    for p, members in enumerate(players.members):
        slot = slots[members[0]]
        out[:, p] = jets[slot.input].reshape(n, -1)[:, slot.index]
    return out
