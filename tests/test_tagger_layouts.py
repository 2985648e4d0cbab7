"""What the collaboration taggers need of the host, on small real graphs (issue 18): hidden
tensors whose first axis is not the jets come back per jet with every entry, a tensor that
mixes jets is named and left out, the rows of one onnxruntime call are capped by the model's
memory per jet, a softmax head is found inside a Concat with a regression, a per-jet
attribution can be an array branch, and the backward pass runs in memory-bounded blocks with
the same result as one block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import uproot
from builders import save
from onnx import TensorProto, helper, numpy_helper

from hepaudit.config import ModelConfig
from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget
from hepaudit.model.backward.blocked import BlockedBackward
from hepaudit.model.footprint import bytes_per_jet, cache_rows
from hepaudit.model.graph import with_extra_outputs
from hepaudit.model.jet_axis import JetAxis, learn_jet_axis
from hepaudit.model.session import Tagger
from hepaudit.report.per_jet import PerJetWriter

RNG = np.random.default_rng(18)
P, C, E = 4, 3, 6  # objects per jet, channels, edges per jet


def edge_model() -> onnx.ModelProto:
    """x (N, P, C) -> edges (N·E, C) (an interaction network's layout) -> Relu -> per jet sum;
    also a channels-first (C, N·P) tensor and a batch-mixing tensor (x minus the batch mean)."""
    w = RNG.normal(size=(C, C)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["x", "senders"], ["s"], axis=1),  # (N, E, C)
        helper.make_node("Reshape", ["s", "flat_edges"], ["edges"]),  # (N·E, C)
        helper.make_node("MatMul", ["edges", "W"], ["m"]),
        helper.make_node("Relu", ["m"], ["act"]),
        helper.make_node("Reshape", ["act", "back"], ["per_jet"]),  # (N, E, C)
        helper.make_node("ReduceSum", ["per_jet", "ax12"], ["z"], keepdims=0),  # (N,)
        helper.make_node("Unsqueeze", ["z", "ax1"], ["z1"]),
        helper.make_node("Sigmoid", ["z1"], ["score"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[2, 0, 1]),  # (C, N, P)
        helper.make_node("Reshape", ["xt", "cols"], ["channels_first"]),  # (C, N·P)
        helper.make_node("ReduceMean", ["x", "ax0"], ["mu"], keepdims=1),
        helper.make_node("Sub", ["x", "mu"], ["mixed"]),
    ]
    return score_model("edges", nodes, {
        "senders": np.array([0, 1, 2, 3, 0, 1], np.int64), "flat_edges": np.array([-1, C], np.int64),
        "W": w, "back": np.array([-1, E, C], np.int64), "ax12": np.array([1, 2], np.int64),
        "ax1": np.array([1], np.int64), "cols": np.array([C, -1], np.int64), "ax0": np.array([0], np.int64)},
        ["N", P, C])


def score_model(name: str, nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray],
                shape: list[int | str]) -> onnx.ModelProto:
    """A graph from input ``x`` of ``shape`` to ``score`` (N, 1), opset 18."""
    initializers = [numpy_helper.from_array(a, n) for n, a in inits.items()]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def test_hidden_tensors_come_back_per_jet_with_every_entry(tmp_path: Path) -> None:
    path = save(edge_model(), tmp_path / "edges.onnx")
    x = RNG.normal(size=(7, P, C)).astype(np.float32)
    tagger = Tagger(ModelConfig(str(path), batch_size=3))  # three onnxruntime calls
    tagger.expose(["act", "channels_first", "mixed"])
    out = tagger.run({"x": x})
    assert tagger.jet_axes["act"] == JetAxis(0, E) and tagger.jet_axes["channels_first"] == JetAxis(1, P)
    assert out.extra["act"].shape == (7, E, C) and out.extra["channels_first"].shape == (7, C, P)
    names = ["act", "channels_first"]
    session = ort.InferenceSession(with_extra_outputs(tagger.proto, names).SerializeToString())
    for j in range(7):  # jet j alone through onnxruntime: its own edges and columns
        act, cols = session.run(names, {"x": x[j:j + 1]})
        np.testing.assert_allclose(out.extra["act"][j], act, rtol=1e-6)
        np.testing.assert_allclose(out.extra["channels_first"][j], cols, rtol=1e-6)
    # x minus the batch's mean depends on the other jets: no per-jet view, said so, left out
    assert "mixed" not in out.extra and "mixed" in tagger.no_jet_axis


def test_learn_jet_axis_refuses_what_is_not_per_jet() -> None:
    one = RNG.normal(size=(1, 5))
    assert learn_jet_axis(one, np.concatenate([one, one + 1])) == JetAxis(0, 1)
    assert learn_jet_axis(one, np.concatenate([one + 1, one])) is None  # the first jet changed
    assert learn_jet_axis(one, one) is None  # nothing grows with the jets
    assert learn_jet_axis(np.ones((2, 3)), np.ones((4, 6))) is None  # two axes grow


def big_hidden_model(width: int = 400) -> onnx.ModelProto:
    """x (N, 4) -> a (N, width, width) hidden tensor -> mean: 640 kB a jet at width 400."""
    nodes = [helper.make_node("Unsqueeze", ["x", "ax2"], ["x3"]),  # (N, 4, 1)
             helper.make_node("MatMul", ["x3", "row"], ["wide"]),  # (N, 4, width)
             helper.make_node("MatMul", ["wideT", "wide"], ["square"]),  # (N, width, width)
             helper.make_node("ReduceMean", ["square", "ax12"], ["z"], keepdims=0),
             helper.make_node("Unsqueeze", ["z", "ax1"], ["z1"]),
             helper.make_node("Sigmoid", ["z1"], ["score"])]
    nodes.insert(2, helper.make_node("Transpose", ["wide"], ["wideT"], perm=[0, 2, 1]))
    return score_model("big", nodes, {
        "ax2": np.array([2], np.int64), "row": RNG.normal(size=(1, width)).astype(np.float32),
        "ax12": np.array([1, 2], np.int64), "ax1": np.array([1], np.int64)}, ["N", 4])


def test_rows_per_call_follow_the_models_memory_per_jet(tmp_path: Path) -> None:
    path = save(big_hidden_model(), tmp_path / "big.onnx")
    x = RNG.normal(size=(50, 4)).astype(np.float32)
    tagger = Tagger(ModelConfig(str(path)))
    capped = tagger.run({"x": x})
    # 640 kB of the largest tensor alone per jet: far fewer rows than batch_size per call
    assert tagger.memory_rows is not None and tagger.memory_rows < 2000 < tagger.config.batch_size
    assert tagger.cached_rows <= tagger.memory_rows
    plain = ort.InferenceSession(str(path)).run(["score"], {"x": x})[0][:, 0]
    np.testing.assert_allclose(capped.score, plain, rtol=1e-6)


def test_repeated_pass_rows_follow_the_models_tensors_per_jet(tmp_path: Path) -> None:
    """Blocks of occluded passes sized so a call's tensors fit a core's cache, measured per model."""
    assert cache_rows(3728, threads=1) == 1024  # TopoDNN: 3.8 MB a block
    assert cache_rows(153_780, threads=1) == 16  # DeepJet on one thread (a Dask worker)...
    assert cache_rows(153_780, threads=2) == 256  # ... and on two, where every call's hand-off costs
    assert cache_rows(200, threads=1) == 4096  # a tiny model: the per-call cost amortised
    small = save(big_hidden_model(width=8), tmp_path / "small.onnx")
    big = save(big_hidden_model(), tmp_path / "big.onnx")
    x = RNG.normal(size=(50, 4)).astype(np.float32)
    rows = {}
    for name, path in (("small", small), ("big", big)):
        tagger = Tagger(ModelConfig(str(path), threads=1))
        assert tagger.cached_rows == 4096  # not yet measured
        tagger.run({"x": x})
        rows[name] = tagger.cached_rows
    assert rows["big"] < rows["small"]
    assert rows["big"] == cache_rows(bytes_per_jet(onnx.load(str(big)), {"x": x[:1]}, ["CPUExecutionProvider"]), 1)


def test_softmax_head_inside_a_concat_with_a_regression(tmp_path: Path) -> None:
    """HLT ParticleNet's output: Concat(softmax of the class logits, a pT regression)."""
    w = RNG.normal(size=(5, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["all"]),
             helper.make_node("Slice", ["all", "s0", "e0", "ax"], ["logits"]),
             helper.make_node("Slice", ["all", "s1", "e1", "ax"], ["reg"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("Concat", ["probs", "reg"], ["output"], axis=1)]
    inits = [numpy_helper.from_array(a, n) for n, a in {
        "W": w, "s0": np.array([0], np.int64), "e0": np.array([3], np.int64), "s1": np.array([3], np.int64),
        "e1": np.array([4], np.int64), "ax": np.array([1], np.int64)}.items()]
    graph = helper.make_graph(nodes, "hlt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = save(model, tmp_path / "hlt.onnx")
    x = RNG.normal(size=(6, 5)).astype(np.float32)
    tagger = Tagger(ModelConfig(str(path), classes=("b", "c", "light", "pt"), score="b"))
    assert tagger.score_spec.head is not None and tagger.score_spec.head.columns == 3
    out = tagger.run({"x": x})
    z = x @ w
    want = z[:, 0] - np.log(np.exp(z[:, 1]) + np.exp(z[:, 2]))
    np.testing.assert_allclose(out.logit, want, rtol=1e-4, atol=1e-5)
    # a score on the regression column has no softmax head
    reg = Tagger(ModelConfig(str(path), classes=("b", "c", "light", "pt"), score="pt"))
    assert reg.score_spec.head is None


def test_blocked_backward_equals_one_block(tmp_path: Path) -> None:
    path = save(edge_model(), tmp_path / "edges.onnx")
    x = RNG.normal(size=(9, P, C)).astype(np.float32)
    tagger = Tagger(ModelConfig(str(path)))
    engine = BackwardEngine(tagger.proto, ScoreTarget.from_score_spec(tagger.score_spec), ["x"])
    small = BlockedBackward(tagger, engine, budget_mb=1e-4)  # one jet a block
    whole = BlockedBackward(tagger, engine)
    assert small.rows({"x": x}) == 1 and whole.rows({"x": x}) >= 9
    for a, b in ((small.gradient({"x": x}), whole.gradient({"x": x})),):
        np.testing.assert_allclose(a[0]["x"], b[0]["x"], rtol=1e-6)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    ra, rb = small.relevance({"x": x}, RuleSet("epsilon")), whole.relevance({"x": x}, RuleSet("epsilon"))
    np.testing.assert_allclose(ra.relevance["x"], rb.relevance["x"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ra.absorbed_bias, rb.absorbed_bias, rtol=1e-5, atol=1e-7)


def test_per_jet_array_branches_round_trip(tmp_path: Path) -> None:
    writer = PerJetWriter(tmp_path / "per_jet.root")
    first = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    writer.write({"entry": np.arange(5), "lrp_pf": first})
    writer.write({"entry": np.arange(5, 8)})  # an explainer that failed half-way: NaN rows
    assert writer.close()
    with uproot.open(tmp_path / "per_jet.root") as f:
        got = f["hepaudit"]["lrp_pf"].array(library="np")
    assert got.shape == (8, 3, 4)
    np.testing.assert_array_equal(got[:5], first)
    assert np.isnan(got[5:]).all()
