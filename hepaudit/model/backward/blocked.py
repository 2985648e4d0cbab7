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

When the graph is row-wise (an MLP: every tensor one row per jet), each block of the
engine's ``block_rows`` jets goes from the forward to its relevance on one Python thread,
on a one-thread twin of the tagger and one BLAS thread, several blocks at once
(:mod:`hepaudit.model.blocks`): both cores stay busy through the forward and the backward,
and the blocks, hence the numbers, are the same for any number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hepaudit.model.backward.blas import blas_threads
from hepaudit.model.backward.engine import BackwardEngine, LrpOutput, gradient_seed, logit_and_gradient
from hepaudit.model.backward.rules import RuleSet
from hepaudit.model.blocks import block_starts, for_blocks

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.model.session import Tagger

R = TypeVar("R")

#: Bytes held per byte of forward values during a backward block: the values, their
#: gradients, and the temporaries of the widest op.
OVERHEAD = 4


class BlockedBackward:
    """Gradients and LRP relevance of a tagger's score for any number of jets, in blocks."""

    def __init__(self, tagger: Tagger, engine: BackwardEngine, budget_mb: float = 256.0,
                 threads: int | None = None) -> None:
        """``threads``: blocks of a row-wise graph walked at once (default: ``tagger.block_threads``)."""
        self.tagger = tagger
        self.engine = engine
        self.threads = tagger.block_threads if threads is None else max(1, threads)
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

    def _pipelined(self) -> bool:
        """Whether each engine block runs from its forward to its result on one thread."""
        engine = self.engine
        return bool(engine.row_wise and engine.block_rows and not self.tagger.fixed_batch)

    def _each_block(self, inputs: Mapping[str, np.ndarray], work: Callable[[int, int, dict[str, np.ndarray]], R]
                    ) -> list[R]:
        """``work(first row, jets, values)`` for every block, results in block order."""
        if not self._pipelined():
            done, start = [], 0
            for m, values in self.blocks(inputs):
                done.append(work(start, m, values))
                start += m
            return done
        n = len(next(iter(inputs.values())))
        rows = min(self.rows(inputs), int(self.engine.block_rows or 0))
        single = self.tagger.one_thread()
        results: list[R | None] = [None] * len(block_starts(n, rows))

        def block(i: int, start: int, stop: int) -> None:
            feed = {k: v[start:stop] for k, v in inputs.items()}
            values = single.raw_values(feed, self.engine.needed)
            values.update(feed)
            with blas_threads(1):
                results[i] = work(start, stop - start, values)

        with blas_threads(1):  # held across the pass: the setting is the process's (blas.py)
            for_blocks(n, rows, self.threads, block)
        return results  # type: ignore[return-value]

    def gradient(self, inputs: Mapping[str, np.ndarray], what: str = "logit"
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """∂(logit or probability)/∂(input) per model input, and the logit z(x), per jet."""
        target = self.engine.target

        def work(start: int, m: int, values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
            seed = gradient_seed(target, values[target.tensor], what)
            return ({k: g[:m] for k, g in self.engine.gradient(values, seed).items()},
                    logit_and_gradient(target, values[target.tensor])[0][:m])

        parts = self._each_block(inputs, work)
        return _joined([g for g, _ in parts]), np.concatenate([z for _, z in parts])

    def relevance(self, inputs: Mapping[str, np.ndarray], rules: RuleSet) -> LrpOutput:
        """LRP relevance per model input, per jet (methods.md's seed), block by block."""
        parts = self.relevance_blocks(inputs, rules, lambda rows, out: out)
        if len(parts) == 1:
            return parts[0]
        return LrpOutput(_joined([p.relevance for p in parts]), np.concatenate([p.seed_total for p in parts]),
                         np.concatenate([p.absorbed_bias for p in parts]))

    def relevance_blocks(self, inputs: Mapping[str, np.ndarray], rules: RuleSet,
                         visit: Callable[[slice, LrpOutput], R]) -> list[R]:
        """``visit(rows, out)`` for each block's LRP output, ``rows`` its jets among ``inputs``;
        the results in block order. ``visit`` runs on the thread that computed the block (for a
        row-wise graph, several at once, with one BLAS thread each), so what an explainer does
        with every jet's relevance runs in parallel, on blocks that stay in cache."""

        def work(start: int, m: int, values: dict[str, np.ndarray]) -> R:
            out = self.engine.relevance(values, rules)
            return visit(slice(start, start + m), LrpOutput({k: r[:m] for k, r in out.relevance.items()},
                                                            out.seed_total[:m], out.absorbed_bias[:m]))

        return self._each_block(inputs, work)


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
