"""ΔAUC and MAD of hidden units: channels of a hidden tensor set to their mean, the rest of
the network run from there (a real audit: ROOT file, ONNX model, onnxruntime), against the
same computation written out in numpy on the network's weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import (  # noqa: E402
    OPSET,
    dense_weights,
    make_flat_jets,
    mann_whitney_auc,
    mlp_model,
    save,
    toml_dumps,
    write_jets,
)

import hepaudit  # noqa: E402

M = 5


def audit(folder: Path, explainers: dict, model: str = "m.onnx") -> dict:
    doc = {
        "model": {"path": model},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 90},
        "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(M)]}],
        "execution": {"progress": False, "bootstrap": 0},
        "explainers": explainers,
    }
    path = folder / "audit.toml"
    path.write_text(toml_dumps(doc))
    return hepaudit.audit(path, out=folder / "out", progress=False).explainers


def test_hidden_channels_against_numpy(tmp_path: Path) -> None:
    jets = make_flat_jets(400, M, seed=3)
    write_jets(tmp_path / "jets.root", jets)
    weights = dense_weights([M, 10, 6, 1], seed=8)
    save(mlp_model(weights), tmp_path / "m.onnx")
    results = audit(tmp_path, {"dauc": {"hidden": "h1"}, "mad": {"hidden": "h1"}})
    dauc, mad = results["dauc"], results["mad"]
    assert dauc.status == "ok", dauc.error
    assert mad.status == "ok", mad.error

    # the same in numpy: h1 = relu(relu(x W0 + b0) W1 + b1), each column set to its mean
    x = np.stack([np.asarray(jets[f"f{k}"], np.float64) for k in range(M)], axis=1)
    labels = np.asarray(jets["is_signal"]).astype(bool)
    (w0, b0), (w1, b1), (w2, b2) = [(w.astype(np.float64), b.astype(np.float64)) for w, b in weights]
    h1 = np.maximum(np.maximum(x @ w0 + b0, 0) @ w1 + b1, 0)

    def head(h: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(h @ w2 + b2)[:, 0]))

    base = head(h1)
    want_dauc, want_mad = {}, {}
    for k in range(6):
        occluded = h1.copy()
        occluded[:, k] = h1[:, k].mean()
        f_k = head(occluded)
        want_dauc[f"h1[{k}]"] = mann_whitney_auc(base, labels) - mann_whitney_auc(f_k, labels)
        want_mad[f"h1[{k}]"] = (np.abs(base - f_k).mean(), np.abs(base - f_k)[labels].mean(),
                                np.abs(base - f_k)[~labels].mean())
    got_dauc = {d["feature"]: d["score"] for d in dauc.fields["hidden_units"]["importance"]}
    got_mad = {d["feature"]: d for d in mad.fields["hidden_units"]["importance"]}
    assert dauc.fields["hidden_units"]["tensor"] == "h1" and dauc.fields["hidden_units"]["channels"] == 6
    for name, value in want_dauc.items():
        assert abs(got_dauc[name] - value) < 2e-3, (name, got_dauc[name], value)
    for name, (overall, sig, bkg) in want_mad.items():
        np.testing.assert_allclose([got_mad[name]["score"], got_mad[name]["score_signal"],
                                    got_mad[name]["score_background"]], [overall, sig, bkg], rtol=1e-4, atol=1e-6)
    # a channel that is never active (ReLU always 0) has zero importance, an active one does not
    assert max(got_dauc.values()) > 0
    figures = {f.name for f in dauc.figures} | {f.name for f in mad.figures}
    assert {"dauc_hidden.png", "mad_hidden.png"} <= figures
    assert (tmp_path / "out" / "figures" / "dauc_hidden.png").exists()


def test_a_tensor_that_does_not_cut_the_graph_is_refused(tmp_path: Path) -> None:
    """score = sigmoid(h·a + x·c) with h = relu(x W): x reaches the score around h."""
    write_jets(tmp_path / "jets.root", make_flat_jets(100, M, seed=1))
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(M, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=(4, 1)).astype(np.float32), "A"),
             numpy_helper.from_array(rng.normal(size=(M, 1)).astype(np.float32), "C")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["pre"]), helper.make_node("Relu", ["pre"], ["h"]),
             helper.make_node("MatMul", ["h", "A"], ["ha"]), helper.make_node("MatMul", ["x", "C"], ["xc"]),
             helper.make_node("Add", ["ha", "xc"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])]
    graph = helper.make_graph(nodes, "skip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", M])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    save(model, tmp_path / "skip.onnx")
    try:
        audit(tmp_path, {"dauc": {"hidden": "h"}}, model="skip.onnx")
    except hepaudit.ConfigError as err:
        assert "explainers.dauc.hidden" in str(err) and "'x'" in str(err)
    else:
        raise AssertionError("a tensor with a path around it was accepted")


def test_mad_keeps_a_sample_of_signed_deltas_for_box_plots(tmp_path: Path) -> None:
    """MAD's per-jet Δ of a seeded sample of jets: f(x) − f(x\\k) against numpy, and the box plot."""
    jets = make_flat_jets(300, M, seed=4)
    write_jets(tmp_path / "jets.root", jets)
    weights = dense_weights([M, 8, 1], seed=2)
    save(mlp_model(weights), tmp_path / "m.onnx")
    mad = audit(tmp_path, {"mad": {"sample_jets": 50}})["mad"]
    assert mad.status == "ok", mad.error
    sample = mad.explanation
    assert sample is not None and len(sample) == 50 and sample.feature_names == [f"f{k}" for k in range(M)]
    x = np.stack([np.asarray(jets[f"f{k}"], np.float32) for k in range(M)], axis=1).astype(np.float64)
    (w0, b0), (w1, b1) = [(w.astype(np.float64), b.astype(np.float64)) for w, b in weights]

    def f(rows: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(np.maximum(rows @ w0 + b0, 0) @ w1 + b1)[:, 0]))

    mean = x.mean(axis=0)
    rows = x[sample.entries]
    for k in range(M):
        occluded = rows.copy()
        occluded[:, k] = mean[k]
        np.testing.assert_allclose(sample.values[:, k], f(rows) - f(occluded), atol=2e-5)
    np.testing.assert_array_equal(sample.labels, np.asarray(jets["is_signal"])[sample.entries])
    assert (tmp_path / "out" / "figures" / "mad_boxes.png").exists()
