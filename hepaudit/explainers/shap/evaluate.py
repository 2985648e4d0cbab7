"""v(S) = Σ_b w_b f(x_S, b_~S) for many jets and coalitions, in large onnxruntime batches.

Masked inputs are built with numpy broadcasting, one block of coalitions at a time: for
each model input, a flat position owned by player p takes the jet's value when p is in
the coalition and the background row's value otherwise; positions no player owns (masks,
inputs that are not features) always keep the jet's value. Blocks are sized so that one
block holds at most about ``max_rows`` model rows, which bounds memory whatever the number
of coalitions, background rows and jets.

Blocks are small on purpose: the hidden activations of a big batch spill out of the CPU
caches, and a block of masked rows this size is still in cache when the model reads it
(benchmarks/bench_shap.py). The blocks of coalitions are built and scored on every core,
each by a one-thread twin of the tagger (:meth:`Tagger.one_thread`, :mod:`hepaudit.model.blocks`);
the blocks do not depend on the number of threads, so neither do the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hepaudit.model.blocks import for_blocks
from hepaudit.model.session import CACHED_ROWS, Tagger

MAX_ROWS = CACHED_ROWS  # model rows per block (and per onnxruntime call): 1.5 MB for a 90-feature tagger


@dataclass
class Players:
    """The players of the game: names and the feature indices each one moves together."""

    names: list[str]
    members: list[list[int]]

    def __len__(self) -> int:
        return len(self.names)

    def owners(self, slots: Sequence[object], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """For each model input, the owning player of every flat position (−1: nobody)."""
        out = {name: np.full(int(np.prod(shape)), -1, np.int64) for name, shape in shapes.items()}
        for p, members in enumerate(self.members):
            for k in members:
                slot = slots[k]
                out[slot.input][slot.index] = p  # type: ignore[attr-defined]
        return out


class CoalitionEvaluator:
    """Evaluates v(S) of a fixed set of jets against a fixed weighted background."""

    def __init__(self, tagger: Tagger, owners: dict[str, np.ndarray], jets: dict[str, np.ndarray],
                 background: dict[str, np.ndarray], background_weights: np.ndarray,
                 max_rows: int = MAX_ROWS) -> None:
        self.tagger = tagger.one_thread()
        self.threads = tagger.block_threads
        self.owners = owners
        self.n = len(next(iter(jets.values())))
        self.shapes = {name: value.shape[1:] for name, value in jets.items()}
        self.jets = {name: value.reshape(self.n, -1).astype(np.float32) for name, value in jets.items()}
        self.background = {name: np.asarray(value, np.float32).reshape(len(background_weights), -1)
                           for name, value in background.items()}
        self.weights = np.asarray(background_weights, np.float64)
        # the masked rows are assembled on the float32 bit patterns: b ^ (mask & (x ^ b)) is x
        # where the mask is set and b elsewhere, exactly, in two cheap integer passes (a
        # fill plus a masked copy took 4x as long)
        self._bg_bits = {name: value.view(np.uint32) for name, value in self.background.items()}
        self._xor_cache: tuple[int, int, dict[str, np.ndarray]] | None = None
        self.max_rows = max_rows
        self.forward_rows = 0  # model rows evaluated so far (for benchmarks)

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        """v (n_jets, n_coalitions) for a bool matrix of coalitions (C, M)."""
        coalitions = np.asarray(coalitions, bool)
        n_b = len(self.weights)
        out = np.empty((self.n, len(coalitions)))
        per_jet_rows = n_b
        jets_per_block = max(1, min(self.n, self.max_rows // per_jet_rows))
        coal_per_block = max(1, self.max_rows // (per_jet_rows * jets_per_block))
        for j0 in range(0, self.n, jets_per_block):
            self._jets(coalitions, j0, min(self.n, j0 + jets_per_block), coal_per_block, out)
        return out

    def _jets(self, coalitions: np.ndarray, j0: int, j1: int, coal_per_block: int, out: np.ndarray) -> None:
        """v of the jets j0:j1 for every coalition, blocks of coalitions on ``self.threads`` threads."""
        xor = self._jet_xor(j0, j1)

        def block(_: int, c0: int, c1: int) -> None:
            out[j0:j1, c0:c1] = self._block(coalitions[c0:c1], j0, j1, xor)

        for_blocks(len(coalitions), coal_per_block, self.threads, block)
        self.forward_rows += len(coalitions) * (j1 - j0) * len(self.weights)

    def _block(self, block: np.ndarray, j0: int, j1: int, xor: dict[str, np.ndarray]) -> np.ndarray:
        n_c, n_j, n_b = len(block), j1 - j0, len(self.weights)
        # an extra always-true column makes positions owned by nobody (index −1) keep the jet's value
        take = np.concatenate([block, np.ones((n_c, 1), bool)], axis=1)
        feed = {}
        for name, owner in self.owners.items():
            mask = np.where(take[:, owner], np.uint32(0xFFFFFFFF), np.uint32(0))  # (C, D)
            rows = np.empty((n_c, n_j, n_b, len(owner)), np.uint32)
            np.bitwise_and(mask[:, None, None, :], xor[name][None], out=rows)
            rows ^= self._bg_bits[name][None, None]
            feed[name] = rows.view(np.float32).reshape((n_c * n_j * n_b, *self.shapes[name]))
        score = self.tagger.run(feed, extra=False).score
        # rows are ordered (coalition, jet, background): average over the background
        v = score.reshape(n_c, n_j, n_b) @ self.weights
        return v.T

    def _jet_xor(self, j0: int, j1: int) -> dict[str, np.ndarray]:
        """x ^ b on the bit patterns, (J, B, D) per input, for the jets j0:j1 (kept for the next block)."""
        if self._xor_cache is None or self._xor_cache[:2] != (j0, j1):
            xor = {name: self.jets[name][j0:j1].view(np.uint32)[:, None, :] ^ self._bg_bits[name][None]
                   for name in self.owners}
            self._xor_cache = (j0, j1, xor)
        return self._xor_cache[2]
