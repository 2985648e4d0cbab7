"""Backward of the recurrent ops LSTM and GRU (DeepJet's LSTMs, DeepDoubleX's reverse GRUs).

onnxruntime does not expose a recurrent cell's gates, so the forward pass is recomputed here in
float64 from the op's input (exposed) and weights, step by step, keeping every gate; the
recomputed outputs are checked against onnxruntime's. Then:

* the gradient is back-propagation through time, exact;
* LRP follows Arras et al. 2017 ("Explaining recurrent neural network predictions in sentiment
  analysis"): the gates (input, forget, output; update and reset) are *gates* and receive no
  relevance; a sum (the cell state c_t = f⊙c_{t−1} + i⊙g, the GRU state h_t = (1−z)⊙ĥ + z⊙h_{t−1})
  splits relevance in proportion to its terms (ε-stabilised); a product of a gate and a signal
  gives all of it to the signal ("signal-take-all"); the candidate's tanh passes it unchanged;
  the candidate's linear map (W x_t + R h_{t−1} + b) redistributes it with the ε rule, its bias
  absorbing its share. Relevance that reaches a constant initial state is absorbed too.

Supported: every direction (forward, reverse, bidirectional), both layouts, initial states,
LSTM peepholes, GRU ``linear_before_reset`` 0 and 1, the activations Sigmoid, HardSigmoid, Tanh
and Relu. Not supported (named in the error): ``clip``, LSTM ``input_forget``, and sequence
lengths shorter than the padded sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hepaudit.model.backward.base import Step, register

#: (f(x), f'(x) written in terms of y = f(x)): every activation here has such a derivative
Activation = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _activation(name: str, alpha: float | None, beta: float | None) -> Activation:
    """(f, f' from f's value) for an ONNX recurrent activation name."""
    name = name.lower()
    if name == "sigmoid":
        return (lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), lambda y: y * (1.0 - y))  # no overflow
    if name == "tanh":
        return (np.tanh, lambda y: 1.0 - y * y)
    if name == "relu":
        return (lambda x: np.maximum(x, 0.0), lambda y: (y > 0).astype(np.float64))
    if name == "hardsigmoid":
        a = 0.2 if alpha is None else alpha
        b = 0.5 if beta is None else beta
        return (lambda x: np.clip(a * x + b, 0.0, 1.0), lambda y: np.where((y > 0) & (y < 1), a, 0.0))
    raise ValueError(name)


def _activations(step: Step, defaults: list[str]) -> list[list[Activation]]:
    """Per direction, the activations of the op (its ``activations`` attribute, or ONNX's defaults)."""
    dirs = 2 if step.attr("direction", "forward") == "bidirectional" else 1
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in step.attr("activations", [])] or defaults * dirs
    # alphas and betas are consumed in order by the activations that take them (ONNX's rule)
    alphas = list(step.attr("activation_alpha", []))
    betas = list(step.attr("activation_beta", []))
    try:
        acts = []
        for n in names:
            takes = n.lower() == "hardsigmoid"
            alpha = alphas.pop(0) if takes and alphas else None
            beta = betas.pop(0) if takes and betas else None
            acts.append(_activation(n, alpha, beta))
    except ValueError as exc:
        raise step.unsupported(f"a recurrent activation {exc} (supported: Sigmoid, HardSigmoid, Tanh, Relu)") from None
    k = len(defaults)
    return [acts[d * k:(d + 1) * k] for d in range(dirs)]


def _checked(step: Step) -> None:
    if step.attr("clip") is not None:
        raise step.unsupported("a recurrent op with clip")
    if step.attr("input_forget", 0):
        raise step.unsupported("an LSTM with input_forget")
    if step.has_input(4):
        lens = np.asarray(step.x(4))
        seq = step.x(0).shape[1 if step.attr("layout", 0) else 0]
        if np.any(lens != seq):
            raise step.unsupported("sequence lengths shorter than the padded sequence")


def _sequence(step: Step) -> np.ndarray:
    """The input X as (T, B, I) float64."""
    x = np.asarray(step.x(0), np.float64)
    return np.swapaxes(x, 0, 1) if step.attr("layout", 0) else x


def _initial(step: Step, index: int, dirs: int, batch: int, hidden: int) -> np.ndarray:
    if step.has_input(index):
        h = np.asarray(step.x(index), np.float64)
        return np.swapaxes(h, 0, 1) if step.attr("layout", 0) else h
    return np.zeros((dirs, batch, hidden))


def _outputs(step: Step, y: np.ndarray) -> np.ndarray:
    """(T, dirs, B, H) in the op's layout."""
    return np.transpose(y, (2, 0, 1, 3)) if step.attr("layout", 0) else y


def _output_grads(step: Step, grads: list[np.ndarray | None], shape: tuple[int, int, int, int],
                  n_states: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """dY as (T, dirs, B, H) and the final-state gradients as (dirs, B, H), zeros where none arrived."""
    t, dirs, b, h = shape
    g_y = grads[0]
    if g_y is None:
        gy = np.zeros(shape)
    else:
        gy = np.asarray(g_y, np.float64)
        gy = np.transpose(gy, (1, 2, 0, 3)) if step.attr("layout", 0) else gy
    states = []
    for k in range(1, 1 + n_states):
        g = grads[k] if k < len(grads) else None
        if g is None:
            states.append(np.zeros((dirs, b, h)))
        else:
            g = np.asarray(g, np.float64)
            states.append(np.swapaxes(g, 0, 1) if step.attr("layout", 0) else g)
    return gy, states


def _stab(z: np.ndarray, eps: float) -> np.ndarray:
    return z + np.where(z >= 0, eps, -eps)


def _input_result(step: Step, gx: np.ndarray, initial: list[tuple[int, np.ndarray]]) -> list[np.ndarray | None]:
    """The op's input gradients/relevance: X, then initial states where they are computed tensors."""
    out: list[np.ndarray | None] = [None] * len(step.node.inputs)
    x = np.swapaxes(gx, 0, 1) if step.attr("layout", 0) else gx
    out[0] = x.astype(np.asarray(step.x(0)).dtype, copy=False)
    for index, g in initial:  # g: (dirs, B, H)
        if step.is_diff(index):
            out[index] = np.swapaxes(g, 0, 1) if step.attr("layout", 0) else g
        elif step.lrp:  # a constant (or absent, zero) initial state: its relevance is absorbed, per jet
            step.add_absorbed(np.swapaxes(g, 0, 1))
    return out


# -- LSTM --------------------------------------------------------------------------------------

@dataclass
class _LstmTrace:
    x: np.ndarray  # (T, B, I), in the direction's time order
    h: np.ndarray  # (T + 1, B, H): h[0] initial
    c: np.ndarray  # (T + 1, B, H)
    i: np.ndarray  # (T, B, H) gates, after activation
    o: np.ndarray
    f: np.ndarray
    g: np.ndarray  # candidate c̃
    a_g: np.ndarray  # its pre-activation (with bias)
    hc: np.ndarray  # h(c_t): the output activation of the cell state


def _lstm_forward(x: np.ndarray, w: np.ndarray, r: np.ndarray, bias: np.ndarray, peep: np.ndarray,
                  h0: np.ndarray, c0: np.ndarray, acts: list[Activation]) -> _LstmTrace:
    (fg, _), (fc, _), (fh, _) = acts
    t_len, b_size, _ = x.shape
    hid = r.shape[1]
    xw = x @ w.T + bias  # (T, B, 4H): every step's input part at once
    h = np.empty((t_len + 1, b_size, hid))
    c = np.empty((t_len + 1, b_size, hid))
    h[0], c[0] = h0, c0
    gates = {k: np.empty((t_len, b_size, hid)) for k in ("i", "o", "f", "g", "a_g", "hc")}
    pi, po, pf = peep[:hid], peep[hid:2 * hid], peep[2 * hid:]
    for t in range(t_len):
        a = xw[t] + h[t] @ r.T
        i = fg(a[:, :hid] + pi * c[t])
        f = fg(a[:, 2 * hid:3 * hid] + pf * c[t])
        a_g = a[:, 3 * hid:]
        g = fc(a_g)
        c[t + 1] = f * c[t] + i * g
        o = fg(a[:, hid:2 * hid] + po * c[t + 1])
        hc = fh(c[t + 1])
        h[t + 1] = o * hc
        for k, v in (("i", i), ("o", o), ("f", f), ("g", g), ("a_g", a_g), ("hc", hc)):
            gates[k][t] = v
    return _LstmTrace(x, h, c, gates["i"], gates["o"], gates["f"], gates["g"], gates["a_g"], gates["hc"])


def _lstm_gradient(tr: _LstmTrace, w: np.ndarray, r: np.ndarray, peep: np.ndarray, acts: list[Activation],
                   gy: np.ndarray, gh: np.ndarray, gc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (_, dg), (_, dc_act), (_, dh_act) = acts
    hid = r.shape[1]
    pi, po, pf = peep[:hid], peep[hid:2 * hid], peep[2 * hid:]
    gx = np.empty_like(tr.x)
    dh_next, dc_next = gh, gc
    for t in range(len(tr.x) - 1, -1, -1):
        dh = gy[t] + dh_next
        do = dh * tr.hc[t]
        dc = dc_next + dh * tr.o[t] * dh_act(tr.hc[t])
        dao = do * dg(tr.o[t])
        dc = dc + dao * po
        dai = dc * tr.g[t] * dg(tr.i[t])
        daf = dc * tr.c[t] * dg(tr.f[t])
        dag = dc * tr.i[t] * dc_act(tr.g[t])
        da = np.concatenate([dai, dao, daf, dag], axis=1)
        gx[t] = da @ w
        dh_next = da @ r
        dc_next = dc * tr.f[t] + dai * pi + daf * pf
    return gx, dh_next, dc_next


def _lstm_relevance(tr: _LstmTrace, w: np.ndarray, r: np.ndarray, bias: np.ndarray, ry: np.ndarray,
                    rh: np.ndarray, rc: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """Arras et al.'s LRP backward through one direction; also returns each jet's absorbed bias share."""
    hid = r.shape[1]
    wg, rg, bg = w[3 * hid:], r[3 * hid:], bias[3 * hid:]
    rx = np.empty_like(tr.x)
    absorbed = np.zeros(tr.x.shape[1])
    rh_next, rc_next = rh, rc
    for t in range(len(tr.x) - 1, -1, -1):
        r_c = rc_next + ry[t] + rh_next  # h_t = o ⊙ act(c_t): the gate o takes none
        s = r_c / _stab(tr.c[t + 1], eps)
        r_cprev = tr.f[t] * tr.c[t] * s
        r_g = tr.i[t] * tr.g[t] * s  # i ⊙ g: all to the signal g; g = act(a_g) passes it on
        z = tr.a_g[t]
        s2 = r_g / _stab(z, eps)
        rx[t] = tr.x[t] * (s2 @ wg)
        rh_next = tr.h[t] * (s2 @ rg)
        absorbed += (bg * s2).sum(axis=1)
        rc_next = r_cprev
    return rx, rh_next, rc_next, absorbed


@register("LSTM")
def lstm(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    _checked(step)
    x = _sequence(step)
    w_all, r_all = np.asarray(step.x(1), np.float64), np.asarray(step.x(2), np.float64)
    if any(step.is_diff(i) for i in (1, 2, 3, 7)):
        raise step.unsupported("an LSTM whose weights are computed from the inputs")
    dirs, four_h, _ = w_all.shape
    hid = four_h // 4
    t_len, batch, _ = x.shape
    b_all = np.asarray(step.x(3), np.float64) if step.has_input(3) else np.zeros((dirs, 8 * hid))
    p_all = np.asarray(step.x(7), np.float64) if step.has_input(7) else np.zeros((dirs, 3 * hid))
    h0, c0 = _initial(step, 5, dirs, batch, hid), _initial(step, 6, dirs, batch, hid)
    acts = _activations(step, ["Sigmoid", "Tanh", "Tanh"])
    gy, (gh, gc) = _output_grads(step, grads, (t_len, dirs, batch, hid), 2)
    reverse = step.attr("direction", "forward") == "reverse"
    gx = np.zeros_like(x)
    gh0, gc0 = np.zeros_like(h0), np.zeros_like(c0)
    y_check = np.empty((t_len, dirs, batch, hid))
    for d in range(dirs):
        flip = reverse or d == 1
        xs = x[::-1] if flip else x
        bias = b_all[d, :4 * hid] + b_all[d, 4 * hid:]
        tr = _lstm_forward(xs, w_all[d], r_all[d], bias, p_all[d], h0[d], c0[d], acts[d])
        y_check[:, d] = tr.h[1:][::-1] if flip else tr.h[1:]
        gyd = gy[:, d][::-1] if flip else gy[:, d]
        if step.lrp:
            assert step.rule is not None
            rx, rh0, rc0, absorbed = _lstm_relevance(tr, w_all[d], r_all[d], bias, gyd, gh[d], gc[d],
                                                     step.rule.epsilon_used or 1e-9)
            step.add_absorbed_rows(absorbed)
            gxd, gh0[d], gc0[d] = rx, rh0, rc0
        else:
            gxd, gh0[d], gc0[d] = _lstm_gradient(tr, w_all[d], r_all[d], p_all[d], acts[d], gyd, gh[d], gc[d])
        gx += gxd[::-1] if flip else gxd
    _agrees(step, _outputs(step, y_check))
    return _input_result(step, gx, [(5, gh0), (6, gc0)])


# -- GRU ---------------------------------------------------------------------------------------

@dataclass
class _GruTrace:
    x: np.ndarray
    h: np.ndarray  # (T + 1, B, H)
    z: np.ndarray
    r: np.ndarray
    hh: np.ndarray  # candidate ĥ
    a_h: np.ndarray  # its pre-activation
    u: np.ndarray  # linear_before_reset = 1: h R_hᵀ + Rb_h; else the reset state r ⊙ h_{t−1}


def _gru_forward(x: np.ndarray, w: np.ndarray, r: np.ndarray, wb: np.ndarray, rb: np.ndarray, h0: np.ndarray,
                 acts: list[Activation], lbr: bool) -> _GruTrace:
    (fg, _), (fc, _) = acts
    t_len, b_size, _ = x.shape
    hid = r.shape[1]
    xw = x @ w.T + wb
    h = np.empty((t_len + 1, b_size, hid))
    h[0] = h0
    keep = {k: np.empty((t_len, b_size, hid)) for k in ("z", "r", "hh", "a_h", "u")}
    rz, rr, rh = r[:hid], r[hid:2 * hid], r[2 * hid:]
    for t in range(t_len):
        z = fg(xw[t, :, :hid] + h[t] @ rz.T + rb[:hid])
        rg = fg(xw[t, :, hid:2 * hid] + h[t] @ rr.T + rb[hid:2 * hid])
        if lbr:
            u = h[t] @ rh.T + rb[2 * hid:]
            a_h = xw[t, :, 2 * hid:] + rg * u
        else:
            u = rg * h[t]
            a_h = xw[t, :, 2 * hid:] + u @ rh.T + rb[2 * hid:]
        hh = fc(a_h)
        h[t + 1] = (1.0 - z) * hh + z * h[t]
        for k, v in (("z", z), ("r", rg), ("hh", hh), ("a_h", a_h), ("u", u)):
            keep[k][t] = v
    return _GruTrace(x, h, keep["z"], keep["r"], keep["hh"], keep["a_h"], keep["u"])


def _gru_gradient(tr: _GruTrace, w: np.ndarray, r: np.ndarray, acts: list[Activation], lbr: bool,
                  gy: np.ndarray, gh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (_, dg), (_, dc) = acts
    hid = r.shape[1]
    wz, wr, wh = w[:hid], w[hid:2 * hid], w[2 * hid:]
    rz, rr, rh = r[:hid], r[hid:2 * hid], r[2 * hid:]
    gx = np.empty_like(tr.x)
    dh_next = gh
    for t in range(len(tr.x) - 1, -1, -1):
        dh = gy[t] + dh_next
        h_prev = tr.h[t]
        dz = dh * (h_prev - tr.hh[t])
        dh_prev = dh * tr.z[t]
        dah = dh * (1.0 - tr.z[t]) * dc(tr.hh[t])
        if lbr:
            dr = dah * tr.u[t]
            dh_prev = dh_prev + (dah * tr.r[t]) @ rh
        else:
            du = dah @ rh
            dr = du * h_prev
            dh_prev = dh_prev + du * tr.r[t]
        daz = dz * dg(tr.z[t])
        dar = dr * dg(tr.r[t])
        gx[t] = daz @ wz + dar @ wr + dah @ wh
        dh_next = dh_prev + daz @ rz + dar @ rr
    return gx, dh_next


def _gru_relevance(tr: _GruTrace, w: np.ndarray, r: np.ndarray, wb: np.ndarray, rb: np.ndarray, lbr: bool,
                   ry: np.ndarray, rh_last: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hid = r.shape[1]
    wh, rh = w[2 * hid:], r[2 * hid:]
    rx = np.empty_like(tr.x)
    absorbed = np.zeros(tr.x.shape[1])
    r_next = rh_last
    for t in range(len(tr.x) - 1, -1, -1):
        r_h = ry[t] + r_next
        h_prev = tr.h[t]
        s = r_h / _stab(tr.h[t + 1], eps)
        r_prev = tr.z[t] * h_prev * s  # z ⊙ h_{t−1}: all to h_{t−1}
        r_a = (1.0 - tr.z[t]) * tr.hh[t] * s  # (1 − z) ⊙ ĥ: all to ĥ, which passes it to a_h
        s2 = r_a / _stab(tr.a_h[t], eps)
        xpart = tr.x[t] * (s2 @ wh)
        rx[t] = xpart
        if lbr:
            # a_h = x W_hᵀ + r ⊙ u + Wb_h: r ⊙ u's share goes to u = h R_hᵀ + Rb_h (r is a gate)
            r_u = tr.r[t] * tr.u[t] * s2
            absorbed += (wb[2 * hid:] * s2).sum(axis=1)
            s3 = r_u / _stab(tr.u[t], eps)
            r_prev = r_prev + h_prev * (s3 @ rh)
            absorbed += (rb[2 * hid:] * s3).sum(axis=1)
        else:
            # a_h = x W_hᵀ + (r ⊙ h) R_hᵀ + b: the reset state's share goes to h (r is a gate)
            r_prev = r_prev + tr.u[t] * (s2 @ rh)
            absorbed += ((wb[2 * hid:] + rb[2 * hid:]) * s2).sum(axis=1)
        r_next = r_prev
    return rx, r_next, absorbed


@register("GRU")
def gru(step: Step, grads: list[np.ndarray | None]) -> list[np.ndarray | None]:
    _checked(step)
    x = _sequence(step)
    if any(step.is_diff(i) for i in (1, 2, 3)):
        raise step.unsupported("a GRU whose weights are computed from the inputs")
    w_all, r_all = np.asarray(step.x(1), np.float64), np.asarray(step.x(2), np.float64)
    dirs, three_h, _ = w_all.shape
    hid = three_h // 3
    t_len, batch, _ = x.shape
    b_all = np.asarray(step.x(3), np.float64) if step.has_input(3) else np.zeros((dirs, 6 * hid))
    h0 = _initial(step, 5, dirs, batch, hid)
    acts = _activations(step, ["Sigmoid", "Tanh"])
    lbr = bool(step.attr("linear_before_reset", 0))
    gy, (gh,) = _output_grads(step, grads, (t_len, dirs, batch, hid), 1)
    reverse = step.attr("direction", "forward") == "reverse"
    gx = np.zeros_like(x)
    gh0 = np.zeros_like(h0)
    y_check = np.empty((t_len, dirs, batch, hid))
    for d in range(dirs):
        flip = reverse or d == 1
        xs = x[::-1] if flip else x
        wb, rb = b_all[d, :3 * hid], b_all[d, 3 * hid:]
        tr = _gru_forward(xs, w_all[d], r_all[d], wb, rb, h0[d], acts[d], lbr)
        y_check[:, d] = tr.h[1:][::-1] if flip else tr.h[1:]
        gyd = gy[:, d][::-1] if flip else gy[:, d]
        if step.lrp:
            assert step.rule is not None
            rx, rh0, absorbed = _gru_relevance(tr, w_all[d], r_all[d], wb, rb, lbr, gyd, gh[d],
                                               step.rule.epsilon_used or 1e-9)
            step.add_absorbed_rows(absorbed)
            gxd, gh0[d] = rx, rh0
        else:
            gxd, gh0[d] = _gru_gradient(tr, w_all[d], r_all[d], acts[d], lbr, gyd, gh[d])
        gx += gxd[::-1] if flip else gxd
    _agrees(step, _outputs(step, y_check))
    return _input_result(step, gx, [(5, gh0)])


def _agrees(step: Step, y: np.ndarray) -> None:
    """The recomputed outputs must be onnxruntime's: else the op has a variant not handled here."""
    if step.node.outputs[0] not in step.values:
        return
    ref = np.asarray(step.y(), np.float64)
    if ref.shape == y.shape and not np.allclose(y, ref, rtol=1e-3, atol=1e-4):
        worst = float(np.max(np.abs(y - ref)))
        raise step.unsupported(f"its forward pass, recomputed in numpy, differs from onnxruntime's by {worst:.3g}")
