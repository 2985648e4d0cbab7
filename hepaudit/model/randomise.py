"""Model-parameter randomisation on the ONNX graph (Adebayo et al., "Sanity checks for saliency maps").

A *weight layer* is a Gemm, MatMul or Conv node whose weight is an initializer (a MatMul of two
activations, as in attention, has no weights of its own and is not one). Its parameters are
that weight and its bias: the node's own third input, or for a MatMul the initializer of the Add
right after it. Layers are listed from the output down (the reverse of the graph's topological
order), as the cascading randomisation visits them.

Randomising a layer redraws every one of its parameters, independently, from that parameter's
own values (sampling with replacement, seeded): the scale and the shape of the distribution stay
the layer's own, every learnt arrangement is gone. A parameter shared by several layers is
redrawn once, with the first layer that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    from onnx import numpy_helper
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    numpy_helper = lazy_module("onnx.numpy_helper")

#: the ops whose initializer weights the randomisation redraws
WEIGHT_OPS = frozenset({"Gemm", "MatMul", "Conv"})


@dataclass(frozen=True)
class WeightLayer:
    """A node with learnt weights: its name (or its output's, when unnamed), op and parameters."""

    name: str
    op: str
    parameters: tuple[str, ...]  # initializer names: the weight, then the bias when there is one
    size: int  # how many numbers they hold
    source: str = ""  # the tensor the weights multiply (the node's first input)
    transposed: bool = False  # a Gemm with transB: the weight is stored (out, in)


def weight_layers(model: onnx.ModelProto) -> list[WeightLayer]:
    """Every weight layer of the graph, from the output down."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: list[WeightLayer] = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        params = [node.input[1]]
        if len(node.input) > 2 and node.input[2] in inits:
            params.append(node.input[2])
        elif node.op_type == "MatMul":
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Add":
                params += [n for n in after[0].input if n != node.output[0] and n in inits]
        size = sum(int(np.prod(inits[p].dims)) for p in params)
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        layers.append(WeightLayer(node.name or node.output[0], node.op_type, tuple(params), size, node.input[0],
                                  transposed))
    return layers[::-1]


def randomised(model: onnx.ModelProto, layers: Iterable[WeightLayer], seed: int) -> onnx.ModelProto:
    """A copy of ``model`` with the parameters of ``layers`` redrawn (the rest untouched).

    Each parameter's draw is seeded by ``seed`` and its name, so a layer gets the same new
    weights whether it is randomised alone or with others (the cascading and the independent
    variants then differ only in which layers they randomise)."""
    names = list(dict.fromkeys(p for layer in layers for p in layer.parameters))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {t.name: t for t in out.graph.initializer}
    for name in names:
        tensor = by_name[name]
        values = numpy_helper.to_array(tensor)
        if values.size == 0 or values.dtype.kind != "f":
            continue
        rng = np.random.default_rng([seed, *name.encode()])
        drawn = rng.choice(values.reshape(-1), size=values.size, replace=True).reshape(values.shape)
        tensor.CopyFrom(numpy_helper.from_array(drawn.astype(values.dtype, copy=False), name))
    return out


def cascade(layers: Sequence[WeightLayer], steps: int) -> list[list[WeightLayer]]:
    """The layers in at most ``steps`` consecutive blocks, from the output down: each step of
    the cascade randomises one more block (one layer a block when there are few enough)."""
    n = len(layers)
    if n == 0:
        return []
    k = max(1, min(steps, n))
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    return [list(layers[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def block_name(block: Sequence[WeightLayer]) -> str:
    """A step's name: the layer's, or ``first … last (n layers)`` for a block."""
    if len(block) == 1:
        return block[0].name
    return f"{block[0].name} … {block[-1].name} ({len(block)} layers)"
