"""Shared pieces of the backward engine: the node wrapper, the per-node step, the op registry.

Every op module registers one backward function per ONNX op type with :func:`register`.
A backward function receives a :class:`Step` (the node, the forward values it needs, the
mode -- exact gradient or LRP relevance -- and the LRP rule for this node) and the
gradient or relevance at each of the node's outputs; it returns one array (or None) per
node input. Only inputs that lie on the differentiable path get an array back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hepaudit.errors import ModelError
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    from onnx import helper
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.model.backward.rules import LayerRule


class UnsupportedOpError(ModelError):
    """An op on the path from a model input to the score that the engine cannot propagate through."""


@dataclass(frozen=True)
class Node:
    """An ONNX node with its attributes decoded (bytes to str, tensors to numpy)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto, index: int) -> Node:
        attrs: dict[str, Any] = {}
        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, onnx.TensorProto):
                value = onnx.numpy_helper.to_array(value)
            attrs[a.name] = value
        name = proto.name or f"{proto.op_type}_{index}"
        inputs = tuple(proto.input)
        if proto.op_type in ("If", "Loop", "Scan"):
            # a subgraph reads tensors of the outer graph without naming them as inputs: they
            # follow the node's own inputs, so the analysis sees what the node depends on
            inputs += tuple(n for n in _outer_names(proto) if n not in inputs)
        return cls(name, proto.op_type, inputs, tuple(proto.output), attrs)

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op})"


def _outer_names(proto: onnx.NodeProto) -> list[str]:
    """Tensors the node's subgraphs read from the enclosing graph, in first-use order."""
    names: list[str] = []
    for attr in proto.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {t.name for t in graph.initializer} | {i.name for i in graph.input}
            for node in graph.node:
                for name in node.input:
                    if name and name not in local and name not in names:
                        names.append(name)
                for sub in _outer_names(node):
                    if sub not in local and sub not in names:
                        names.append(sub)
                local.update(node.output)
    return names


class Values:
    """Forward values by tensor name: folded constants, then this batch's activations."""

    def __init__(
        self, consts: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray], diff: frozenset[str]
    ) -> None:
        self.consts = consts
        self.batch = batch
        self.diff = diff

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.batch:
            return self.batch[name]
        if name in self.consts:
            return self.consts[name]
        raise KeyError(f"no forward value for tensor {name!r}; it was not exposed from the model")

    def __contains__(self, name: str) -> bool:
        return name in self.batch or name in self.consts


@dataclass
class Step:
    """One node's backward call: what a backward function may read."""

    node: Node
    values: Values
    lrp: bool  # False: exact gradient; True: LRP relevance
    rule: LayerRule | None = None
    absorbed: np.ndarray | None = None  # per jet: relevance the biases took (LRP), accumulated
    fused_bias: str | None = None  # LRP: a following Add's constant, folded into this linear node's z
    fused_output: str | None = None  # ... and that Add's output (the layer's real z)
    opset: int = 13
    extra: dict[str, Any] = field(default_factory=dict)

    def x(self, i: int) -> np.ndarray:
        return self.values[self.node.inputs[i]]

    def y(self, i: int = 0) -> np.ndarray:
        return self.values[self.node.outputs[i]]

    def linear_output(self) -> np.ndarray | None:
        """A linear layer's forward output z with its bias (LRP's denominator), if known: the
        node's output, a fused Add's output, or for a rectified layer the ReLU output that
        stands in for z (see :mod:`hepaudit.model.backward.engine`)."""
        rectified = self.extra.get("rectified")
        if rectified:
            return self.values[rectified]
        if self.fused_bias is not None:
            return self.values[self.fused_output] if self.fused_output else None
        return self.y()

    def has_input(self, i: int) -> bool:
        return len(self.node.inputs) > i and self.node.inputs[i] != ""

    def is_diff(self, i: int) -> bool:
        return self.has_input(i) and self.node.inputs[i] in self.values.diff

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def unsupported(self, why: str) -> UnsupportedOpError:
        mode = "LRP" if self.lrp else "the gradient"
        return UnsupportedOpError(f"{self.node.describe()}: {why}; {mode} cannot be propagated through it")

    def add_absorbed(self, share: np.ndarray) -> None:
        """Add a bias's share (any shape, rows first) to the per-jet total."""
        if self.absorbed is not None:
            self.add_absorbed_rows(share.reshape(len(share), -1).sum(axis=1))

    def add_absorbed_rows(self, rows: np.ndarray) -> None:
        """Add per-row bias shares: one per jet, or several per jet when the tensor's first axis
        holds jets times objects, one jet after the other (an interaction network's edges). A
        tensor whose first axis is not a multiple of the jets cannot be split per jet: its share
        is spread evenly, so the sum over jets stays right."""
        if self.absorbed is None:
            return
        self.absorbed += jet_sums(np.asarray(rows, np.float64).reshape(-1), len(self.absorbed))


def jet_sums(tensor: np.ndarray, n: int) -> np.ndarray:
    """Per jet, the sum of a tensor whose first axis holds the jets, or jets times objects one jet
    after the other; a tensor of another layout is spread evenly (its sum over jets stays right)."""
    t = np.asarray(tensor, np.float64)
    if t.ndim and n and len(t) % n == 0:
        return t.reshape(n, -1).sum(axis=1)
    return np.full(n, t.sum() / max(n, 1))


Backward = Callable[[Step, list[np.ndarray | None]], list[np.ndarray | None]]

#: op type -> backward function; filled by the ops_* modules
HANDLERS: dict[str, Backward] = {}


def register(*ops: str) -> Callable[[Backward], Backward]:
    def deco(fn: Backward) -> Backward:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return deco


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient over the axes numpy broadcast, back to ``shape`` (the operand's shape)."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def stabilise(z: np.ndarray, epsilon: float) -> np.ndarray:
    """z + ε·sign(z) with sign(0) = +1 (methods.md)."""
    return z + np.where(z >= 0, epsilon, -epsilon).astype(z.dtype, copy=False)


_SIGN_BITS = {
    np.dtype(np.float32): (np.int32, np.int32(-(2**31))),
    np.dtype(np.float64): (np.int64, np.int64(-(2**63))),
}


def _signed_epsilon(z: np.ndarray, epsilon: float) -> np.ndarray:
    """A new array ε·sign(z) with z's sign bit (so -ε only for z < 0 and z = -0.0).

    Bit arithmetic on float32/float64 (z's sign bit OR'd onto ε's bits) is exactly
    ``np.copysign(ε, z)`` in a third of the time; copysign for other layouts and types.
    """
    bits = _SIGN_BITS.get(z.dtype)
    if bits is None or not z.flags.c_contiguous:
        return np.copysign(np.asarray(epsilon, z.dtype), z)
    itype, sign = bits
    out = np.bitwise_and(z.view(itype), sign)
    out |= np.asarray(epsilon, z.dtype).view(itype)
    return out.view(z.dtype)


def safe_divide(r: np.ndarray, z: np.ndarray, epsilon: float, nonnegative: bool = False) -> np.ndarray:
    """r / (z + ε·sign(z)); 0 where that denominator is exactly 0 (LRP-0 on a dead unit).

    ``nonnegative``: z is a ReLU output (a rectified layer's stand-in for z), so the
    denominator is z + ε, one pass instead of three.
    """
    z = np.asarray(z)
    if epsilon:
        if nonnegative:
            den = z + np.asarray(epsilon, z.dtype)
        else:
            # in place, in few passes: this runs on every hidden tensor. The sign of -0.0 gives -ε,
            # the same dead unit as +0.0
            den = _signed_epsilon(z, epsilon)
            den += z
        if den.shape == np.shape(r):
            return np.divide(r, den, out=den)
        return r / den
    out = np.zeros(np.broadcast_shapes(np.shape(r), z.shape), dtype=np.result_type(r, z))
    np.divide(r, z, out=out, where=z != 0)
    return out


def axes_of(step: Step, attr_name: str = "axes", input_index: int = 1) -> list[int] | None:
    """Axes given as an attribute (older opsets) or as an input (ReduceSum ≥ 13, ReduceMean ≥ 18, ...)."""
    if step.has_input(input_index):
        return [int(a) for a in np.asarray(step.x(input_index)).reshape(-1)]
    axes = step.attr(attr_name)
    return None if axes is None else [int(a) for a in axes]
