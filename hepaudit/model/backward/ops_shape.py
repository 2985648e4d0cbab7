"""Backward of shape and indexing ops: the same for gradients and relevance.

These ops move values without combining them, so relevance is moved back exactly as the
gradient is: Reshape/Flatten/Squeeze/Unsqueeze reshape back, Transpose applies the inverse
permutation, Concat and Split cut and join, Slice, Gather, GatherND and Pad scatter into
zeros, Expand and Tile sum over the copies, ScatterND sends the overwritten positions to its
updates, Trilu keeps the kept triangle. An If whose branches only reshape one tensor of the
outer graph (a traced squeeze) reshapes back; any other If is refused, naming it.
"""

from __future__ import annotations

import numpy as np

from hepaudit.model.backward.base import Step, register, unbroadcast


def _rest(step: Step, first: np.ndarray | None) -> list[np.ndarray | None]:
    return [first] + [None] * (len(step.node.inputs) - 1)


@register("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    return _rest(step, g.reshape(np.shape(step.x(0))))


@register("Transpose")
def transpose(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    perm = step.attr("perm")
    if perm is None:
        perm = list(range(g.ndim))[::-1]
    return [np.transpose(g, np.argsort(perm))]


@register("Concat")
def concat(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    axis = int(step.attr("axis")) % g.ndim
    sizes = [np.shape(step.x(i))[axis] for i in range(len(step.node.inputs))]
    pieces = np.split(g, np.cumsum(sizes)[:-1], axis=axis)
    return [p if step.is_diff(i) else None for i, p in enumerate(pieces)]


@register("Split")
def split(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    x = step.x(0)
    axis = int(step.attr("axis", 0)) % x.ndim
    outs = [step.y(i) for i in range(len(step.node.outputs))]
    pieces = [g if g is not None else np.zeros(o.shape) for g, o in zip(grads, outs)]
    return _rest(step, np.concatenate(pieces, axis=axis))


def _slice_params(step: Step, ndim: int) -> tuple[list[int], list[int], list[int], list[int]]:
    if step.opset >= 10:
        starts = [int(v) for v in np.asarray(step.x(1)).reshape(-1)]
        ends = [int(v) for v in np.asarray(step.x(2)).reshape(-1)]
        axes = (
            [int(v) for v in np.asarray(step.x(3)).reshape(-1)]
            if step.has_input(3)
            else list(range(len(starts)))
        )
        steps = (
            [int(v) for v in np.asarray(step.x(4)).reshape(-1)] if step.has_input(4) else [1] * len(starts)
        )
    else:
        starts, ends = list(step.attr("starts")), list(step.attr("ends"))
        axes = list(step.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    return starts, ends, [a % ndim for a in axes], steps


@register("Slice")
def slice_(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    x_shape = np.shape(step.x(0))
    starts, ends, axes, steps = _slice_params(step, len(x_shape))
    index: list[slice] = [slice(None)] * len(x_shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        n = x_shape[a]
        # ONNX clamps like Python slicing, except INT_MIN/INT_MAX-sized ends; clamp those first
        e = max(min(e, n), -n - 1)
        s = max(min(s, n), -n - 1)
        if st < 0 and e == -n - 1:
            e = None  # type: ignore[assignment]
        index[a] = slice(s, e, st)
    out = np.zeros(x_shape, dtype=g.dtype)
    out[tuple(index)] = g
    return _rest(step, out)


@register("Gather")
def gather(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    x_shape = np.shape(step.x(0))
    axis = int(step.attr("axis", 0)) % len(x_shape)
    idx = np.asarray(step.x(1)).astype(np.int64)
    idx = np.where(idx < 0, idx + x_shape[axis], idx)
    out = np.zeros(x_shape, dtype=g.dtype)
    moved = np.moveaxis(out, axis, 0)
    gm = np.moveaxis(
        g.reshape(x_shape[:axis] + idx.shape + x_shape[axis + 1 :]),
        list(range(axis, axis + idx.ndim)),
        list(range(idx.ndim)),
    )
    np.add.at(moved, idx, gm)
    return [out, None]


@register("Expand")
def expand(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    return [unbroadcast(g, np.shape(step.x(0))), None]


@register("Tile")
def tile(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    x_shape = np.shape(step.x(0))
    reps = [int(r) for r in np.asarray(step.x(1)).reshape(-1)]
    split_shape: list[int] = []
    for r, n in zip(reps, x_shape):
        split_shape += [r, n]
    summed = g.reshape(split_shape).sum(axis=tuple(range(0, 2 * len(reps), 2)))
    return [summed, None]


@register("Pad")
def pad(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    mode = step.attr("mode", "constant")
    if mode != "constant":
        raise step.unsupported(f"a Pad in {mode!r} mode")
    x_shape = np.shape(step.x(0))
    nd = len(x_shape)
    pads = (
        [int(p) for p in np.asarray(step.x(1)).reshape(-1)] if step.opset >= 11 else list(step.attr("pads"))
    )
    if step.opset >= 18 and step.has_input(3):
        axes = [int(a) % nd for a in np.asarray(step.x(3)).reshape(-1)]
    else:
        axes = list(range(nd))
    index = [slice(None)] * nd
    k = len(axes)
    for j, a in enumerate(axes):
        begin, end = pads[j], pads[j + k]
        index[a] = slice(begin, g.shape[a] - end)
    # negative pads crop: put the gradient back into a zero array of the input's shape
    if any(p < 0 for p in pads):
        raise step.unsupported("a Pad with negative pads")
    return _rest(step, g[tuple(index)])


def _nd_keys(data_shape: tuple[int, ...], indices: np.ndarray, batch_dims: int) -> tuple[np.ndarray, ...]:
    """GatherND/ScatterND's index tuple for numpy: batch grids, then the index columns."""
    idx = np.asarray(indices).astype(np.int64)
    k = idx.shape[-1]
    lead = idx.shape[:-1]
    grids = [np.arange(lead[d]).reshape((-1,) + (1,) * (len(lead) - d - 1)) for d in range(batch_dims)]
    columns = [idx[..., j] % data_shape[batch_dims + j] for j in range(k)]
    return tuple(grids) + tuple(columns)


@register("GatherND")
def gather_nd(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    shape = np.shape(step.x(0))
    keys = _nd_keys(shape, step.x(1), int(step.attr("batch_dims", 0)))
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, keys, g)
    return [out, None]


@register("ScatterND")
def scatter_nd(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    if step.attr("reduction", "none") != "none":
        raise step.unsupported(f"a ScatterND with reduction {step.attr('reduction')!r}")
    shape = np.shape(step.x(0))
    keys = _nd_keys(shape, step.x(1), 0)
    g_data = np.array(g, copy=True)
    g_data[keys] = 0  # overwritten positions: their value came from the updates
    return [g_data if step.is_diff(0) else None, None, np.asarray(g)[keys] if step.is_diff(2) else None]


@register("Trilu")
def trilu(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    k = int(np.asarray(step.x(1)).reshape(-1)[0]) if step.has_input(1) else 0
    keep = np.triu if step.attr("upper", 1) else np.tril
    return _rest(step, keep(g, k))


#: ops a branch of an If may hold and still be a reshape of one outer tensor
_RESHAPING = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity", "Constant"})


@register("If")
def if_node(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    read = [i for i in range(1, len(step.node.inputs)) if step.is_diff(i)]
    branches = [step.attr("then_branch"), step.attr("else_branch")]
    simple = all(b is not None and all(n.op_type in _RESHAPING for n in b.node) for b in branches)
    if len(read) != 1 or not simple or len(step.node.outputs) != 1:
        raise step.unsupported("an If whose branches do more than reshape one tensor (the backward engine "
                               "cannot see inside a subgraph)")
    out: list[np.ndarray | None] = [None] * len(step.node.inputs)
    out[read[0]] = g.reshape(np.shape(step.x(read[0])))
    return out
