"""Hidden layers of an ONNX tagger: which tensors they are, their channel axis, per-jet sums.

A *hidden layer* (docs/methods.md, NAP) is the output of an activation node (Relu,
LeakyRelu, Elu, Sigmoid, Tanh, ...) that lies on the path from the inputs to the signal
score, excluding the score's own Sigmoid/Softmax head. Its *nodes* are the entries along
the channel axis, which is read from the graph: the op that made the activation's input
(through BatchNormalization, Add, Mul, Dropout, ...) decides — Conv puts channels on
axis 1, MatMul/Gemm/Einsum on the last axis. Any further axes (particles of a deep set,
positions of a 1-D convolution) are summed over per jet; padded particles are left out
when the model has a ``kind = "mask"`` input whose length matches the axis.

Used by the ``nap`` and ``latent`` explainers; nothing here runs the model.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.lazy import lazy_module
from hepaudit.model.graph import ACTIVATION_OPS, Head, producers

if TYPE_CHECKING:
    import onnx
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")

#: ops that keep the channel layout of their (first) input, walked through to find the layer op
_CHANNEL_PRESERVING = frozenset(
    {
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Identity",
        "Dropout",
        "Cast",
        "Clip",
        "Neg",
        "Abs",
        "Pow",
        "Sqrt",
        "Max",
        "Min",
        "Where",
        *ACTIVATION_OPS,
    }
)
_CHANNELS_FIRST = frozenset(
    {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
)
_CHANNELS_LAST = frozenset({"MatMul", "Gemm", "Einsum", "MatMulInteger", "QLinearMatMul"})
#: ops that pool a per-particle tensor into a per-jet one (a deep set's latent space)
POOLING_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "GlobalAveragePool", "GlobalMaxPool"})
#: activations whose output can be negative: the RNA of their nodes can be negative
SIGNED_ACTIVATIONS = frozenset({"LeakyRelu", "Elu", "Selu", "Tanh", "PRelu", "Gelu", "Mish"})


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden tensor: its name, the op that made it, its channel axis and its graph inputs."""

    name: str
    op: str
    channel_axis: int  # 1 for channels-first (Conv), -1 for channels-last (MatMul, Gemm)
    inputs: frozenset[str]  # the graph inputs it depends on (to pick the right mask)
    channel_axis_from: str = "graph"  # "graph", "default" (no evidence found) or "option"


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def score_ancestors(model: onnx.ModelProto, output: str, stop: Collection[str] = ()) -> set[str]:
    """Every tensor the graph output ``output`` depends on (itself included); the walk does not
    go past the tensors in ``stop`` (they are included, what made them is not)."""
    made_by = producers(model)
    seen: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = made_by.get(name)
        if node is not None and name not in stop:
            stack.extend(i for i in node.input if i)
    return seen


def graph_inputs_of(model: onnx.ModelProto, tensor: str, stop: Collection[str] = ()) -> frozenset[str]:
    """The (non-initializer) graph inputs a tensor depends on (by paths that avoid ``stop``)."""
    inits = {t.name for t in model.graph.initializer}
    real = {i.name for i in model.graph.input} - inits
    return frozenset(score_ancestors(model, tensor, stop) & real)


def channel_axis_of(model: onnx.ModelProto, tensor: str) -> tuple[int, str]:
    """(axis, how it was found): walk back through channel-preserving ops to a Conv-like
    (axis 1) or dense (last axis) op; failing that look at the tensor's consumers; failing
    that, the last axis (``"default"``)."""
    made_by = producers(model)
    frontier = [tensor]
    seen: set[str] = set()
    for _ in range(64):  # bounded: residual blocks can branch, but the answer is always near
        if not frontier:
            break
        name = frontier.pop(0)
        if name in seen:
            continue
        seen.add(name)
        node = made_by.get(name)
        if node is None:
            continue
        if node.op_type in _CHANNELS_FIRST:
            return 1, "graph"
        if node.op_type in _CHANNELS_LAST:
            return -1, "graph"
        if node.op_type in _CHANNEL_PRESERVING:
            frontier.extend(i for i in node.input if i and i in made_by)
    for node in _consumers(model).get(tensor, []):
        if node.op_type in _CHANNELS_FIRST and node.input[0] == tensor:
            return 1, "graph"
        if node.op_type in ("MatMul", "Gemm") and node.input[0] == tensor:
            return -1, "graph"
    return -1, "default"


def _gelu_output(erf: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """The output of a GELU exported as x · 0.5 · (1 + erf(x / √2)) (PyTorch before opset 20):
    follow the Erf's single consumers through the Add and Mul nodes of the formula."""
    name = erf.output[0]
    for _ in range(3):
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type not in ("Add", "Mul"):
            break
        name = users[0].output[0]
    return name


def find_hidden_layers(model: onnx.ModelProto, output: str, head: Head | None) -> list[HiddenLayer]:
    """The activation outputs on the path to ``output``, in graph (topological) order,
    without the score head's own Sigmoid/Softmax. A GELU written out with Erf counts as one
    activation (op ``"Gelu"``), its output the end of the formula."""
    on_path = score_ancestors(model, output)
    consumers = _consumers(model)
    layers = []
    for node in model.graph.node:
        if not node.output or node.output[0] not in on_path:
            continue
        if node.op_type == "Erf":
            name, op = _gelu_output(node, consumers), "Gelu"
        elif node.op_type in ACTIVATION_OPS:
            name, op = node.output[0], node.op_type
        else:
            continue
        if head is not None and node.op_type == head.op and node.input and node.input[0] == head.logit:
            continue
        if name == output:  # an activation that *is* the score is a head, not a layer
            continue
        axis, how = channel_axis_of(model, name)
        layers.append(HiddenLayer(name, op, axis, graph_inputs_of(model, name), how))
    return layers


def named_layers(model: onnx.ModelProto, names: Sequence[str]) -> list[HiddenLayer]:
    """User-named tensors as hidden layers (the caller checks that they exist)."""
    made_by = producers(model)
    out = []
    for name in names:
        node = made_by.get(name)
        axis, how = channel_axis_of(model, name)
        out.append(
            HiddenLayer(
                name, node.op_type if node is not None else "input", axis, graph_inputs_of(model, name), how
            )
        )
    return out


def pooled_tensors(model: onnx.ModelProto, output: str) -> list[str]:
    """Outputs of pooling ops (ReduceSum/Mean/Max, global pools) on the path to ``output``."""
    on_path = score_ancestors(model, output)
    return [n.output[0] for n in model.graph.node if n.op_type in POOLING_OPS and n.output[0] in on_path]


def tensor_exists(model: onnx.ModelProto, name: str) -> bool:
    return name in producers(model) or name in {i.name for i in model.graph.input}


@dataclass(frozen=True)
class MaskSource:
    """A ``kind = "mask"`` model input, and the constituents input it masks."""

    input: str
    of: str


def mask_sources(input_configs: Iterable[object]) -> list[MaskSource]:
    """Masks among the configured inputs (``context.builder.inputs``)."""
    configs = list(input_configs)
    constituents = [c.name for c in configs if getattr(c, "kind", None) == "constituents"]  # type: ignore[attr-defined]
    out = []
    for cfg in configs:
        if getattr(cfg, "kind", None) == "mask":
            of = getattr(cfg, "of", None) or (constituents[0] if len(constituents) == 1 else "")
            out.append(MaskSource(cfg.name, of))  # type: ignore[attr-defined]
    return out


def masks_for(
    layer: HiddenLayer, sources: Sequence[MaskSource], inputs: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """The (N, P) masks that may apply to this layer's particle axes: masks of the inputs it
    depends on first (so a mask of another branch of the network is only a fallback)."""
    n = len(next(iter(inputs.values())))
    related = [s for s in sources if s.input in layer.inputs or s.of in layer.inputs]
    others = [s for s in sources if s not in related]
    return [inputs[s.input].reshape(n, -1) for s in related + others if s.input in inputs]


def normalised_axis(axis: int, ndim: int) -> int:
    axis = axis + ndim if axis < 0 else axis
    if not 1 <= axis < ndim:
        raise ValueError(
            f"channel axis {axis} is out of range for a tensor of rank {ndim} (axis 0 is the jets)"
        )
    return axis


def per_jet_channels(values: np.ndarray, channel_axis: int, masks: Sequence[np.ndarray] = ()) -> np.ndarray:
    """(N, C): each jet's value per channel, summed over every other axis (the input's dtype
    for a plain (N, C) tensor, so no copy is made; float64 when axes were summed).

    An axis whose length equals a mask's length is weighted by that mask (1 for real
    particles, 0 for padding), so padded particles do not count even when the network
    gives them non-zero activations. Each mask is used for one axis at most, first match
    first; pairwise (P, P) tensors are masked on both axes when two masks are given.
    """
    n = values.shape[0]
    if values.ndim == 1:
        return values.reshape(n, 1)
    axis = normalised_axis(channel_axis, values.ndim)
    moved = np.moveaxis(values, axis, -1)  # (N, A1, ..., C)
    if moved.ndim == 2:
        return moved
    unused = list(masks)
    weights: list[tuple[int, np.ndarray]] = []
    for ax in range(1, moved.ndim - 1):
        for i, mask in enumerate(unused):
            if mask.shape[1] == moved.shape[ax] and moved.shape[ax] > 1:
                weights.append((ax, mask))
                del unused[i]
                break
    if len(weights) == 1 and moved.ndim == 3:
        # the deep-set case (N, P, C) with mask (N, P): one batched mat-vec, no temporary copy
        mask = weights[0][1].astype(moved.dtype, copy=False)
        return np.einsum("np,npc->nc", mask, moved, optimize=True).astype(np.float64)
    work = moved.astype(np.float64)
    for ax, mask in weights:
        shape = [n] + [1] * (moved.ndim - 1)
        shape[ax] = mask.shape[1]
        work = work * mask.reshape(shape)
    return work.reshape(n, -1, moved.shape[-1]).sum(axis=1)


def class_sums(per_jet: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2, C) float64 sums of the per-jet channel values over background (row 0) and signal
    (row 1) jets, and the (2,) jet counts.

    numpy's reduction with ``dtype=float64`` accumulates float32 activations in double
    precision without first copying the whole chunk to float64 (5x faster than a one-hot
    matrix product in float64, and exact where a float32 product is not). The rows are taken
    in blocks of about 1 MB, so each class's selected rows are copied and summed while they
    are in cache (1.7x faster for a 300-node layer than selecting from the whole chunk).
    """
    sums = np.zeros((2, per_jet.shape[1]))
    counts = np.zeros(2)
    block = int(np.clip((1 << 20) // max(per_jet.shape[1] * per_jet.itemsize, 1), 1024, 1 << 16))
    for start in range(0, len(per_jet), block):
        rows = per_jet[start : start + block]
        lab = labels[start : start + block]
        for c in (0, 1):
            sel = lab == c
            k = int(np.count_nonzero(sel))
            if k:
                counts[c] += k
                sums[c] += rows[sel].sum(axis=0, dtype=np.float64)
    return sums, counts
