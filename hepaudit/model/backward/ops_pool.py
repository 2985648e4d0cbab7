"""Backward of pooling and reductions: MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool, ReduceSum, ReduceMean (the deep-set pooling).

Max pooling sends gradient and relevance to the window's winner (the first maximum, as
the argmax convention of frameworks). Sums and means are linear layers with positive
weights; LRP redistributes in proportion to the inputs, R_j = a_j / (Σ a + ε·sign) R,
with ε from the rule (zero for LRP-0). ``axes`` is an attribute before opset 13
(ReduceSum) / 18 (ReduceMean) and an input after; both are read.
"""

from __future__ import annotations

import numpy as np

from hepaudit.model.backward.base import Step, axes_of, register
from hepaudit.model.backward.ops_conv import Geometry
from hepaudit.model.backward.rules import lrp_linear


def _lrp_or_grad(step: Step, x: np.ndarray, g: np.ndarray, fwd_sum, bwd_sum, w: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """A positive linear map a -> fwd_sum(a)·w: the exact gradient, or its LRP redistribution."""
    if not step.lrp:
        return bwd_sum(g * w)
    assert step.rule is not None
    rel, absorbed = lrp_linear(
        x, g, lambda a, ww: fwd_sum(a) * ww, lambda s, ww: bwd_sum(s * ww), w, None, step.rule, step.y()
    )
    return rel


def _window(step: Step, x: np.ndarray) -> Geometry:
    kernel = tuple(step.attr("kernel_shape"))
    return Geometry(step, x.shape[2:], kernel)


@register("MaxPool")
def max_pool(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    if g is None:
        raise step.unsupported("only the pooled values (not the indices) can carry a gradient")
    x, y = step.x(0), step.y(0)
    geo = _window(step, x)
    xp = geo.pad(x, -np.inf)
    gp = np.zeros(xp.shape, dtype=g.dtype)
    taken = np.zeros(y.shape, dtype=bool)
    lead = (slice(None),) * 2
    for _, sl in geo.offsets():
        win = (xp[lead + sl] == y) & ~taken
        gp[lead + sl] += np.where(win, g, 0.0)
        taken |= win
    return [geo.crop(gp)]


@register("AveragePool")
def average_pool(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    x = step.x(0)
    geo = _window(step, x)
    lead = (slice(None),) * 2

    def fwd_sum(a: np.ndarray) -> np.ndarray:
        ap = geo.pad(a)
        total: np.ndarray = sum(ap[lead + sl] for _, sl in geo.offsets())  # type: ignore[assignment]
        return total

    def bwd_sum(s: np.ndarray) -> np.ndarray:
        gp = np.zeros(x.shape[:2] + geo.padded_ext, dtype=s.dtype)
        for _, sl in geo.offsets():
            gp[lead + sl] += s
        return geo.crop(gp)

    if step.attr("count_include_pad", 0):
        count = np.full((1, 1) + geo.out, float(np.prod(geo.kernel)))
    else:
        count = fwd_sum(np.ones((1, 1) + x.shape[2:]))
        if any(geo.extra):  # windows past the end (ceil mode) never count the extra padding
            count = np.maximum(count, 1.0)
    return [_lrp_or_grad(step, x, g, fwd_sum, bwd_sum, 1.0 / count)]


def _reduce(step: Step, g: np.ndarray, axes: list[int] | None, keepdims: bool, mean: bool) -> np.ndarray:
    x = step.x(0)
    if axes is None or not axes:
        if axes is not None and step.attr("noop_with_empty_axes", 0):
            return g
        axes = list(range(x.ndim))
    axes = sorted(a % x.ndim for a in axes)
    if 0 in axes:
        raise step.unsupported("a reduction over the batch axis mixes jets")
    count = float(np.prod([x.shape[a] for a in axes]))
    w = np.array(1.0 / count if mean else 1.0)

    def fwd_sum(a: np.ndarray) -> np.ndarray:
        return a.sum(axis=tuple(axes), keepdims=keepdims)

    def bwd_sum(s: np.ndarray) -> np.ndarray:
        if not keepdims:
            s = np.expand_dims(s, tuple(axes))
        return np.broadcast_to(s, x.shape)

    return _lrp_or_grad(step, x, g, fwd_sum, bwd_sum, w)


@register("ReduceSum", "ReduceMean")
def reduce_sum_mean(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    axes = axes_of(step)
    out = _reduce(step, g, axes, bool(step.attr("keepdims", 1)), step.node.op == "ReduceMean")
    return [out] + [None] * (len(step.node.inputs) - 1)


@register("GlobalAveragePool")
def global_average_pool(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    return [_reduce(step, g, list(range(2, step.x(0).ndim)), True, True)]


@register("GlobalMaxPool")
def global_max_pool(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    x, y = step.x(0), step.y(0)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    first = np.argmax(flat, axis=2)
    out = np.zeros_like(flat, dtype=g.dtype)
    np.put_along_axis(out, first[..., None], g.reshape(g.shape[0], g.shape[1], 1), axis=2)
    del y
    return [out.reshape(x.shape)]
