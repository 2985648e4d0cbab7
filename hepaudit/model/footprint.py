"""How much memory one jet costs a forward pass: the rows per onnxruntime call that fit a budget.

onnxruntime allocates every intermediate tensor of a call; for a graph network they are
large per jet (ParticleNet's EdgeConv holds channels × particles × neighbours floats per
layer), so a call on thousands of jets can take tens of gigabytes. hepaudit measures the
model once, on one jet: the bytes of every tensor the graph computes (an upper bound of
what onnxruntime holds at once, since it reuses buffers), and caps the rows of each call so
that their product stays within ``budget_mb``. A dense tagger costs kilobytes a jet and is
not capped in practice.

The same measure sets the rows of the passes that go over the same jets many times
(occlusion, SHAP, OOD): :func:`cache_rows` keeps a call's tensors near the size of a core's
L2 cache, so a block stays in cache across the passes instead of streaming from memory, which
two processes on one machine (Dask workers) would compete for. Below that size onnxruntime's
per-call cost dominates, more so when several threads must meet after every call, so the
rows have a floor that grows with the threads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from hepaudit.model.graph import with_extra_outputs

#: Memory for one onnxruntime call's intermediate tensors, in MB (the rows per call follow).
FORWARD_BUDGET_MB = 512

#: Bytes of a call's tensors that a block of repeated passes aims at: about a core's L2 cache.
CACHE_BYTES = 4 * 2**20
#: Rows of a repeated-pass call: at most this (the per-call cost of a tiny model is amortised)...
MAX_CACHE_ROWS = 4096
#: ... and at least this, on one onnxruntime thread or on several (thread hand-offs per call)
MIN_CACHE_ROWS = {1: 16, 2: 256}


def bytes_per_jet(proto: onnx.ModelProto, one_jet: Mapping[str, np.ndarray], providers: list[str]) -> int:
    """Bytes of the inputs and of every tensor the graph computes, for one jet."""
    names = [o for node in proto.graph.node for o in node.output if o]
    names = list(dict.fromkeys(names))
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # the same graph, every tensor an output: nothing folded away that the real run keeps
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(with_extra_outputs(proto, names).SerializeToString(), sess_options=opts,
                                   providers=providers)
    wanted = [o.name for o in session.get_outputs()]
    values = session.run(wanted, dict(one_jet))
    total = sum(v.nbytes for v in values if isinstance(v, np.ndarray))
    return int(total + sum(v.nbytes for v in one_jet.values()))


def rows_within(per_jet: int, budget_mb: float = FORWARD_BUDGET_MB) -> int:
    """Jets per call that keep ``per_jet`` bytes a jet within the budget (at least one)."""
    return max(1, int(budget_mb * 2**20 // max(per_jet, 1)))


def cache_rows(per_jet: int, threads: int) -> int:
    """Rows per call for passes over the same jets: a power of two whose tensors fit
    ``CACHE_BYTES``, between the floor for ``threads`` onnxruntime threads and ``MAX_CACHE_ROWS``."""
    fit = max(1, CACHE_BYTES // max(per_jet, 1))
    rows = 1 << (int(fit).bit_length() - 1)  # the power of two at or below
    floor = MIN_CACHE_ROWS[1] if threads <= 1 else MIN_CACHE_ROWS[2]
    return int(min(MAX_CACHE_ROWS, max(floor, rows)))
