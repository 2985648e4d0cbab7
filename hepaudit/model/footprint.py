"""How much memory one jet costs a forward pass: the rows per onnxruntime call that fit a budget.

onnxruntime allocates every intermediate tensor of a call; for a graph network they are
large per jet (ParticleNet's EdgeConv holds channels × particles × neighbours floats per
layer), so a call on thousands of jets can take tens of gigabytes. hepaudit measures the
model once, on one jet: the bytes of every tensor the graph computes (an upper bound of
what onnxruntime holds at once, since it reuses buffers), and caps the rows of each call so
that their product stays within ``budget_mb``. A dense tagger costs kilobytes a jet and is
not capped in practice.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from hepaudit.model.graph import with_extra_outputs

#: Memory for one onnxruntime call's intermediate tensors, in MB (the rows per call follow).
FORWARD_BUDGET_MB = 512


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
