"""Builders for the tests' real components: small ONNX taggers and ROOT jet files.

ONNX graphs are made with ``onnx.helper`` in the two styles collaborations meet:
PyTorch-style ``Gemm`` and Keras/tf2onnx-style ``MatMul`` + ``Add``, with Sigmoid or
Softmax heads and dynamic or fixed batch dimensions. ROOT files are classic TTrees
written with uproot (``mktree`` + ``extend``). The numpy ``forward`` functions compute
the same networks independently, for checks against onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import uproot
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def dense_weights(sizes: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random (W, b) per layer with W of shape (in, out), float32."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1 / np.sqrt(i), (i, o)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))
            for i, o in zip(sizes[:-1], sizes[1:])]


def mlp_model(weights: list[tuple[np.ndarray, np.ndarray]], style: str = "gemm", head: str = "sigmoid",
              batch: int | str = "N", input_name: str = "x", output_name: str = "score") -> onnx.ModelProto:
    """An MLP with ReLU hidden layers and a Sigmoid or Softmax head.

    ``style="gemm"``: Gemm(transB=1) like torch.onnx; ``style="matmul"``: MatMul + Add like tf2onnx.
    """
    nodes, inits = [], []
    current = input_name
    for i, (w, b) in enumerate(weights):
        out = f"h{i}" if i < len(weights) - 1 else "logits"
        if style == "gemm":
            inits += [numpy_helper.from_array(w.T.copy(), f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
            z = out + "_pre" if i < len(weights) - 1 else out
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [z],
                                          transB=1))
        else:
            inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
            nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"]))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out + "_pre" if i < len(weights) - 1 else out]))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        current = out
    if head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], [output_name]))
    else:
        nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=-1))
    n_in, n_out = weights[0][0].shape[0], weights[-1][0].shape[1]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hepaudit-tests")
    onnx.checker.check_model(model)
    return model


def mlp_forward(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, head: str = "sigmoid") -> np.ndarray:
    """The same network in numpy (float64): the probabilities."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w.astype(np.float64) + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    if head == "sigmoid":
        return 1 / (1 + np.exp(-h))
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def make_jets(n: int, seed: int = 0, max_const: int = 40) -> dict[str, object]:
    """Toy boosted jets: signal has three prongs (a top-like mass), background one or two."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int32)
    rng.shuffle(labels)
    counts = rng.integers(5, max_const, n)
    jet_pt = rng.uniform(550, 650, n)
    jet_eta = rng.uniform(-1.5, 1.5, n)
    jet_phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz, en = [], [], [], []
    for i in range(n):
        k = counts[i]
        prongs = 3 if labels[i] else rng.integers(1, 3)
        centres = rng.normal(0, 0.25 if labels[i] else 0.08, (prongs, 2))
        which = rng.integers(0, prongs, k)
        deta = centres[which, 0] + rng.normal(0, 0.03, k)
        dphi = centres[which, 1] + rng.normal(0, 0.03, k)
        frac = rng.dirichlet(np.ones(k) * 0.7) * jet_pt[i]
        eta = jet_eta[i] + deta
        phi = jet_phi[i] + dphi
        px.append(frac * np.cos(phi))
        py.append(frac * np.sin(phi))
        pz.append(frac * np.sinh(eta))
        en.append(frac * np.cosh(eta))
    return {
        "jet_pt": jet_pt, "jet_eta": jet_eta, "jet_phi": jet_phi,
        "jet_nconst": counts.astype(np.int32), "is_signal": labels,
        "part_px": ak.Array(px), "part_py": ak.Array(py), "part_pz": ak.Array(pz), "part_energy": ak.Array(en),
    }


def write_jets(path: Path, jets: dict[str, object], tree: str = "jets") -> Path:
    """A classic TTree with flat and jagged branches."""
    with uproot.recreate(path) as f:
        types = {}
        for k, v in jets.items():
            types[k] = (ak.Array(v).type.content if isinstance(v, ak.Array) else np.asarray(v).dtype)
        t = f.mktree(tree, {k: (v if not isinstance(jets[k], ak.Array) else "var * float64") for k, v in types.items()})
        t.extend({k: v for k, v in jets.items()})
    return path


# -- helpers added for the host acceptance tests -------------------------------------------------

def toml_value(value: object) -> str:
    """One TOML value: strings, numbers, booleans, arrays and inline tables."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else repr(v)))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_dumps(doc: dict[str, object]) -> str:
    """A small TOML writer: top-level tables become [sections], lists of tables [[arrays]],
    anything deeper an inline table. Enough for audit configs."""
    import json

    lines: list[str] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{json.dumps(key)} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def make_flat_jets(n: int, n_features: int = 4, seed: int = 0) -> dict[str, object]:
    """Jets with flat float32 features f0..f{k-1} that separate signal from background
    to different degrees, a 0/1 label ``is_signal`` and a positive ``weight``."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int32)
    rng.shuffle(labels)
    out: dict[str, object] = {}
    for k in range(n_features):
        shift = 1.2 / (k + 1)
        out[f"f{k}"] = (rng.normal(0, 1, n) + shift * labels).astype(np.float32)
    out["is_signal"] = labels
    out["weight"] = rng.uniform(0.2, 2.0, n)
    return out


def mann_whitney_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """AUC by its definition: over all (signal, background) pairs, w_s·w_b·[s > b] + 1/2 [s = b]."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    s, b = scores[labels], scores[~labels]
    ws, wb = w[labels], w[~labels]
    total = 0.0
    for i in range(len(s)):  # row by row to keep memory small
        wins = (s[i] > b) + 0.5 * (s[i] == b)
        total += ws[i] * np.sum(wb * wins)
    return float(total / (ws.sum() * wb.sum()))


def nan_model(n_in: int, input_name: str = "x", output_name: str = "score") -> onnx.ModelProto:
    """score = Sigmoid(Log(x[:, 0:1])): NaN for every jet whose first feature is negative."""
    nodes = [helper.make_node("Gather", [input_name, "first"], ["x0"], axis=1),
             helper.make_node("Log", ["x0"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], [output_name])]
    graph = helper.make_graph(
        nodes, "nan_model",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([0], np.int64), "first")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hepaudit-tests")
    onnx.checker.check_model(model)
    return model


def mlp_logits(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The pre-head values (logits) of :func:`mlp_model`'s network, in numpy float64."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w.astype(np.float64) + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


def mlp_hidden(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    """The ReLU activations h0, h1, ... of :func:`mlp_model`'s network, in numpy float64."""
    h = x.astype(np.float64)
    out = []
    for w, b in weights[:-1]:
        h = np.maximum(h @ w.astype(np.float64) + b, 0)
        out.append(h)
    return out


def as_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy of a float32 graph: weights, Casts to float, graph inputs and outputs;
    value_info is dropped (its float32 hidden shapes would contradict onnxruntime's inference)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, t in enumerate(copy.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            copy.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)
            )
    for n in copy.graph.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to":
                a.i = TensorProto.DOUBLE
    del copy.graph.value_info[:]
    for v in list(copy.graph.input) + list(copy.graph.output):
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return copy



def train_mlp(x: np.ndarray, y: np.ndarray, hidden: list[int], seed: int = 0, epochs: int = 400,
              rate: float = 0.01) -> list[tuple[np.ndarray, np.ndarray]]:
    """A ReLU MLP with a sigmoid output trained on (x, y) by full-batch Adam on the binary
    cross-entropy, in numpy: (W, b) per layer, W of shape (in, out), float32 (for mlp_model)."""
    sizes = [x.shape[1], *hidden, 1]
    params = [p.astype(np.float64) for wb in dense_weights(sizes, seed) for p in wb]
    moments = [np.zeros_like(p) for p in params] + [np.zeros_like(p) for p in params]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)[:, None]
    for step in range(1, epochs + 1):
        acts, h = [x64], x64
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i < len(params) - 2:
                h = np.maximum(h, 0)
            acts.append(h)
        grad = (1 / (1 + np.exp(-h)) - y64) / len(x64)  # d loss / d logit
        grads: list[np.ndarray] = []
        for i in range(len(params) - 2, -1, -2):
            grads = [acts[i // 2].T @ grad, grad.sum(axis=0)] + grads
            if i:
                grad = (grad @ params[i].T) * (acts[i // 2] > 0)
        for k, (p, g) in enumerate(zip(params, grads)):
            m, v = moments[k], moments[len(params) + k]
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return [(params[i].astype(np.float32), params[i + 1].astype(np.float32)) for i in range(0, len(params), 2)]


def write_features(path: Path, x: np.ndarray, labels: np.ndarray, tree: str = "jets") -> Path:
    """Flat float32 branches ``f0``.. from the columns of ``x`` and an int32 ``is_signal``."""
    branches = {f"f{k}": np.asarray(x[:, k], np.float32) for k in range(x.shape[1])}
    branches["is_signal"] = np.asarray(labels, np.int32)
    with uproot.recreate(path) as handle:
        handle.mktree(tree, {k: v.dtype for k, v in branches.items()})
        handle[tree].extend(branches)
    return path
