"""The backward pass over a chunk of jets, block by block, so that memory is bounded.

The engine reads the forward value of every hidden tensor on the path to the score and makes
a gradient (or relevance) of the same size for each. For a graph network that is many
megabytes a jet (ParticleNet's EdgeConv features, an interaction network's edges), so the
forward values are not exposed on the whole chunk: :class:`BlockedBackward` cuts the jets
into blocks whose values and gradients fit in ``budget_mb``, runs onnxruntime on each block
exposing only what the engine reads (``Tagger.raw_values``), runs the engine, and keeps the
per-jet results. The block size is learnt from the model: the bytes of those tensors for
one jet. A model with a fixed batch is run one fixed batch at a time; when every tensor the
engine reads is one row per jet, the padding rows are cut before the backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.model.backward.engine import BackwardEngine, LrpOutput, gradient_seed, logit_and_gradient
from hepaudit.model.backward.rules import RuleSet

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.model.session import Tagger

#: Bytes held per byte of forward values during a backward block: the values, their
#: gradients, and the temporaries of the widest op.
OVERHEAD = 4


class BlockedBackward:
    """Gradients and LRP relevance of a tagger's score for any number of jets, in blocks."""

    def __init__(self, tagger: Tagger, engine: BackwardEngine, budget_mb: float = 256.0) -> None:
        self.tagger = tagger
        self.engine = engine
        self.budget = budget_mb * 2**20
        self._rows: int | None = None
        self._cut_padding = True  # a fixed batch: every value is one row per jet (learnt)

    def rows(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Jets per block: the budget over the bytes the engine reads for one jet."""
        if self._rows is None:
            fixed = self.tagger.fixed_batch
            values = self.tagger.raw_values({k: v[:1] for k, v in inputs.items()}, self.engine.needed)
            if fixed:
                self._cut_padding = all(v.ndim and v.shape[0] == fixed for v in values.values())
                self._rows = fixed
            else:
                per_jet = sum(v.nbytes for v in values.values()) + sum(v[:1].nbytes for v in inputs.values())
                rows = int(self.budget // max(OVERHEAD * per_jet, 1))
                cap = self.tagger.memory_rows or self.tagger.config.batch_size
                self._rows = max(1, min(rows, self.tagger.config.batch_size, cap))
        return self._rows

    def blocks(self, inputs: Mapping[str, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(jets in the block, the forward values the engine reads: inputs and hidden tensors)."""
        n = len(next(iter(inputs.values())))
        rows = self.rows(inputs)
        for start in range(0, n, rows):
            feed = {k: v[start:start + rows] for k, v in inputs.items()}
            m = len(next(iter(feed.values())))
            values = self.tagger.raw_values(feed, self.engine.needed)
            fixed = self.tagger.fixed_batch
            if fixed and m < fixed:
                if self._cut_padding:
                    values = {k: v[:m] for k, v in values.items()}
                else:  # the engine runs on the whole padded batch; its results are cut
                    feed = self.tagger.padded_feed(feed)
            values.update(feed)
            yield m, values

    def gradient(self, inputs: Mapping[str, np.ndarray], what: str = "logit"
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """∂(logit or probability)/∂(input) per model input, and the logit z(x), per jet."""
        target = self.engine.target
        grads: list[dict[str, np.ndarray]] = []
        logits: list[np.ndarray] = []
        for m, values in self.blocks(inputs):
            seed = gradient_seed(target, values[target.tensor], what)
            grads.append({k: g[:m] for k, g in self.engine.gradient(values, seed).items()})
            logits.append(logit_and_gradient(target, values[target.tensor])[0][:m])
        return _joined(grads), np.concatenate(logits)

    def relevance(self, inputs: Mapping[str, np.ndarray], rules: RuleSet) -> LrpOutput:
        """LRP relevance per model input, per jet (methods.md's seed), block by block."""
        parts = []
        for m, values in self.blocks(inputs):
            out = self.engine.relevance(values, rules)
            parts.append(LrpOutput({k: r[:m] for k, r in out.relevance.items()}, out.seed_total[:m],
                                   out.absorbed_bias[:m]))
        if len(parts) == 1:
            return parts[0]
        return LrpOutput(_joined([p.relevance for p in parts]), np.concatenate([p.seed_total for p in parts]),
                         np.concatenate([p.absorbed_bias for p in parts]))


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
