"""ΔAUC and MAD against direct recomputations of their definitions (docs/methods.md).

Real ROOT files and real ONNX models run by onnxruntime; every expected number is
recomputed here from the branch values with the numpy forward pass and a brute-force
Mann-Whitney AUC, never taken from hepaudit's own output.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from builders import (
    dense_weights,
    mann_whitney_auc,
    mlp_forward,
    mlp_logits,
    mlp_model,
    save,
)
from conftest import FEATURES, AuditSetup, make_setup

from hepaudit.audit import audit
from hepaudit.config import load_config
from hepaudit.metrics import kendall_tau, roc_auc, roc_auc_each
from hepaudit.model.session import Tagger

TOL = 1e-6


def features_of(setup: AuditSetup) -> np.ndarray:
    return np.stack([np.asarray(setup.jets[f], np.float32) for f in FEATURES], axis=1)


def by_feature(result, group: bool = False) -> dict[str, object]:
    rows = result.group_importance if group else result.feature_importance
    return {s.feature: s for s in rows}


def run(setup: AuditSetup, doc: dict):
    return audit(setup.write(doc), out=None, progress=False)


@pytest.fixture(params=["gemm", "matmul"])
def styled(request: pytest.FixtureRequest, tmp_path: Path) -> AuditSetup:
    setup = make_setup(tmp_path / "a", n=300)
    save(mlp_model(setup.weights, request.param), setup.model)
    return setup


@pytest.mark.parametrize("rows", [None, 7])
def test_dauc_and_mad_match_their_definitions(styled: AuditSetup, rows: int | None) -> None:
    """``rows = 7``: occluded passes in blocks of 64 jets (the least block; the last one
    short), on several threads; the numbers must not change."""
    setup = styled
    doc = setup.doc()
    if rows is not None:  # calls of 7 rows: occluded blocks of 64, each run in batches of 7
        doc["model"]["batch_size"] = rows
    report = run(setup, doc)
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    f = mlp_forward(setup.weights, x)[:, 0]
    base_auc = mann_whitney_auc(f, y)
    dauc, mad = report.explainers["dauc"], report.explainers["mad"]
    assert dauc.status == "ok" and mad.status == "ok"
    assert dauc.fields["baseline_auc"] == pytest.approx(base_auc, abs=TOL)
    assert abs(base_auc - 0.5) > 0.05  # the score does separate the classes: the test is not vacuous
    got_d, got_m = by_feature(dauc), by_feature(mad)
    assert list(got_d) == sorted(got_d, key=lambda k: -got_d[k].score)  # sorted by score
    deltas = []
    for k, name in enumerate(FEATURES):
        xk = x.copy()
        xk[:, k] = mean[k]
        fk = mlp_forward(setup.weights, xk)[:, 0]
        deltas.append(base_auc - mann_whitney_auc(fk, y))
        assert got_d[name].score == pytest.approx(deltas[-1], abs=TOL), name
        diff = np.abs(f - fk)
        assert got_m[name].score == pytest.approx(diff.mean(), abs=TOL), name
        assert got_m[name].score_signal == pytest.approx(diff[y == 1].mean(), abs=TOL), name
        assert got_m[name].score_background == pytest.approx(diff[y == 0].mean(), abs=TOL), name
    assert max(deltas) > 0.01  # some feature matters


@pytest.mark.parametrize("relative", [False, True])
def test_mad_on_the_logit(styled: AuditSetup, relative: bool) -> None:
    setup = styled
    doc = setup.doc()
    doc["explainers"] = {"mad": {"target": "logit", "relative": relative}}
    mad = run(setup, doc).explainers["mad"]
    assert mad.fields["target"] == "logit"
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    z = mlp_logits(setup.weights, x)[:, 0]
    got = by_feature(mad)
    for k, name in enumerate(FEATURES):
        xk = x.copy()
        xk[:, k] = mean[k]
        d = z - mlp_logits(setup.weights, xk)[:, 0]
        if relative:
            d = d / z
        expected = np.abs(d)
        rel = 1e-4  # float32 logits from onnxruntime; relative deltas can be large
        assert got[name].score == pytest.approx(expected.mean(), rel=rel, abs=1e-5), name
        assert got[name].score_signal == pytest.approx(expected[y == 1].mean(), rel=rel, abs=1e-5), name
        assert got[name].score_background == pytest.approx(expected[y == 0].mean(), rel=rel, abs=1e-5), name


def _iqr_clipped_mean(values: np.ndarray) -> tuple[float, float]:
    """Sum of |value| and count after setting values beyond 1.5 IQR from the quartiles to 0
    (NaN ignored in the quartiles): the paper's clipping when given the signed Δ."""
    q1 = np.nanpercentile(values, 25)
    q3 = np.nanpercentile(values, 75)
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    kept = np.where((values < lo) | (values > hi), 0.0, values)
    return float(np.abs(kept).sum()), len(values)


@pytest.mark.parametrize("variant", ["signed", "abs", True])
def test_mad_paper_variant_with_iqr_clipping(setup: AuditSetup, variant: str | bool) -> None:
    """The paper's MAD written out in numpy: Δ = (z(x) − z(x\\k)) / z(x) on the logit, quartiles of
    the signed Δ per class, values beyond 1.5 IQR set to 0, mean |Δ|; "abs" clips |Δ| instead;
    true is the paper's."""
    doc = setup.doc()
    doc["explainers"] = {"mad": {"target": "logit", "relative": True, "iqr_clip": variant}}
    mad = run(setup, doc).explainers["mad"]
    assert mad.fields["iqr_clip"] == ("signed" if variant is True else variant)
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    z = mlp_logits(setup.weights, x)[:, 0]
    got = by_feature(mad)
    n_clipped = 0
    for k, name in enumerate(FEATURES):
        xk = x.copy()
        xk[:, k] = mean[k]
        rel = (z - mlp_logits(setup.weights, xk)[:, 0]) / z
        if variant == "abs":
            rel = np.abs(rel)
        s_sig, n_sig = _iqr_clipped_mean(rel[y == 1])
        s_bkg, n_bkg = _iqr_clipped_mean(rel[y == 0])
        n_clipped += int(np.sum(np.abs(rel) > np.percentile(np.abs(rel), 75) * 3))
        assert got[name].score_signal == pytest.approx(s_sig / n_sig, rel=1e-4), name
        assert got[name].score_background == pytest.approx(s_bkg / n_bkg, rel=1e-4), name
        assert got[name].score == pytest.approx((s_sig + s_bkg) / (n_sig + n_bkg), rel=1e-4), name
        # clipping made a difference: the unclipped mean differs
        assert (abs(np.abs(rel[y == 1]).mean() - s_sig / n_sig) > 0
                or abs(np.abs(rel[y == 0]).mean() - s_bkg / n_bkg) > 0)
    assert n_clipped > 0


def test_mad_names_units_whose_iqr_is_zero(tmp_path: Path) -> None:
    """z = x·w + 3·relu(f3 − 1.5): occluding f3 changes z for ~7 % of the jets only, so the IQR
    of its Δ is 0 in both classes and clipping zeroes the rest. The result says so."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"mad": {"target": "logit", "iqr_clip": "signed"}})
    nodes = [helper.make_node("MatMul", ["x", "w"], ["lin"]),
             helper.make_node("Gather", ["x", "three"], ["f3"], axis=1),
             helper.make_node("Sub", ["f3", "cut"], ["f3c"]), helper.make_node("Relu", ["f3c"], ["r"]),
             helper.make_node("Mul", ["r", "k"], ["rk"]), helper.make_node("Add", ["lin", "rk"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["score"])]
    inits = [numpy_helper.from_array(a, n) for n, a in {
        "w": np.array([[1.0], [0.5], [0.3], [0.0]], np.float32), "three": np.array([3], np.int64),
        "cut": np.float32(1.5), "k": np.float32(3.0)}.items()]
    graph = helper.make_graph(nodes, "kink", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.onnx")
    from hepaudit import audit

    mad = audit(config, out=None).explainers["mad"]
    assert mad.fields["iqr_zero"] == {"background": ["f3"], "signal": ["f3"]}
    assert any("IQR of Δ is 0" in w and "f3" in w for w in mad.warnings)
    assert {s.feature: s.score for s in mad.feature_importance}["f3"] == 0.0


def test_weighted_auc_and_mad(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["weight"] = "weight"
    report = run(setup, doc)
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    w = np.asarray(setup.jets["weight"])
    f = mlp_forward(setup.weights, x)[:, 0]
    base = mann_whitney_auc(f, y, w)
    assert abs(base - mann_whitney_auc(f, y)) > 1e-4  # the weights change the AUC
    assert report.explainers["dauc"].fields["baseline_auc"] == pytest.approx(base, abs=TOL)
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)  # x̄ is the plain mean of the jets
    got_d, got_m = by_feature(report.explainers["dauc"]), by_feature(report.explainers["mad"])
    for k, name in enumerate(FEATURES):
        xk = x.copy()
        xk[:, k] = mean[k]
        fk = mlp_forward(setup.weights, xk)[:, 0]
        assert got_d[name].score == pytest.approx(base - mann_whitney_auc(fk, y, w), abs=TOL), name
        diff = np.abs(f - fk)
        assert got_m[name].score == pytest.approx(np.average(diff, weights=w), abs=TOL), name
        assert got_m[name].score_signal == pytest.approx(np.average(diff[y == 1], weights=w[y == 1]), abs=TOL)


def test_constant_baseline(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["explainers"] = {"dauc": {"baseline": 0.0}, "mad": {"baseline": 0.5}}
    report = run(setup, doc)
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    f = mlp_forward(setup.weights, x)[:, 0]
    base = mann_whitney_auc(f, y)
    got_d, got_m = by_feature(report.explainers["dauc"]), by_feature(report.explainers["mad"])
    for k, name in enumerate(FEATURES):
        x0 = x.copy()
        x0[:, k] = 0.0
        assert got_d[name].score == pytest.approx(
            base - mann_whitney_auc(mlp_forward(setup.weights, x0)[:, 0], y), abs=TOL
        )
        xh = x.copy()
        xh[:, k] = 0.5
        assert got_m[name].score == pytest.approx(
            np.abs(f - mlp_forward(setup.weights, xh)[:, 0]).mean(), abs=TOL
        )


def test_several_chunks_give_the_numbers_of_one_chunk(setup: AuditSetup) -> None:
    doc = setup.doc()
    doc["data"]["step_size"] = 10_000
    one = run(setup, doc)
    doc["data"]["step_size"] = 37  # 400 jets in 11 chunks, the last one short
    doc["model"]["batch_size"] = 16
    many = run(setup, doc)
    for name in ("dauc", "mad"):
        a, b = by_feature(one.explainers[name]), by_feature(many.explainers[name])
        assert set(a) == set(b) == set(FEATURES)
        for feat in FEATURES:
            assert b[feat].score == pytest.approx(a[feat].score, abs=1e-9)
            if name == "mad":
                assert b[feat].score_signal == pytest.approx(a[feat].score_signal, abs=1e-9)
    assert one.explainers["dauc"].fields["baseline_auc"] == many.explainers["dauc"].fields["baseline_auc"]


@pytest.mark.parametrize("factored", [True, False])
def test_occluded_passes_on_threads_give_the_numbers_of_one_thread(setup: AuditSetup, factored: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The occluded passes run in blocks on ``model.threads`` threads, each block on a
    one-thread session (the whole graph, or the graph after its first layer): the same
    numbers, bit for bit, as one thread."""
    from hepaudit.model.first_layer import FactoredPasses

    callers: set[str] = set()
    plain_run, plain_occluded = Tagger.run, FactoredPasses.occluded

    def run_and_record(self: Tagger, *args: object, **kwargs: object) -> object:
        if self._meter is not self:  # the one-thread twin: the occluded passes
            callers.add(threading.current_thread().name)
        return plain_run(self, *args, **kwargs)

    def occluded_and_record(self: FactoredPasses, *args: object, **kwargs: object) -> object:
        callers.add(threading.current_thread().name)
        return plain_occluded(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Tagger, "run", run_and_record)
    monkeypatch.setattr(FactoredPasses, "occluded", occluded_and_record)
    reports = {}
    for threads in (1, 2):
        doc = setup.doc()
        doc["model"]["threads"] = threads
        doc["model"]["factor_first_layer"] = factored
        doc["model"]["batch_size"] = 128  # occluded blocks of 64 rows: 3 in each 150-jet chunk
        doc["explainers"]["dauc"]["groups"] = {"pair": ["f0", "f1"]}  # a unit of two features
        reports[threads] = run(setup, doc)
    assert len(callers) >= 2  # two threads did run occluded blocks
    for name in ("dauc", "mad"):
        one, two = reports[1].explainers[name], reports[2].explainers[name]
        assert [(s.feature, s.score) for s in one.feature_importance] == \
            [(s.feature, s.score) for s in two.feature_importance]
    groups = [[(s.feature, s.score) for s in reports[t].explainers["dauc"].group_importance] for t in (1, 2)]
    assert groups[0] == groups[1] and groups[0][0][0] == "pair"


# -- Softmax heads and class-sum discriminants ----------------------------------------------


def _softmax_setup(setup: AuditSetup) -> list:
    weights = dense_weights([len(FEATURES), 8, 3], seed=21)
    save(mlp_model(weights, "matmul", head="softmax"), setup.model)
    return weights


def _lse(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def test_softmax_column_score_and_logit(setup: AuditSetup) -> None:
    weights = _softmax_setup(setup)
    doc = setup.doc()
    doc["model"]["score"] = 1
    doc["explainers"] = {"dauc": {}, "mad": {"target": "logit"}}
    x = features_of(setup)
    p = mlp_forward(weights, x, head="softmax")
    z = mlp_logits(weights, x)
    cfg = load_config(setup.write(doc))
    out = Tagger(cfg.model).run({"x": x})
    np.testing.assert_allclose(out.score, p[:, 1], atol=1e-6)
    np.testing.assert_allclose(out.logit, z[:, 1] - _lse(z[:, [0, 2]]), atol=1e-5)
    report = run(setup, doc)
    y = np.asarray(setup.jets["is_signal"])
    assert report.explainers["dauc"].fields["baseline_auc"] == pytest.approx(
        mann_whitney_auc(p[:, 1], y), abs=TOL
    )
    assert report.model["score"]["head"] == "Softmax"


def test_class_sum_discriminant(setup: AuditSetup) -> None:
    weights = _softmax_setup(setup)
    doc = setup.doc()
    doc["model"]["classes"] = ["top_bqq", "top_bq", "qcd"]
    doc["model"]["score"] = {"signal": ["top_bqq", "top_bq"], "background": ["qcd"]}
    doc["explainers"] = {"dauc": {}, "mad": {"target": "logit"}}
    x = features_of(setup)
    y = np.asarray(setup.jets["is_signal"])
    p = mlp_forward(weights, x, head="softmax")
    z = mlp_logits(weights, x)
    cfg = load_config(setup.write(doc))
    out = Tagger(cfg.model).run({"x": x})
    expected = (p[:, 0] + p[:, 1]) / (p[:, 0] + p[:, 1] + p[:, 2])
    np.testing.assert_allclose(out.score, expected, atol=1e-6)
    np.testing.assert_allclose(out.logit, _lse(z[:, [0, 1]]) - z[:, 2], atol=1e-5)
    report = run(setup, doc)
    assert report.model["score"]["kind"] == "class_sum"
    assert report.model["score"]["signal"] == ["top_bqq", "top_bq"]
    assert report.explainers["dauc"].fields["baseline_auc"] == pytest.approx(
        mann_whitney_auc(expected, y), abs=TOL
    )
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    got = by_feature(report.explainers["mad"])
    zs = _lse(z[:, [0, 1]]) - z[:, 2]
    for k, name in enumerate(FEATURES):
        xk = x.copy()
        xk[:, k] = mean[k]
        zk = mlp_logits(weights, xk)
        assert got[name].score == pytest.approx(
            np.abs(zs - (_lse(zk[:, [0, 1]]) - zk[:, 2])).mean(), abs=1e-5
        )


# -- groups on a constituents input ---------------------------------------------------------

P = 4


def constituent_matrix(jets: dict) -> np.ndarray:
    """(N, P*3) pt, eta, phi of the P leading constituents, particle-major, zero padded."""
    rows = []
    for px, py, pz in zip(jets["part_px"], jets["part_py"], jets["part_pz"], strict=True):
        px, py, pz = np.asarray(px), np.asarray(py), np.asarray(pz)
        pt = np.hypot(px, py)
        order = np.argsort(-pt, kind="stable")[:P]
        feats = np.zeros((P, 3))
        feats[: len(order), 0] = pt[order]
        feats[: len(order), 1] = np.arcsinh(pz[order] / pt[order])
        feats[: len(order), 2] = np.arctan2(py[order], px[order])
        rows.append(feats.reshape(-1))
    return np.array(rows, np.float32)


@pytest.mark.parametrize("rows", [None, 5])
def test_groups_on_constituents(setup: AuditSetup, rows: int | None) -> None:
    weights = dense_weights([P * 3, 6, 1], seed=31)
    w0 = weights[0][0].copy()
    w0[0::3] /= 100.0  # pT in GeV: keep the logits moderate, so float32 scores do not tie
    weights[0] = (w0 * 3.0, weights[0][1])
    save(mlp_model(weights, "gemm"), setup.dir / "c.onnx")
    doc = setup.doc()
    doc["model"]["path"] = "c.onnx"
    if rows is not None:  # groups occluded block by block (blocks of 64, calls of 5 rows)
        doc["model"]["batch_size"] = rows
    doc["inputs"] = [
        {
            "name": "x",
            "kind": "constituents",
            "features": ["pt", "eta", "phi"],
            "max_particles": P,
            "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"},
        }
    ]
    doc["explainers"] = {
        "dauc": {"groups": True},
        "mad": {"groups": {"lead": ["pt_0", "eta_0", "phi_0"], "angles": ["eta_*", "phi_*"]}},
    }
    report = run(setup, doc)
    x = constituent_matrix(setup.jets)
    y = np.asarray(setup.jets["is_signal"])
    names = [f"{f}_{p}" for p in range(P) for f in ("pt", "eta", "phi")]
    assert report.features == names
    mean = x.astype(np.float64).mean(axis=0).astype(np.float32)
    f = mlp_forward(weights, x)[:, 0]
    base = mann_whitney_auc(f, y)

    def occluded(columns: list[int]) -> np.ndarray:
        xk = x.copy()
        xk[:, columns] = mean[columns]
        return mlp_forward(weights, xk)[:, 0]

    dauc = report.explainers["dauc"]
    assert dauc.fields["baseline_auc"] == pytest.approx(base, abs=TOL)
    groups = by_feature(dauc, group=True)
    expected_groups = {f"particle_{p}": [3 * p, 3 * p + 1, 3 * p + 2] for p in range(P)}
    expected_groups.update(
        {f"feature_{f}": [3 * p + i for p in range(P)] for i, f in enumerate(("pt", "eta", "phi"))}
    )
    assert set(groups) == set(expected_groups)
    for name, cols in expected_groups.items():
        assert groups[name].score == pytest.approx(base - mann_whitney_auc(occluded(cols), y), abs=TOL), name
    for k, name in enumerate(names):
        assert by_feature(dauc)[name].score == pytest.approx(
            base - mann_whitney_auc(occluded([k]), y), abs=TOL
        )
    mad_groups = by_feature(report.explainers["mad"], group=True)
    user = {"lead": [0, 1, 2], "angles": [3 * p + i for p in range(P) for i in (1, 2)]}
    assert set(mad_groups) == set(user)
    for name, cols in user.items():
        assert mad_groups[name].score == pytest.approx(np.abs(f - occluded(cols)).mean(), abs=TOL), name
    assert max(abs(g.score) for g in groups.values()) > 1e-3  # occluding groups does move the AUC


# -- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_roc_auc_with_heavy_ties_matches_mann_whitney(weighted: bool) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 700)
    scores = rng.integers(0, 6, 700) + labels * rng.integers(0, 2, 700)  # only 7 distinct values
    weights = rng.uniform(0.1, 3.0, 700) if weighted else None
    assert roc_auc(scores, labels, weights) == pytest.approx(
        mann_whitney_auc(scores, labels, weights), abs=1e-12
    )
    # all scores tied: exactly one half
    assert roc_auc(np.ones(50), np.arange(50) % 2, weights[:50] if weighted else None) == pytest.approx(0.5)
    # order-independent
    perm = rng.permutation(700)
    assert roc_auc(scores[perm], labels[perm], None if weights is None else weights[perm]) == pytest.approx(
        roc_auc(scores, labels, weights), abs=1e-12
    )


@pytest.mark.parametrize("signal_fraction", [0.03, 0.5, 0.97])
def test_roc_auc_unbalanced_classes_with_ties(signal_fraction: float) -> None:
    """Either class may be the smaller one searching the larger: the same exact AUC, and the
    complement when the labels are swapped."""
    rng = np.random.default_rng(8)
    labels = (rng.random(3000) < signal_fraction).astype(int)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # many ties
    auc = roc_auc(scores, labels)
    assert auc == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-12)
    assert roc_auc(scores, 1 - labels) == pytest.approx(1 - auc, abs=1e-12)


def test_roc_auc_continuous_and_one_class() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 0.8, 1.0)
    assert roc_auc(scores, labels) == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-12)
    assert np.isnan(roc_auc(scores, np.ones(400)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kendall_tau_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 30).astype(float)  # ties in both
    b = a + rng.integers(-2, 3, 30)
    assert kendall_tau(a, b) == pytest.approx(scipy.stats.kendalltau(a, b).statistic, abs=1e-12)
    c = rng.normal(size=20)
    d = rng.normal(size=20)
    assert kendall_tau(c, d) == pytest.approx(scipy.stats.kendalltau(c, d).statistic, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_roc_auc_each_on_threads_matches_mann_whitney(weighted: bool, threads: int) -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 500)
    columns = [rng.normal(size=500) + k * 0.2 * labels for k in range(7)]
    weights = rng.uniform(0.1, 3.0, 500) if weighted else None
    got = roc_auc_each(lambda k: columns[k], len(columns), labels, weights, threads=threads)
    want = [mann_whitney_auc(c, labels, weights) for c in columns]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_occluded_passes_are_shared_and_reordered_requests_copied(setup: AuditSetup) -> None:
    """ΔAUC and MAD ask for the same units: the second caller gets the very arrays (read-only);
    a request for cached units in another order gets the same numbers, in its own array."""
    import uproot

    from hepaudit.data.builders import InputBuilder
    from hepaudit.explainers.base import AuditContext, Chunk
    from hepaudit.plugins import PluginHost

    cfg = load_config(setup.write())
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    with uproot.open(setup.data) as handle:
        arrays = handle["jets"].arrays(builder.branches, entry_stop=50)
    inputs = builder.build(arrays)
    mean = {k: v.mean(axis=0) for k, v in inputs.items()}
    context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups={}, input_mean=mean)
    out = tagger.run(inputs)
    chunk = Chunk(np.arange(50), inputs, out.score, out.logit, context)
    units = [[0], [1], [2, 3]]
    first, again = chunk.occluded(units), chunk.occluded(units)
    assert again[0] is not None and np.shares_memory(first[0], again[0]) and not again[0].flags.writeable
    # against a direct pass with the features replaced by their mean
    x = inputs["x"].copy()
    x[:, [2, 3]] = mean["x"][[2, 3]]
    np.testing.assert_allclose(first[0][2], tagger.run({"x": x}).score, rtol=1e-6)
    swapped = chunk.occluded([[2, 3], [0]])
    assert not np.shares_memory(swapped[0], first[0])
    np.testing.assert_array_equal(swapped[0], first[0][[2, 0]])
    np.testing.assert_array_equal(chunk.occluded([[1], [2, 3]])[1], first[1][1:])  # a run of rows: a view
