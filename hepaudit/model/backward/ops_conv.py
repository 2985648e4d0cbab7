"""Backward of Conv (1-D, 2-D, any N-D; groups, padding, strides, dilations) in numpy.

The convolution and its adjoint are a loop over kernel offsets with one batched matrix
product each (``np.matmul`` over (group, out, in) × (jet, group, in, positions)), which is
the im2col product without materialising the column matrix. ``window_slices`` and the
padding helpers are shared with the pooling ops.
"""

from __future__ import annotations

import itertools

import numpy as np

from hepaudit.model.backward.base import Step, register
from hepaudit.model.backward.rules import lrp_linear


class Geometry:
    """Sliding-window geometry of a Conv or pooling node on an input of a given shape."""

    def __init__(self, step: Step, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> None:
        nd = len(spatial)
        self.kernel = kernel
        self.strides = tuple(step.attr("strides", [1] * nd))
        self.dilations = tuple(step.attr("dilations", [1] * nd))
        pads = list(step.attr("pads", [0] * (2 * nd)))
        auto = step.attr("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * (2 * nd)
            for i in range(nd):
                out = -(-spatial[i] // self.strides[i])
                total = max(
                    0, (out - 1) * self.strides[i] + self.dilations[i] * (kernel[i] - 1) + 1 - spatial[i]
                )
                small, big = total // 2, total - total // 2
                pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * (2 * nd)
        self.begin = tuple(pads[:nd])
        self.end = tuple(pads[nd:])
        self.spatial = spatial
        self.padded = tuple(s + b + e for s, b, e in zip(spatial, self.begin, self.end))
        ceil = bool(step.attr("ceil_mode", 0))
        out = []
        for i in range(nd):
            span = self.padded[i] - self.dilations[i] * (kernel[i] - 1) - 1
            n = (-(-span // self.strides[i]) if ceil else span // self.strides[i]) + 1
            out.append(n)
        self.out: tuple[int, ...] = tuple(out)
        # ceil mode can ask for windows past the end: pad further so every window exists
        self.extra = tuple(
            max(0, (o - 1) * s + d * (k - 1) + 1 - p)
            for o, s, d, k, p in zip(self.out, self.strides, self.dilations, kernel, self.padded)
        )
        self.padded_ext = tuple(p + e for p, e in zip(self.padded, self.extra))

    def pad(self, x: np.ndarray, value: float = 0.0) -> np.ndarray:
        lead = [(0, 0)] * (x.ndim - len(self.spatial))
        widths = lead + [(b, e + x_) for b, e, x_ in zip(self.begin, self.end, self.extra)]
        return np.pad(x, widths, constant_values=value)

    def crop(self, xp: np.ndarray) -> np.ndarray:
        lead = (slice(None),) * (xp.ndim - len(self.spatial))
        return xp[lead + tuple(slice(b, b + s) for b, s in zip(self.begin, self.spatial))]

    def offsets(self) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
        """(kernel offset, spatial slices of the padded input it reads) for every kernel position."""
        out = []
        for off in itertools.product(*(range(k) for k in self.kernel)):
            sl = tuple(
                slice(o * d, o * d + s * (n - 1) + 1, s)
                for o, d, s, n in zip(off, self.dilations, self.strides, self.out)
            )
            out.append((off, sl))
        return out


def conv_forward(x: np.ndarray, w: np.ndarray, geo: Geometry, group: int) -> np.ndarray:
    """ONNX Conv without bias: x (N, C, *S), w (O, C/group, *K) -> (N, O, *out)."""
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // group, o // group
    xp = geo.pad(x).reshape((n, group, cg) + geo.padded_ext)
    wg = w.reshape((group, og, cg) + geo.kernel)
    length = int(np.prod(geo.out))
    out = np.zeros((n, group, og, length), dtype=np.result_type(x, w))
    for off, sl in geo.offsets():
        patch = xp[(slice(None),) * 3 + sl].reshape(n, group, cg, length)
        out += wg[(slice(None),) * 3 + off] @ patch
    return out.reshape((n, o) + geo.out)


def conv_adjoint(s: np.ndarray, w: np.ndarray, geo: Geometry, group: int, channels: int) -> np.ndarray:
    """The transpose of :func:`conv_forward` with respect to x (the input gradient)."""
    n, o = s.shape[:2]
    cg, og = channels // group, o // group
    length = int(np.prod(geo.out))
    sg = s.reshape(n, group, og, length)
    wg = w.reshape((group, og, cg) + geo.kernel)
    gp = np.zeros((n, group, cg) + geo.padded_ext, dtype=np.result_type(s, w))
    for off, sl in geo.offsets():
        gp[(slice(None),) * 3 + sl] += (np.swapaxes(wg[(slice(None),) * 3 + off], -1, -2) @ sg).reshape(
            (n, group, cg) + geo.out
        )
    return geo.crop(gp.reshape((n, channels) + geo.padded_ext))


@register("Conv")
def conv(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    g = grads[0]
    assert g is not None
    if step.is_diff(1) or step.is_diff(2):
        raise step.unsupported("a Conv with computed weights")
    x, w = step.x(0), np.asarray(step.x(1))
    group = int(step.attr("group", 1))
    kernel = tuple(step.attr("kernel_shape", w.shape[2:]))
    geo = Geometry(step, x.shape[2:], kernel)
    channels = x.shape[1]

    def fwd(a: np.ndarray, ww: np.ndarray) -> np.ndarray:
        return conv_forward(a, ww, geo, group)

    def bwd(s: np.ndarray, ww: np.ndarray) -> np.ndarray:
        return conv_adjoint(s, ww, geo, group, channels)

    rest: list[np.ndarray | None] = [None] * (len(step.node.inputs) - 1)
    if not step.lrp:
        return [bwd(g, w)] + rest
    assert step.rule is not None
    bias = None
    if step.has_input(2):
        bias = np.asarray(step.x(2)).reshape((1, -1) + (1,) * len(kernel))
    if step.fused_bias is not None:
        extra = step.values[step.fused_bias]
        bias = extra if bias is None else bias + extra
    rel, absorbed = lrp_linear(x, g, fwd, bwd, w, bias, step.rule, step.linear_output(),
                               z_is_relu=bool(step.extra.get("rectified")))
    step.add_absorbed_rows(absorbed)
    return [rel] + rest
