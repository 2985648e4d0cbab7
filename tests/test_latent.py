"""Latent space: PCA against numpy's SVD, correlations against numpy/scipy, N-subjettiness.

Hidden tensors for the reference numbers come from a truncated copy of the graph run in its
own onnxruntime session; jet observables for the checks are computed here from the ROOT
branches with plain numpy; τ_N is checked on jets where the answer is known and against a
brute-force minimisation over axis positions.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).parent))

from builders import make_jets  # noqa: E402
from test_nap import DEEP_SET_INPUTS, built_inputs, deep_set_model, truncated_run, write_audit  # noqa: E402

import hepaudit  # noqa: E402
from hepaudit.data.constituents import momenta_from_cartesian  # noqa: E402
from hepaudit.data.observables import jet_observables, nsubjettiness  # noqa: E402
from hepaudit.explainers.base import AuditContext, Chunk  # noqa: E402
from hepaudit.explainers.latent import LatentOptions, LatentSpace  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

OPSET = 13


def numpy_observables(folder: Path) -> dict[str, np.ndarray]:
    """Jet mass, pT and multiplicity straight from the ROOT branches."""
    with uproot.open(folder / "jets.root") as f:
        a = f["jets"].arrays(["part_px", "part_py", "part_pz", "part_energy"])
    px, py, pz, e = (
        np.array([np.sum(v) for v in a[b].to_list()])
        for b in ("part_px", "part_py", "part_pz", "part_energy")
    )
    return {
        "mass": np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0)),
        "pt": np.hypot(px, py),
        "n_constituents": np.array([len(v) for v in a["part_px"].to_list()], float),
    }


def test_pca_and_correlations_of_a_deep_set_latent(tmp_path: Path) -> None:
    model = deep_set_model(50, phi=6)
    config = write_audit(tmp_path, model, DEEP_SET_INPUTS, {"latent": {"components": 3}}, score=1)
    report = hepaudit.audit(config, out=None, progress=False)
    result = report.explainers["latent"]
    assert result.status == "ok", result.error
    fields = result.fields
    assert fields["tensor"] == "latent" and fields["tensor_chosen_by"] == "widest pooled tensor"
    tree = report.per_jet["latent"]  # every jet here: the sample is larger than the audit

    inputs, labels = built_inputs(tmp_path, {})
    h = truncated_run(model, inputs, ["latent"])["latent"].astype(np.float64)
    centred = h - h.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / len(h)
    np.testing.assert_allclose(fields["variance_explained"], variance / variance.sum(), rtol=1e-6, atol=1e-10)
    obs = numpy_observables(tmp_path)
    assert fields["jets"] == len(h) and fields["spearman_sample"]["jets"] == len(h)
    for comp in fields["components"]:
        i = comp["index"]
        assert comp["variance"] == pytest.approx(variance[i], rel=1e-6)
        u = np.asarray(comp["loadings"])
        assert abs(u @ vt[i]) == pytest.approx(1.0, abs=1e-6)  # the same direction, up to sign
        assert u[np.argmax(np.abs(u))] > 0  # the documented sign convention
        pc = centred @ u
        assert comp["mean_signal"] == pytest.approx(pc[labels == 1].mean(), rel=1e-6, abs=1e-9)
        for name in ("mass", "pt", "n_constituents"):
            assert comp["pearson"][name] == pytest.approx(np.corrcoef(pc, obs[name])[0, 1], abs=1e-6)
            assert comp["spearman"][name] == pytest.approx(stats.spearmanr(pc, obs[name])[0], abs=1e-5)
        auc = stats.mannwhitneyu(pc[labels == 1], pc[labels == 0]).statistic / (
            (labels == 1).sum() * (labels == 0).sum()
        )
        assert comp["auc_sample"] == pytest.approx(auc, abs=1e-5)
        # per jet, in entry order: the component and the observables it was compared with
        np.testing.assert_allclose(tree["latent_pc"][:, i], pc, rtol=1e-4, atol=1e-4 * np.abs(pc).max())
    np.testing.assert_array_equal(tree["entry"], np.arange(len(h)))
    np.testing.assert_array_equal(tree["label"], labels)
    np.testing.assert_allclose(tree["mass"], obs["mass"], rtol=1e-5)
    assert tree["latent_pc"].shape == (len(h), 3)
    assert set(fields["observables"]) >= {"mass", "pt", "n_constituents", "tau21", "tau32"}
    names = [f.name for f in result.figures]
    assert names == ["latent_components.png", "latent_correlations.png"]


def mass_unit_model() -> onnx.ModelProto:
    """h = Relu(x W + b) with x = (jet_mass, jet_pt): unit 0 = jet_mass, units 1, 2 constant."""
    w1 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    b1 = np.array([0.0, 1.0, 0.5], np.float32)
    w2 = np.array([[0.01], [0.2], [-0.3]], np.float32)
    nodes = [
        helper.make_node("MatMul", ["jet", "W1"], ["mm"]),
        helper.make_node("Add", ["mm", "b1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    inits = [
        numpy_helper.from_array(w1, "W1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "W2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mass_unit",
        [helper.make_tensor_value_info("jet", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def jets_with_mass(n: int, seed: int) -> dict[str, object]:
    jets = make_jets(n, seed=seed)
    px, py, pz, e = (
        np.array([np.sum(v) for v in ak.to_list(jets[b])])
        for b in ("part_px", "part_py", "part_pz", "part_energy")
    )
    jets["jet_mass"] = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))
    return jets


def test_hidden_unit_equal_to_jet_mass_has_correlation_one(tmp_path: Path) -> None:
    inputs = [{"name": "jet", "kind": "jet", "branches": ["jet_mass", "jet_pt"]}]
    config = write_audit(
        tmp_path, mass_unit_model(), inputs, {"latent": {"components": 2}}, jets=jets_with_mass(600, 11)
    )
    result = hepaudit.audit(config, out=None, progress=False).explainers["latent"]
    assert result.status == "ok", result.error
    fields = result.fields
    assert fields["tensor"] == "h" and fields["tensor_chosen_by"] == "last hidden layer"
    assert fields["observables"] == ["jet_mass", "jet_pt"]
    pc0 = fields["components"][0]
    assert pc0["pearson"]["jet_mass"] == pytest.approx(1.0, abs=1e-9)
    assert pc0["spearman"]["jet_mass"] == pytest.approx(1.0, abs=1e-12)
    assert pc0["variance_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert abs(pc0["pearson"]["jet_pt"]) < 0.5
    assert fields["strongest"][0]["observable"] == "jet_mass"
    assert fields["components"][1]["pearson"]["jet_mass"] is None  # zero variance: no correlation


def test_state_merge_equals_one_pass(tmp_path: Path) -> None:
    from builders import save

    from hepaudit.config import ModelConfig
    from hepaudit.model.graph import find_head  # noqa: F401  (import check of the public helpers)

    save(mass_unit_model(), tmp_path / "m.onnx")
    tagger = Tagger(ModelConfig(path=str(tmp_path / "m.onnx")))
    cfg = types.SimpleNamespace(kind="jet", name="jet", branches=("jet_mass", "jet_pt"), momentum=None)
    context = AuditContext(tagger=tagger, builder=types.SimpleNamespace(inputs=[cfg]), features=[], groups={})
    explainer = LatentSpace(LatentOptions(sample=150, figure=False, components=2), context)
    rng = np.random.default_rng(3)
    n = 400
    arrays = {
        "jet_mass": rng.uniform(20, 200, n),
        "jet_pt": rng.uniform(400, 700, n) + 0.5 * rng.normal(size=n),
    }
    arrays["jet_mass"][::37] = np.nan  # non-finite observable values are left out of that observable only
    x = np.stack([np.nan_to_num(arrays["jet_mass"], nan=50.0), arrays["jet_pt"]], axis=1).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)

    def chunk(sel: slice) -> Chunk:
        out = tagger.run({"jet": x[sel]})
        return Chunk(
            np.arange(n)[sel],
            {"jet": x[sel]},
            out.score,
            out.logit,
            context,
            labels[sel],
            extra=out.extra,
            arrays={k: v[sel] for k, v in arrays.items()},
        )

    one = explainer.finish(explainer.update(explainer.start(), chunk(slice(0, n))))
    a = explainer.update(explainer.start(), chunk(slice(0, 130)))
    b = explainer.update(explainer.update(explainer.start(), chunk(slice(130, 290))), chunk(slice(290, n)))
    merged = explainer.finish(explainer.merge(a, b))
    for c1, c2 in zip(one.fields["components"], merged.fields["components"]):
        assert c1["variance"] == pytest.approx(c2["variance"], rel=1e-9)
        assert c1["pearson"]["jet_mass"] == pytest.approx(c2["pearson"]["jet_mass"], abs=1e-9)
        assert c1["spearman"] == pytest.approx(c2["spearman"], abs=1e-12)  # same bottom-k sample
    finite = np.isfinite(arrays["jet_mass"])
    assert one.fields["components"][0]["pearson"]["jet_mass"] == pytest.approx(1.0, abs=1e-9)
    assert one.fields["components"][0]["pearson"]["jet_pt"] == pytest.approx(
        np.corrcoef(x[:, 0].astype(np.float64), arrays["jet_pt"])[0, 1], abs=1e-6
    )
    assert finite.sum() < n and one.fields["spearman_sample"]["jets"] == 150
    # the per-jet tree holds the same 150 jets, in entry order, whatever the chunking
    tree, tree_merged = one.trees["latent"], merged.trees["latent"]
    assert len(tree["entry"]) == 150 and np.all(np.diff(tree["entry"]) > 0)
    for name in tree:
        np.testing.assert_allclose(tree[name], tree_merged[name], rtol=1e-6)
    np.testing.assert_array_equal(tree["jet_pt"], arrays["jet_pt"][tree["entry"]].astype(np.float32))


# -- observables ---------------------------------------------------------------------------------


def prong_jet(rng: np.random.Generator, prongs: int, per_prong: int) -> tuple[np.ndarray, ...]:
    """Massless constituents sitting exactly on ``prongs`` points of the (y, φ) plane."""
    centres = rng.uniform(-0.6, 0.6, (prongs, 2))
    which = np.repeat(np.arange(prongs), per_prong)
    pt = rng.uniform(1, 50, len(which))
    return pt, centres[which, 0], centres[which, 1]


@pytest.mark.parametrize("prongs", [1, 2, 3])
def test_tau_n_vanishes_for_n_exact_prongs(prongs: int) -> None:
    rng = np.random.default_rng(prongs)
    jets = [prong_jet(rng, prongs, 5) for _ in range(20)]
    pt, y, phi = (np.stack([j[i] for j in jets]) for i in range(3))
    tau = nsubjettiness(pt, y, phi, n_max=3)
    assert np.all(tau[:, prongs - 1] < 1e-12)
    if prongs > 1:
        assert np.all(tau[:, prongs - 2] > 1e-3)  # one axis fewer than prongs cannot be exact


def test_tau1_of_two_particles_and_brute_force() -> None:
    tau = nsubjettiness(np.array([[3.0, 1.0]]), np.array([[0.0, 0.3]]), np.array([[0.0, 0.4]]))
    # β = 1: the best single axis sits on the harder particle; τ1 = pT2 ΔR / (ΣpT R0)
    assert tau[0, 0] == pytest.approx(1.0 * 0.5 / (4.0 * 0.8), rel=1e-12)
    rng = np.random.default_rng(5)
    # three jets of two smeared prongs plus soft diffuse radiation: the structure τ2 is made for
    pt = np.concatenate([rng.uniform(5, 40, (3, 10)), rng.exponential(1.0, (3, 4))], axis=1)
    centres = rng.uniform(-0.4, 0.4, (3, 2, 2))
    which = np.tile(np.arange(10) % 2, (3, 1))
    y = np.concatenate(
        [centres[np.arange(3)[:, None], which, 0] + rng.normal(0, 0.05, (3, 10)), rng.normal(0, 0.4, (3, 4))],
        axis=1,
    )
    phi = np.concatenate(
        [centres[np.arange(3)[:, None], which, 1] + rng.normal(0, 0.05, (3, 10)), rng.normal(0, 0.4, (3, 4))],
        axis=1,
    )
    ours = nsubjettiness(pt, y, phi, n_max=2)
    m = pt.shape[1]
    for i in range(3):
        points = np.stack([y[i], phi[i]], axis=1)
        for n_axes in (1, 2):

            def tau_of(
                a: np.ndarray, n_axes: int = n_axes, points: np.ndarray = points, w: np.ndarray = pt[i]
            ) -> float:
                d = np.sqrt(((points[:, None, :] - a.reshape(n_axes, 2)[None]) ** 2).sum(-1)).min(axis=1)
                return float((w * d).sum() / (w.sum() * 0.8))

            best = min(
                optimize.minimize(
                    tau_of,
                    points[rng.choice(m, n_axes, replace=False)].ravel(),
                    method="Nelder-Mead",
                    options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000},
                ).fun
                for _ in range(25)
            )
            # never below the true minimum (any axes give an upper bound), and close to it
            assert best - 1e-9 <= ours[i, n_axes - 1] <= best * 1.01


def test_jet_observables_from_four_momenta() -> None:
    rng = np.random.default_rng(9)
    jets = []
    for prongs in (1, 2, 3):
        pt, y, phi = prong_jet(rng, prongs, 4)
        jets.append((pt, y + 0.4, phi + 3.0))  # near φ = π, so the wrap at ±π matters
    px = ak.Array([j[0] * np.cos(j[2]) for j in jets])
    py = ak.Array([j[0] * np.sin(j[2]) for j in jets])
    pz = ak.Array([j[0] * np.sinh(j[1]) for j in jets])
    e = ak.Array([j[0] * np.cosh(j[1]) for j in jets])
    obs = jet_observables(momenta_from_cartesian(px, py, pz, e))
    for i, (pt, _, _) in enumerate(jets):
        sx, sy, sz, se = (float(np.sum(ak.to_numpy(v[i]))) for v in (px, py, pz, e))
        assert obs["mass"][i] == pytest.approx(np.sqrt(max(se**2 - sx**2 - sy**2 - sz**2, 0)), rel=1e-9)
        assert obs["pt"][i] == pytest.approx(np.hypot(sx, sy), rel=1e-12)
        assert obs["n_constituents"][i] == len(pt)
    assert obs["tau1"][0] < 1e-9 and obs["tau2"][1] < 1e-9 and obs["tau3"][2] < 1e-9
    assert obs["tau21"][1] < 1e-9 and obs["tau32"][2] < 1e-9
    assert np.isnan(obs["tau21"][0])  # τ1 = 0: the ratio is undefined


def test_tau_on_a_seeded_sample_of_jets(tmp_path: Path) -> None:
    """``nsubjettiness_jets`` below the audit's jets: τ is computed for about that many jets,
    the same ones whatever the chunking, and equal there to τ computed for every jet."""
    config = write_audit(tmp_path, deep_set_model(50, phi=6), DEEP_SET_INPUTS,
                         {"latent": {"nsubjettiness_jets": 150}}, score=1)
    reports = {}
    for step in (97, 400):
        path = tmp_path / f"step_{step}.toml"
        path.write_text(config.read_text().replace("step_size = 500", f"step_size = {step}"))
        reports[step] = hepaudit.audit(path, out=None, progress=False).explainers["latent"]
    small, large = reports[97].fields, reports[400].fields
    n_jets = small["jets"]
    assert small["nsubjettiness_jets"] == large["nsubjettiness_jets"]
    assert 100 <= small["nsubjettiness_jets"] <= 200 < n_jets  # about 150 of the audit's jets
    for c in range(len(small["components"])):
        for name in ("tau1", "tau21", "mass"):
            assert small["components"][c]["pearson"][name] == pytest.approx(
                large["components"][c]["pearson"][name], rel=1e-9, abs=1e-12)
    from hepaudit.sampling import seeded_keys, to_unit

    with uproot.open(tmp_path / "jets.root") as f:
        arr = f["jets"].arrays(["part_px", "part_py", "part_pz", "part_energy"])
    parts = momenta_from_cartesian(arr.part_px, arr.part_py, arr.part_pz, arr.part_energy)
    chosen = to_unit(seeded_keys(np.arange(len(arr)), 0)) < 150 / len(arr)
    some, every = jet_observables(parts, tau_jets=chosen), jet_observables(parts)
    assert int(chosen.sum()) == small["nsubjettiness_jets"]
    assert np.isnan(some["tau1"][~chosen]).all()
    np.testing.assert_allclose(some["tau2"][chosen], every["tau2"][chosen], rtol=1e-12)
    np.testing.assert_array_equal(some["mass"], every["mass"])


def test_tau_on_threads_equals_one_pass() -> None:
    """τ split across threads by runs of jets: bit for bit the numbers of one pass."""
    from hepaudit.data.observables import THREAD_JETS, _Constituents, _nsubjettiness_flat, _on_threads

    rng = np.random.default_rng(5)
    n_jets = 3 * THREAD_JETS + 17
    counts = rng.integers(0, 40, n_jets)  # some jets without constituents
    jet = np.repeat(np.arange(n_jets), counts)
    parts = _Constituents(rng.exponential(20, len(jet)), rng.normal(0, 0.3, len(jet)), rng.normal(0, 0.3, len(jet)),
                          jet, n_jets)
    one = _nsubjettiness_flat(parts, 3, 0.8, 10)
    for threads in (2, 3):
        np.testing.assert_array_equal(_on_threads(parts, 3, 0.8, 10, threads=threads), one)
    assert np.isfinite(one).all() and (one[counts >= 4] > 0).all()


def test_jet_momentum_is_summed_once_and_shared_by_latent_and_ood(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latent's mass and pT and the OOD explainers' pT and mass bins come from one sum of the
    constituents per chunk, the one the input builder made: the same numbers as summing the
    constituents again."""
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.data.builtin_recipes import BUILTIN_RECIPES
    from hepaudit.data.observables import constituents_from_arrays
    from hepaudit.explainers.ood.common import jet_kinematics

    examples = Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.chdir(examples)
    cfg = load_config(examples / "audit_topodnn.toml")
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, BUILTIN_RECIPES, tagger.info.inputs)
    with uproot.open(cfg.data.files[0]) as f:
        arrays = f[cfg.data.tree].arrays(builder.branches, entry_stop=300)
    inputs = builder.build(arrays)
    out = tagger.run(inputs)
    context = AuditContext(tagger=tagger, builder=builder, features=builder.features, groups={})
    chunk = Chunk(np.arange(300), inputs, out.score, out.logit, context, arrays=arrays)
    jet = chunk.jet_momentum()
    assert jet is not None and chunk.jet_momentum() is jet  # once per chunk
    parts = constituents_from_arrays(arrays, cfg.inputs[0].momentum)
    shared = jet_observables(parts, tau=False, jet=jet)
    again = jet_observables(parts, tau=False)
    for name in ("mass", "pt", "n_constituents"):
        np.testing.assert_allclose(shared[name], again[name], rtol=1e-12, err_msg=name)
    kinematics = jet_kinematics(chunk)
    assert kinematics is not None
    np.testing.assert_allclose(kinematics[0], again["pt"], rtol=1e-12)
    np.testing.assert_allclose(kinematics[1], again["mass"], rtol=1e-9)
