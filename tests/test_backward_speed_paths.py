"""The backward engine's speed paths give the results of the plain path.

Row blocks (a batch cut into blocks of jets for cache-sized arrays), one OpenBLAS thread,
the sign-bit ε, Gemm weights prepared once and onnxruntime without spinning threads must
only change the speed: the same numbers up to the rounding of the compute precision (BLAS
may round a row differently for another block size or thread count, as a different chunk
size already does). Independent checks: the same engine with blocks off (whole batch);
LRP by its unit-by-unit definition (tests/test_lrp.py: loops_lrp) on a few jets of a
blocked batch; np.copysign for the stabiliser; OpenBLAS's own thread getter.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from builders import dense_weights, mlp_model, save  # noqa: E402
from test_lrp import loops_lrp  # noqa: E402

from hepaudit.config import ModelConfig  # noqa: E402
from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget, gradient_seed  # noqa: E402
from hepaudit.model.backward.base import safe_divide  # noqa: E402
from hepaudit.model.backward.blas import _controls, blas_threads  # noqa: E402
from hepaudit.model.backward.blocked import BlockedBackward  # noqa: E402
from hepaudit.model.graph import with_extra_outputs  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

WEIGHTS = dense_weights([7, 9, 5, 1], seed=5)
N = 2_503  # not a multiple of the block


def forward_values(engine: BackwardEngine, x: np.ndarray) -> dict[str, np.ndarray]:
    """The tensors the engine needs, from onnxruntime, as the explainers get them."""
    session = ort.InferenceSession(
        with_extra_outputs(engine.model, engine.needed).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    values = dict(zip(engine.needed, session.run(engine.needed, {"x": x})))
    values["x"] = x
    return values


@pytest.mark.parametrize("style", ["gemm", "matmul"])
@pytest.mark.parametrize(
    "rules",
    [
        RuleSet("epsilon", epsilon=1e-6),
        RuleSet("zero"),
        RuleSet("gamma", gamma=0.5),
        RuleSet("alpha2beta1"),
        RuleSet("epsilon", first_layer="flat"),
        RuleSet("epsilon", ignore_bias=True),
    ],
    ids=["epsilon", "zero", "gamma", "alpha2beta1", "flat-first", "ignore-bias"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_give_the_whole_batch_result(style: str, rules: RuleSet, dtype: type) -> None:
    model = mlp_model(WEIGHTS, style)
    target = ScoreTarget("logits", "Sigmoid")
    blocked = BackwardEngine(model, target, dtype=dtype, block_rows=400)
    whole = BackwardEngine(model, target, dtype=dtype, block_rows=None, blas_threads=None)
    assert blocked.row_wise
    x = np.random.default_rng(1).normal(size=(N, 7)).astype(np.float32)
    values = forward_values(blocked, x)
    assert len(blocked._blocks(values, N)) == 7
    got, want = blocked.relevance(values, rules), whole.relevance(values, rules)
    assert got.relevance["x"].shape == (N, 7) and got.relevance["x"].dtype == want.relevance["x"].dtype
    # BLAS may round a row differently with another block size or thread count (its edge
    # kernels): the same numbers to the precision's rounding, not always bit for bit
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype is np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(got.relevance["x"], want.relevance["x"], **tol)
    np.testing.assert_allclose(got.absorbed_bias, want.absorbed_bias, **tol)
    np.testing.assert_array_equal(got.seed_total, want.seed_total)
    seed = gradient_seed(target, values["logits"])
    np.testing.assert_allclose(blocked.gradient(values, seed)["x"], whole.gradient(values, seed)["x"], **tol)
    # and a second batch through the same engine (its prepared Gemm weights) matches a fresh engine
    x2 = np.random.default_rng(2).normal(size=(N, 7)).astype(np.float32)
    v2 = forward_values(blocked, x2)
    fresh = BackwardEngine(model, target, dtype=dtype, block_rows=None)
    np.testing.assert_allclose(
        blocked.relevance(v2, rules).relevance["x"], fresh.relevance(v2, rules).relevance["x"], **tol
    )


def test_blocked_relevance_matches_the_definition() -> None:
    engine = BackwardEngine(mlp_model(WEIGHTS), ScoreTarget("logits", "Sigmoid"), block_rows=300)
    x = np.random.default_rng(3).normal(size=(1000, 7)).astype(np.float32)
    rel = engine.relevance(forward_values(engine, x), RuleSet("epsilon", epsilon=1e-3)).relevance["x"]
    rows = [0, 299, 300, 301, 999]  # block edges
    want = loops_lrp(WEIGHTS, x[rows], "epsilon", eps=1e-3)
    np.testing.assert_allclose(rel[rows], want, rtol=1e-6, atol=1e-9)


def test_graphs_that_are_not_row_wise_run_as_one_block() -> None:
    # a deep-set style gate: Mul by a mask decides from the batch, never cut into blocks
    w = np.random.default_rng(4).normal(size=(3, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Mul", ["a", "m"], ["am"]),
        helper.make_node("ReduceSum", ["am"], ["logits"], keepdims=0, axes=[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "gate",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    engine = BackwardEngine(model, ScoreTarget("logits", None), block_rows=2)
    assert not engine.row_wise
    values = {"x": np.ones((5, 3), np.float32), "m": np.ones((5, 2), np.float32)}
    assert engine._blocks(values, 5) == [slice(0, 5)]
    # a row-wise graph still runs whole when a value is not a 2-D (jets, units) tensor
    dense = BackwardEngine(mlp_model(WEIGHTS), ScoreTarget("logits", "Sigmoid"), block_rows=2)
    assert dense._blocks({"x": np.ones((5, 7)), "odd": np.ones((5, 2, 2))}, 5) == [slice(0, 5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_bit_epsilon_is_copysign(dtype: type) -> None:
    z = np.array([[0.0, -0.0, 1.5, -2.5, 1e-7, -1e-7, np.inf, -np.inf, 3e-39, -3e-39]], dtype)
    z = np.repeat(z, 3, axis=0)
    r = np.random.default_rng(5).normal(size=z.shape).astype(dtype)
    eps = 1e-6
    want = r / (z + np.copysign(np.asarray(eps, dtype), z))
    np.testing.assert_array_equal(safe_divide(r, z, eps), want)
    # by the definition, sign(0) = +1, for every z except -0.0 (a dead unit either way)
    plus = np.signbit(z) & (z == 0)
    np.testing.assert_array_equal(
        safe_divide(r, z, eps)[~plus], (r / (z + np.where(z >= 0, eps, -eps).astype(dtype)))[~plus]
    )
    # a non-contiguous z takes the copysign path with the same numbers
    zt, rt = z.T, r.T
    np.testing.assert_array_equal(safe_divide(rt, zt, eps), want.T)
    assert np.isnan(safe_divide(r[:1, :1], np.full((1, 1), np.nan, dtype), eps)).all()


def test_blas_threads_is_restored() -> None:
    controls = _controls()
    if controls is None:
        pytest.skip("numpy is not linked against an OpenBLAS this helper can control")
    _local, _set, get = controls
    before = get()
    with blas_threads(1):
        assert get() == 1
    assert get() == before
    with blas_threads(None):  # None leaves it alone
        assert get() == before


def test_blas_threads_held_by_two_threads_stays_set_until_both_leave() -> None:
    """OpenBLAS's count is the process's: a thread leaving must not restore it under another
    thread still inside (the race that let blocks run two-threaded and round differently)."""
    import threading

    controls = _controls()
    if controls is None:
        pytest.skip("numpy is not linked against an OpenBLAS this helper can control")
    get = controls[2]
    before = get()
    entered, first_left, seen = threading.Barrier(2), threading.Event(), []

    def first() -> None:
        with blas_threads(1):
            entered.wait()
        first_left.set()

    def second() -> None:
        with blas_threads(1):
            entered.wait()
            first_left.wait()
            seen.append(get())  # the first thread has left: still one thread here

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [1]
    assert get() == before


def test_tagger_without_spinning_returns_the_same_tensors(tmp_path: Path) -> None:
    path = save(mlp_model(WEIGHTS), tmp_path / "mlp.onnx")
    x = np.random.default_rng(6).normal(size=(50, 7)).astype(np.float32)
    spinning = Tagger(ModelConfig(path=str(path)))
    spinning.spinning = True  # sessions no longer spin by default: ask for it before the session is rebuilt
    spinning.expose(["h0", "h1_pre"])
    quiet = Tagger(ModelConfig(path=str(path)))
    quiet.expose(["h0", "h1_pre"], spinning=False)
    assert spinning.spinning and not quiet.spinning
    a, b = spinning.run({"x": x}), quiet.run({"x": x})
    np.testing.assert_array_equal(a.score, b.score)
    for name in ("h0", "h1_pre"):
        np.testing.assert_array_equal(a.extra[name], b.extra[name])


@pytest.mark.parametrize(
    "rules",
    [
        RuleSet("epsilon", epsilon=1e-6),
        RuleSet("epsilon", epsilon=0.3),
        RuleSet("zero"),
        RuleSet("gamma", gamma=0.5),
        RuleSet("alpha1beta0"),
        RuleSet("epsilon", first_layer="wsquare"),
        RuleSet("epsilon", ignore_bias=True),
    ],
    ids=["epsilon", "big-epsilon", "zero", "gamma", "alpha1beta0", "wsquare-first", "ignore-bias"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rectified_layers_read_the_relu_output_with_the_same_result(rules: RuleSet, dtype: type) -> None:
    """A Gemm whose z feeds only a ReLU is not exposed: its rules read a = max(z, 0). The same
    graph with every z also a graph output (so nothing is rectified) gives the same relevance
    and gradient from the same forward values."""
    model = mlp_model(WEIGHTS, "gemm")
    pre = ["h0_pre", "h1_pre"]
    target = ScoreTarget("logits", "Sigmoid")
    fast = BackwardEngine(model, target, dtype=dtype)
    plain = BackwardEngine(with_extra_outputs(model, pre), target, dtype=dtype)  # graph outputs: kept
    assert set(fast.rectified.values()) == {"h0", "h1"} and plain.rectified == {}
    assert not set(pre) & set(fast.needed) and set(pre) <= set(plain.needed)
    x = np.random.default_rng(4).normal(size=(N, 7)).astype(np.float32)
    values = forward_values(plain, x)
    assert (values["h0_pre"] < 0).any()  # dead units whose z differs from a
    got, want = fast.relevance(values, rules), plain.relevance(values, rules)
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype is np.float32 else {"rtol": 1e-13, "atol": 1e-15}
    np.testing.assert_allclose(got.relevance["x"], want.relevance["x"], **tol)
    np.testing.assert_allclose(got.absorbed_bias, want.absorbed_bias, **tol)
    seed = gradient_seed(target, values["logits"])
    np.testing.assert_array_equal(fast.gradient(values, seed)["x"], plain.gradient(values, seed)["x"])
    # and against LRP's unit-by-unit definition (in float64 from x: the forward values are float32)
    if rules.default == "epsilon" and rules.first_layer == "same" and not rules.ignore_bias:
        want_loops = loops_lrp(WEIGHTS, x[:20], "epsilon", eps=rules.epsilon)
        np.testing.assert_allclose(got.relevance["x"][:20], want_loops, rtol=2e-4, atol=1e-6)


def test_a_relu_feeding_a_nonlinearity_is_not_rectified() -> None:
    """Relu -> Sigmoid -> Gemm: sigmoid(0) = 0.5 lets dead units take relevance, so z stays exposed."""
    w0, w1 = (np.random.default_rng(s).normal(size=shape).astype(np.float32) for s, shape in ((0, (4, 3)), (1, (3, 1))))
    nodes = [
        helper.make_node("Gemm", ["x", "W0"], ["z0"]),
        helper.make_node("Relu", ["z0"], ["a0"]),
        helper.make_node("Sigmoid", ["a0"], ["s0"]),
        helper.make_node("Gemm", ["s0", "W1"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w0, "W0"), numpy_helper.from_array(w1, "W1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    engine = BackwardEngine(model, ScoreTarget("logits", "Sigmoid"))
    assert engine.rectified == {} and "z0" in engine.needed


def test_rectified_conv_layers_give_the_relevance_of_exposed_ones() -> None:
    """Conv -> Relu -> Conv (1-D, padded) -> GlobalAveragePool -> Gemm: the first Conv is
    rectified; the same graph with its z a graph output is not; same relevance and gradient."""
    rng = np.random.default_rng(9)
    w0 = rng.normal(0, 0.5, (6, 3, 3)).astype(np.float32)
    b0 = rng.normal(0, 0.3, 6).astype(np.float32)
    w1 = rng.normal(0, 0.5, (4, 6, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (1, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W0", "B0"], ["z0"], pads=[1, 1]),
        helper.make_node("Relu", ["z0"], ["a0"]),
        helper.make_node("Conv", ["a0", "W1"], ["z1"], pads=[1, 1]),
        helper.make_node("GlobalAveragePool", ["z1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "W2"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(a, n) for a, n in ((w0, "W0"), (b0, "B0"), (w1, "W1"), (w2, "W2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    target = ScoreTarget("logits", "Sigmoid")
    fast = BackwardEngine(model, target, dtype=np.float64)
    plain = BackwardEngine(with_extra_outputs(model, ["z0"]), target, dtype=np.float64)
    assert list(fast.rectified.values()) == ["a0"] and plain.rectified == {} and "z0" not in fast.needed
    x = rng.normal(size=(50, 3, 8)).astype(np.float32)
    session = ort.InferenceSession(with_extra_outputs(plain.model, plain.needed).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    values = dict(zip(plain.needed, session.run(plain.needed, {"x": x})))
    values["x"] = x
    assert (values["z0"] < 0).any()
    for rules in (RuleSet("epsilon", epsilon=1e-3), RuleSet("zero"), RuleSet("alpha2beta1")):
        got, want = fast.relevance(values, rules), plain.relevance(values, rules)
        np.testing.assert_allclose(got.relevance["x"], want.relevance["x"], rtol=1e-12, atol=1e-14)
    seed = gradient_seed(target, values["logits"])
    np.testing.assert_array_equal(fast.gradient(values, seed)["x"], plain.gradient(values, seed)["x"])


def test_row_wise_blocks_run_forward_and_backward_on_threads(tmp_path: Path) -> None:
    """A row-wise graph: each block goes from its forward (the one-thread twin) to its
    relevance on one thread, blocks on ``model.threads`` threads. Three threads give the
    numbers of one, bit for bit, and those of the engine on onnxruntime's whole-batch forward
    to float32 rounding."""
    path = save(mlp_model(WEIGHTS), tmp_path / "mlp.onnx")
    x = np.random.default_rng(8).normal(size=(N, 7)).astype(np.float32)
    out = {}
    walkers: set[str] = set()
    for threads in (1, 3):
        tagger = Tagger(ModelConfig(path=str(path), threads=threads))
        engine = BackwardEngine(tagger.proto, ScoreTarget.from_score_spec(tagger.score_spec), ["x"],
                                dtype=np.float32, block_rows=300)
        blocked = BlockedBackward(tagger, engine)
        assert blocked._pipelined() and blocked.threads == threads
        walk = engine._backward

        def recorded(*args: object, walk=walk) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
            walkers.add(threading.current_thread().name)
            return walk(*args)

        engine._backward = recorded  # type: ignore[method-assign]
        out[threads] = (blocked.relevance({"x": x}, RuleSet("epsilon")), blocked.gradient({"x": x}))
        assert tagger.one_thread().n_runs == 0 and tagger.n_runs >= -(-N // 300)  # the twin's runs count here
    assert len(walkers) >= 2  # blocks were walked on more than one thread
    (r1, (g1, z1)), (r2, (g2, z2)) = out[1], out[3]
    np.testing.assert_array_equal(r1.relevance["x"], r2.relevance["x"])
    np.testing.assert_array_equal(r1.absorbed_bias, r2.absorbed_bias)
    np.testing.assert_array_equal(g1["x"], g2["x"])
    np.testing.assert_array_equal(z1, z2)
    whole = BackwardEngine(tagger.proto, ScoreTarget.from_score_spec(tagger.score_spec), ["x"],
                           dtype=np.float32, block_rows=None)
    values = forward_values(whole, x)
    want = whole.relevance(values, RuleSet("epsilon"))
    np.testing.assert_allclose(r2.relevance["x"], want.relevance["x"], rtol=1e-5, atol=1e-6)
    assert np.abs(want.relevance["x"]).sum() > 0
