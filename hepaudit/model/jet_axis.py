"""Where the jets are in a hidden tensor: its jet axis and how many entries each jet has there.

onnxruntime returns hidden tensors in the graph's own layout: (N, C) for a dense layer,
(N, C, P, K) for ParticleNet's EdgeConv, (N·E, C) for an interaction network's edges (jets
times edges on axis 0), (C, N·P) after a transpose and reshape. To read such a tensor per
jet, hepaudit learns its layout once from the model itself: run it on one jet and on two; the
axis whose length doubles is the jet axis and its length for one jet is the jet's share. The
two-jet tensor's first jet must then equal the one-jet tensor (jets stored one after the
other); a tensor without such an axis, or whose entries mix jets, has no per-jet view and
is reported as such, never cut to the number of jets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JetAxis:
    """A tensor's jet axis and each jet's length along it (1: one entry per jet)."""

    axis: int
    per_jet: int = 1

    @property
    def is_rows(self) -> bool:
        """Axis 0 with one row per jet: the tensor is already (N, ...)."""
        return self.axis == 0 and self.per_jet == 1

    def view(self, value: np.ndarray, n: int) -> np.ndarray:
        """``value`` as (n, ...) per jet, each jet's part laid out as the tensor of that jet alone:
        the jet axis is split into (n, per_jet) in place and the n moved first, so (N·E, C) becomes
        (N, E, C) and (C, N·P) becomes (N, C, P) (a view when the memory order allows)."""
        if self.is_rows:
            return value
        shape = value.shape[:self.axis] + (n, self.per_jet) + value.shape[self.axis + 1:]
        split = value.reshape(shape)
        moved = np.moveaxis(split, self.axis, 0)
        return moved if self.per_jet > 1 else moved.reshape((n,) + moved.shape[1:self.axis + 1]
                                                             + moved.shape[self.axis + 2:])

    def describe(self) -> str:
        if self.is_rows:
            return "one row per jet"
        return f"axis {self.axis}, {self.per_jet} entries per jet"


ROWS = JetAxis(0, 1)


def learn_jet_axis(one: np.ndarray, two: np.ndarray) -> JetAxis | None:
    """The jet axis of a tensor from its values for one jet (``one``) and for that jet followed by
    another (``two``); None when no single axis doubles or the first jet's entries differ."""
    if one.ndim == 0 or one.ndim != two.ndim:
        return None
    grown = [i for i, (a, b) in enumerate(zip(one.shape, two.shape)) if b != a]
    if len(grown) != 1 or two.shape[grown[0]] != 2 * one.shape[grown[0]] or one.shape[grown[0]] == 0:
        return None
    axis = JetAxis(grown[0], one.shape[grown[0]])
    first = axis.view(two, 2)[0]
    own = axis.view(one, 1)[0]
    if one.dtype.kind in "fc":
        scale = float(np.nanmax(np.abs(own))) if own.size and np.isfinite(own).any() else 0.0
        same = np.allclose(first, own, rtol=1e-3, atol=1e-4 * max(scale, 1e-6), equal_nan=True)
    else:
        same = np.array_equal(first, own)
    return axis if same else None
