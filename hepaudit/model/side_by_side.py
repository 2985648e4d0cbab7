"""Several taggers that take the same inputs, run side by side in one ONNX graph.

An ensemble's members are small models scored over the same jets: run one after another,
each block of jets pays onnxruntime's per-call cost and its walk over the graph once per
member. Placed side by side in one graph (every member's names prefixed, the inputs
shared), one call scores every member, with the same kernels on the same rows, so each
member's scores are the ones its own session gives.

Members that cannot share one graph (different opset versions of a domain, local
functions, a fixed batch, an accelerator provider) are not fused: :func:`side_by_side`
returns None and the caller runs them one by one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.lazy import lazy_module
from hepaudit.model.blocks import one_thread_session
from hepaudit.model.graph import with_extra_outputs
from hepaudit.model.providers import CPU

if TYPE_CHECKING:
    import onnx
    import onnx.compose as onnx_compose
    import onnxruntime as ort

    from hepaudit.model.session import Tagger
else:  # loaded on first use (hepaudit.lazy)
    onnx = lazy_module("onnx")
    onnx_compose = lazy_module("onnx.compose")


def _prefix(i: int) -> str:
    return f"hepaudit_member{i}/"


def fuse(protos: Sequence[onnx.ModelProto], outputs: Sequence[Sequence[str]]) -> onnx.ModelProto | None:
    """One graph holding every model side by side: model i's tensors, nodes and weights
    renamed with the prefix ``hepaudit_member{i}/``, the graph inputs (the same names in every
    model) shared, and model i's ``outputs[i]`` returned as ``hepaudit_member{i}/{name}``.
    None when the models cannot share one graph."""
    first = protos[0]
    inputs = [i.name for i in first.graph.input if i.name not in {t.name for t in first.graph.initializer}]
    opsets: dict[str, int] = {}
    for proto in protos:
        if proto.functions:
            return None  # local functions would need renaming of their own
        for entry in proto.opset_import:
            if opsets.setdefault(entry.domain, entry.version) != entry.version:
                return None  # one graph has one version of each operator set
    graph = onnx.GraphProto(name="hepaudit_members")
    graph.input.extend(i for i in first.graph.input if i.name in inputs)
    for i, (proto, names) in enumerate(zip(protos, outputs)):
        renamed = onnx.ModelProto()  # the one copy of this model, renamed in place below
        renamed.CopyFrom(with_extra_outputs(proto, list(names)))
        kept = [o for o in renamed.graph.output if o.name in set(names)]
        del renamed.graph.output[:]
        renamed.graph.output.extend(kept)
        if any(o.name in inputs for o in kept):
            return None  # an output that is an input would lose its name to the prefix
        onnx_compose.add_prefix(renamed, _prefix(i), rename_inputs=False, rename_functions=False, inplace=True)
        g = renamed.graph
        if not set(inputs) <= {v.name for v in g.input}:
            return None  # a subgraph's own input of the same name took the shared one's prefix
        own_inputs = [v for v in g.input if v.name not in inputs]  # initializers listed as inputs (IR < 4)
        graph.input.extend(own_inputs)
        graph.node.extend(g.node)
        graph.initializer.extend(g.initializer)
        graph.sparse_initializer.extend(g.sparse_initializer)
        graph.value_info.extend(g.value_info)
        graph.output.extend(g.output)
    fused = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()],
        producer_name="hepaudit",
    )
    fused.ir_version = max(p.ir_version for p in protos)
    return fused


class SideBySide:
    """The signal scores of several :class:`~hepaudit.model.session.Tagger`, one onnxruntime
    call for all.

    Each member keeps its own output and score settings: its score comes from its own
    ``signal_score`` on its output of the shared call. The session has one thread, for
    passes run block by block on several Python threads (:mod:`hepaudit.model.blocks`).
    """

    def __init__(self, members: Sequence[Tagger], session: ort.InferenceSession) -> None:
        self.members = list(members)
        self._session = session
        self._names = [_prefix(i) + m.score_spec.output for i, m in enumerate(self.members)]

    def scores(self, inputs: Mapping[str, np.ndarray], out: np.ndarray) -> None:
        """Every member's signal score for these jets, written to ``out`` (members, jets)."""
        t0 = time.perf_counter()
        values = self._session.run(self._names, dict(inputs))
        self.members[0].count_run(t0)  # one call for all: counted once, with the first member
        for i, (member, raw) in enumerate(zip(self.members, values)):
            out[i] = member.signal_score(raw)


def side_by_side(members: Sequence[Tagger]) -> SideBySide | None:
    """The members in one graph and one one-thread session, or None when they cannot share
    one (see :func:`fuse`), run on something other than the CPU, or take a fixed batch."""
    if len(members) < 2 or any(m.providers != [CPU] or m.fixed_batch for m in members):
        return None
    fused = fuse([m.proto for m in members], [[m.score_spec.output] for m in members])
    if fused is None:
        return None
    try:
        session = one_thread_session(fused.SerializeToString(), log_severity=4)
    except Exception:  # a graph onnxruntime will not take fused: the members run one by one, as before
        return None
    return SideBySide(members, session)
