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
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out + "_pre" if i < len(weights) - 1 else out],
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
