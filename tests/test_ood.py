"""ood_ae and ood_ensemble: real ROOT files, real ONNX models, real audits, independent checks.

Data: flat jet features f0..f7 that lie close to a 3-dimensional plane (x = u A + noise),
so that a PCA autoencoder has structure to learn and a shift off the plane is detectable.
Every number is checked against a direct numpy computation from the ROOT file and the
definitions in docs/methods.md and the explainers' docstrings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from builders import (  # noqa: E402
    OPSET,
    dense_weights,
    make_jets,
    mann_whitney_auc,
    mlp_forward,
    mlp_model,
    save,
    toml_dumps,
    write_jets,
)
from conftest import run_cli  # noqa: E402

import hepaudit  # noqa: E402
import hepaudit.errors  # noqa: E402
from hepaudit.explainers.ood.common import binned_fraction, entry_keys, held_out  # noqa: E402

K = 8
FEATURES = [f"f{k}" for k in range(K)]
MIXING = np.random.default_rng(42).normal(0, 1, (3, K))


def plane_jets(
    n: int,
    seed: int,
    scale: dict[int, float] | None = None,
    contaminate: tuple[float, int, float] | None = None,
) -> dict[str, np.ndarray]:
    """x = u A + 0.1 noise; ``scale`` multiplies features; ``contaminate`` = (fraction, feature,
    offset) adds an offset to one feature for that fraction of jets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 3)) @ MIXING + 0.1 * rng.normal(0, 1, (n, K))
    for k, s in (scale or {}).items():
        x[:, k] *= s
    if contaminate is not None:
        fraction, k, offset = contaminate
        x[rng.random(n) < fraction, k] += offset
    labels = (rng.random(n) < 0.5).astype(np.int32)
    out: dict[str, np.ndarray] = {f: x[:, i].astype(np.float32) for i, f in enumerate(FEATURES)}
    out["is_signal"] = labels
    return out


def features_of(path: Path) -> np.ndarray:
    with uproot.open(path) as f:
        arrays = f["jets"].arrays(FEATURES, library="np")
    return np.stack([arrays[b] for b in FEATURES], axis=1).astype(np.float32)


def config(
    folder: Path,
    data: str,
    reference: str | None,
    explainers: dict,
    model: str = "m.onnx",
    gates: dict | None = None,
    model_options: dict | None = None,
) -> Path:
    doc: dict = {
        "model": {"path": model, **(model_options or {})},
        "data": {"files": [data], "label": "is_signal", "step_size": 1500},
        "inputs": [{"name": "x", "kind": "jet", "branches": FEATURES}],
        "execution": {"progress": False},
    }
    if reference is not None:
        doc["reference"] = {"files": [reference], "label": "is_signal"}
    text = toml_dumps(doc)
    for name, table in explainers.items():
        text += f"\n[explainers.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    if gates:
        text += "\n[gates]\n" + "".join(f'"{k}" = {v}\n' for k, v in gates.items())
    path = folder / f"audit_{abs(hash(text)) % 10**8}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ood")
    save(mlp_model(dense_weights([K, 16, 1], seed=1)), d / "m.onnx")
    for s in (2, 3, 4):
        save(mlp_model(dense_weights([K, 16, 1], seed=s), "matmul"), d / f"m{s}.onnx")
    save(mlp_model(dense_weights([K, 16, 1], seed=1), "matmul"), d / "m_copy.onnx")
    write_jets(d / "ref.root", plane_jets(12000, seed=10))
    write_jets(d / "same.root", plane_jets(6000, seed=11))
    write_jets(d / "scaled.root", plane_jets(3000, seed=12, scale={2: 3.0}))
    write_jets(d / "contaminated.root", plane_jets(3000, seed=13, contaminate=(0.3, 5, 4.0)))
    return d


def per_jet(out: Path) -> dict[str, np.ndarray]:
    with uproot.open(out / "per_jet.root") as f:
        return f["hepaudit"].arrays(library="np")


def test_in_distribution_flagged_fraction_is_the_nominal_quantile(folder: Path) -> None:
    cfg = config(folder, "same.root", "ref.root", {"ood_ae": {}})
    report = hepaudit.audit(cfg, out=folder / "out_same", force=True)
    res = report.explainers["ood_ae"]
    assert res.status == "ok", res.error
    f = res.fields
    q = 0.95
    # binomial uncertainty of the audited fraction plus that of the threshold (a quantile of
    # reference_threshold_jets jets), in quadrature
    for fraction, n in (
        (f["flagged_fraction"], f["audited_jets"]),
        (f["reference_flagged_fraction"], f["reference_held_out_jets"]),
    ):
        sigma = np.sqrt(q * (1 - q) / n + q * (1 - q) / f["reference_threshold_jets"])
        assert abs(fraction - (1 - q)) < 3 * sigma, (fraction, sigma)
    n1, n0 = f["audited_jets"], f["reference_held_out_jets"]
    assert abs(f["auroc"] - 0.5) < 3 * np.sqrt((n0 + n1 + 1) / (12 * n0 * n1))
    assert f["fitted"]["method"] == "pca" and f["fitted"]["explained_variance"] >= 0.99
    # per jet: the flag is score > threshold and the flagged fraction is their mean
    cols = per_jet(folder / "out_same")
    assert np.array_equal(cols["ood_ae_flag"], cols["ood_ae_score"] > np.float32(f["threshold"]))
    assert abs(cols["ood_ae_flag"].mean() - f["flagged_fraction"]) < 1e-12
    assert np.array_equal(cols["ood_flag"], cols["ood_ae_flag"])
    assert (folder / "out_same" / "ood_autoencoder.onnx").is_file()


# a 30 % contamination can at most reach AUROC 0.5 + 0.3 / 2 = 0.65
@pytest.mark.parametrize(
    "sample, shifted, min_auroc", [("scaled.root", "f2", 0.75), ("contaminated.root", "f5", 0.6)]
)
def test_shift_raises_auroc_and_names_the_driver(
    folder: Path, sample: str, shifted: str, min_auroc: float
) -> None:
    cfg = config(folder, sample, "ref.root", {"ood_ae": {}})
    f = hepaudit.audit(cfg, out=None).explainers["ood_ae"].fields
    assert f["auroc"] > min_auroc
    assert f["flagged_fraction"] > 0.2 > 0.1 > f["reference_flagged_fraction"]
    assert f["drivers"][0]["feature"] == shifted
    assert f["drivers"][0]["excess"] > 2 * max(d["excess"] for d in f["drivers"][1:])


def linear_autoencoder(path: Path, projection: np.ndarray) -> Path:
    """r(x) = x P, an autoencoder given by the user as ONNX (input "inp", output "rec")."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["inp", "P"], ["rec"])],
        "ae",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info("rec", TensorProto.FLOAT, ["N", K])],
        [numpy_helper.from_array(projection.astype(np.float32), "P")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return save(model, path)


def test_user_autoencoder_scores_threshold_and_auroc(folder: Path) -> None:
    basis, _ = np.linalg.qr(MIXING.T)  # (K, 3): the data's plane
    projection = basis @ basis.T
    (folder / "models").mkdir(exist_ok=True)
    linear_autoencoder(folder / "models" / "ae.onnx", projection)
    cfg = config(
        folder,
        "scaled.root",
        "ref.root",
        {"ood_ae": {"autoencoder": '"models/ae.onnx"', "standardise": "false", "quantile": 0.9}},
    )
    report = hepaudit.audit(cfg, out=folder / "out_user", force=True)
    f = report.explainers["ood_ae"].fields
    assert f["autoencoder"] == str(folder / "models" / "ae.onnx") and f["fitted"] is None

    def scores(path: Path) -> np.ndarray:
        x = features_of(path).astype(np.float64)
        return np.mean((x - x @ projection) ** 2, axis=1)

    audited = scores(folder / "scaled.root")
    np.testing.assert_allclose(per_jet(folder / "out_user")["ood_ae_score"], audited, rtol=2e-4, atol=1e-6)
    ref = scores(folder / "ref.root")
    half = held_out(entry_keys(np.arange(len(ref)), 0))
    threshold = np.quantile(ref[~half], 0.9)
    assert f["threshold"] == pytest.approx(threshold, rel=2e-4)
    assert f["reference_flagged_fraction"] == pytest.approx(np.mean(ref[half] > threshold), abs=2e-3)
    assert f["flagged_fraction"] == pytest.approx(np.mean(audited > threshold), abs=2e-3)
    auc = mann_whitney_auc(
        np.concatenate([ref[half], audited]), np.concatenate([np.zeros(half.sum()), np.ones(len(audited))])
    )
    assert f["auroc"] == pytest.approx(auc, abs=2e-3)
    # per-feature errors: f2 (scaled) has the largest excess, computed directly
    x = features_of(folder / "scaled.root").astype(np.float64)
    xr = features_of(folder / "ref.root").astype(np.float64)[half]
    excess = np.mean((x - x @ projection) ** 2, axis=0) - np.mean((xr - xr @ projection) ** 2, axis=0)
    got = {d["feature"]: d["excess"] for d in f["drivers"]}
    np.testing.assert_allclose([got[n] for n in FEATURES], excess, rtol=1e-3, atol=1e-6)


def test_fitted_autoencoder_is_saved_and_reusable(folder: Path) -> None:
    saved = folder / "out_same" / "ood_autoencoder.onnx"
    if not saved.exists():
        hepaudit.audit(
            config(folder, "same.root", "ref.root", {"ood_ae": {}}), out=folder / "out_same", force=True
        )
    session = ort.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    x = features_of(folder / "same.root")[:500]
    r = session.run(None, {"x": x})[0]
    rr = session.run(None, {"x": r})[0]
    np.testing.assert_allclose(rr, r, atol=1e-4)  # PCA reconstruction is a projection: idempotent
    first = per_jet(folder / "out_same")["ood_ae_score"]
    cfg = config(folder, "same.root", "ref.root", {"ood_ae": {"autoencoder": f'"{saved}"'}})
    hepaudit.audit(cfg, out=folder / "out_reuse", force=True)
    np.testing.assert_allclose(per_jet(folder / "out_reuse")["ood_ae_score"], first, rtol=1e-5, atol=1e-7)


def test_without_reference_only_scores_are_reported(folder: Path) -> None:
    cfg = config(folder, "scaled.root", None, {"ood_ae": {}})
    res = hepaudit.audit(cfg, out=None).explainers["ood_ae"]
    f = res.fields
    assert f["auroc"] is None and f["flagged_fraction"] is None and f["drivers"] is None
    assert "no reference" in f["note"] and any("no reference" in w for w in res.warnings)
    assert f["reference"].startswith("audited data")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    out = np.zeros_like(p)
    inside = (p > 0) & (p < 1)
    out[inside] = -(p[inside] * np.log(p[inside]) + (1 - p[inside]) * np.log(1 - p[inside]))
    return out


@pytest.mark.parametrize("score", ["std", "mutual_information"])
def test_ensemble_std_and_mutual_information_match_numpy(folder: Path, score: str) -> None:
    cfg = config(
        folder,
        "scaled.root",
        "ref.root",
        {
            "ood_ensemble": {
                "members": '["m2.onnx", "m3.onnx", "m4.onnx"]',
                "include_audited": "true",
                "score": f'"{score}"',
            }
        },
    )
    out = folder / f"out_ens_{score}"
    f = hepaudit.audit(cfg, out=out, force=True).explainers["ood_ensemble"].fields
    weights = [dense_weights([K, 16, 1], seed=s) for s in (2, 3, 4, 1)]

    def members(path: Path) -> tuple[np.ndarray, np.ndarray]:
        x = features_of(path)
        p = np.stack([mlp_forward(w, x)[:, 0] for w in weights], axis=1)
        std = np.sqrt(np.mean((p - p.mean(axis=1, keepdims=True)) ** 2, axis=1))
        mi = binary_entropy(p.mean(axis=1)) - np.mean([binary_entropy(p[:, m]) for m in range(4)], axis=0)
        return std, mi

    std, mi = members(folder / "scaled.root")
    cols = per_jet(out)
    np.testing.assert_allclose(cols["ood_ensemble_std"], std, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cols["ood_ensemble_mi"], mi, rtol=1e-3, atol=1e-6)
    chosen = std if score == "std" else mi
    rstd, rmi = members(folder / "ref.root")
    ref = rstd if score == "std" else rmi
    half = held_out(entry_keys(np.arange(len(ref)), 0))
    threshold = np.quantile(ref[~half], 0.95)
    assert f["threshold"] == pytest.approx(threshold, rel=1e-3, abs=1e-7)
    assert f["flagged_fraction"] == pytest.approx(np.mean(chosen > threshold), abs=2e-3)
    assert f["reference_flagged_fraction"] == pytest.approx(np.mean(ref[half] > threshold), abs=2e-3)
    assert abs(np.mean(cols["ood_ensemble_flag"]) - f["flagged_fraction"]) < 1e-12
    # the figure's histogram, kept in report.json: every audited and held-out jet in its bin
    hist = f["score_histogram"]
    edges = np.asarray(hist["edges"])
    audited_counts = np.histogram(cols[f"ood_ensemble_{'std' if score == 'std' else 'mi'}"], edges)[0]
    assert sum(hist["audited"]) == len(chosen) and sum(hist["reference"]) == int(half.sum())
    assert np.abs(audited_counts - np.asarray(hist["audited"])).max() <= 1  # float32 per_jet at a bin edge
    assert edges[0] == pytest.approx(min(chosen.min(), ref[half].min()), rel=1e-4, abs=1e-7)
    assert f["members"][-1] == "(the audited model)" and f["score"] == score
    # Spearman's rho with tied values ranked at their mean position, as scipy ranks them
    assert f["std_mi_spearman"] == pytest.approx(stats.spearmanr(std, mi)[0], abs=1e-4)


def test_blocks_on_several_threads_give_the_one_thread_results(folder: Path) -> None:
    """Members and autoencoder run 400-row blocks on 1 and on 3 threads: the same per-jet
    columns and report numbers, bit for bit, and the members' std still the direct one."""
    explainers = {"ood_ensemble": {"members": '["m2.onnx", "m3.onnx", "m4.onnx"]'}, "ood_ae": {}}
    runs = {}
    for threads in (1, 3):
        cfg = config(folder, "contaminated.root", "ref.root", explainers,
                     model_options={"threads": threads, "batch_size": 400})
        out = folder / f"out_threads_{threads}"
        report = hepaudit.audit(cfg, out=out, force=True)
        runs[threads] = (report.explainers, per_jet(out))
    (one, cols1), (three, cols3) = runs[1], runs[3]
    for column in ("ood_ensemble_std", "ood_ensemble_mi", "ood_ae_score", "ood_flag"):
        np.testing.assert_array_equal(cols1[column], cols3[column])
    for name in ("ood_ensemble", "ood_ae"):
        for key in ("threshold", "flagged_fraction", "reference_flagged_fraction", "auroc"):
            assert one[name].fields[key] == three[name].fields[key], (name, key)
    assert one["ood_ae"].fields["drivers"] == three["ood_ae"].fields["drivers"]
    assert three["ood_ae"].fields["drivers"][0]["feature"] == "f5"  # the contaminated feature
    x = features_of(folder / "contaminated.root")
    p = np.stack([mlp_forward(dense_weights([K, 16, 1], seed=s), x)[:, 0] for s in (2, 3, 4)], axis=1)
    np.testing.assert_allclose(cols3["ood_ensemble_std"], p.std(axis=1), rtol=1e-4, atol=1e-6)


def test_members_that_cannot_share_a_graph_run_one_by_one(folder: Path) -> None:
    """A member on another opset cannot join the others' graph (hepaudit.model.side_by_side):
    the members then run one by one, with the same std and mutual information."""
    newer = onnx.load(str(folder / "m4.onnx"))
    newer.opset_import[0].version = 17
    save(newer, folder / "m4_opset17.onnx")
    cols = {}
    for last in ("m4", "m4_opset17"):
        cfg = config(folder, "scaled.root", "ref.root",
                     {"ood_ensemble": {"members": f'["m2.onnx", "m3.onnx", "{last}.onnx"]'}})
        hepaudit.audit(cfg, out=folder / f"out_fallback_{last}", force=True)
        cols[last] = per_jet(folder / f"out_fallback_{last}")
    for column in ("ood_ensemble_std", "ood_ensemble_mi"):
        np.testing.assert_allclose(cols["m4_opset17"][column], cols["m4"][column], rtol=1e-6, atol=1e-9)
    x = features_of(folder / "scaled.root")
    p = np.stack([mlp_forward(dense_weights([K, 16, 1], seed=s), x)[:, 0] for s in (2, 3, 4)], axis=1)
    np.testing.assert_allclose(cols["m4_opset17"]["ood_ensemble_std"], p.std(axis=1), rtol=1e-4, atol=1e-6)


def test_identical_members_do_not_disagree(folder: Path) -> None:
    cfg = config(
        folder,
        "scaled.root",
        "ref.root",
        {"ood_ensemble": {"members": '["m_copy.onnx"]', "include_audited": "true"}},
    )
    out = folder / "out_identical"
    f = hepaudit.audit(cfg, out=out, force=True).explainers["ood_ensemble"].fields
    cols = per_jet(out)
    assert np.max(cols["ood_ensemble_std"]) < 1e-7 and np.max(cols["ood_ensemble_mi"]) < 1e-7
    assert f["mean_std"] < 1e-7 and f["flagged_fraction"] == 0.0
    assert f["std_mi_spearman"] is None  # every jet tied at 0: no ranking to correlate


def test_ood_flag_is_the_or_of_both_explainers(folder: Path) -> None:
    cfg = config(
        folder,
        "contaminated.root",
        "ref.root",
        {"ood_ae": {}, "ood_ensemble": {"members": '["m2.onnx", "m3.onnx"]'}},
    )
    out = folder / "out_both"
    hepaudit.audit(cfg, out=out, force=True)
    cols = per_jet(out)
    assert np.array_equal(cols["ood_flag"], cols["ood_ae_flag"] | cols["ood_ensemble_flag"])
    assert cols["ood_flag"].sum() > max(cols["ood_ae_flag"].sum(), cols["ood_ensemble_flag"].sum())


CONSTITUENTS = """[[inputs]]
name = "x"
kind = "constituents"
momentum = { px = "part_px", py = "part_py", pz = "part_pz", energy = "part_energy" }
features = ["pt", "eta", "phi"]
max_particles = 30
preprocess = "topodnn"
"""


def constituents_config(folder: Path, data: str = "", extra: str = "") -> Path:
    """audit.toml for m.onnx on jets.root with TopoDNN constituents; ``data`` goes into [data]."""
    path = folder / "audit.toml"
    path.write_text(f'[model]\npath = "m.onnx"\n[data]\nfiles = ["jets.root"]\n{data}{CONSTITUENTS}{extra}')
    return path


def summed_pt_and_mass(arrays: object) -> tuple[np.ndarray, np.ndarray]:
    """Jet pT and mass from each jet's constituents, summed one jet at a time in Python."""
    px, py, pz, en = (np.array([np.sum(v) for v in arrays[b].tolist()])  # type: ignore[index]
                      for b in ("part_px", "part_py", "part_pz", "part_energy"))
    return np.hypot(px, py), np.sqrt(np.maximum(en**2 - px**2 - py**2 - pz**2, 0))


def test_flagged_fraction_vs_jet_pt_from_constituents(tmp_path: Path) -> None:
    save(mlp_model(dense_weights([90, 16, 1], seed=1)), tmp_path / "m.onnx")
    write_jets(tmp_path / "ref.root", make_jets(1500, seed=3))
    write_jets(tmp_path / "jets.root", make_jets(800, seed=4))
    constituents_config(tmp_path, 'label = "is_signal"\n[reference]\nfiles = ["ref.root"]\n',
                        "[execution]\nprogress = false\n[explainers.ood_ae]\nvariance = 0.9\n")
    f = hepaudit.audit(tmp_path / "audit.toml", out=tmp_path / "out").explainers["ood_ae"].fields
    with uproot.open(tmp_path / "jets.root") as fh:
        a = fh["jets"].arrays(["part_px", "part_py", "part_pz", "part_energy"])
    pt, mass = summed_pt_and_mass(a)
    flags = per_jet(tmp_path / "out")["ood_ae_flag"]
    for var, values in (("pt", pt), ("mass", mass)):
        entry = f[f"flagged_vs_{var}"]
        edges = np.array(entry["edges"])
        np.testing.assert_allclose(edges, np.quantile(values, np.linspace(0, 1, 11)), rtol=1e-5)
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            sel = index == b
            assert entry["audited"]["jets"][b] == sel.sum()
            assert entry["audited"]["flagged_fraction"][b] == pytest.approx(flags[sel].mean())
        assert "reference" in entry
    assert {"ood_ae.png"} <= {
        p.name for p in (tmp_path / "out" / "figures").iterdir()
    }


def test_gate_on_flagged_fraction_fails_the_cli(folder: Path) -> None:
    cfg = config(
        folder,
        "contaminated.root",
        "ref.root",
        {"ood_ae": {}},
        gates={"ood_ae.flagged_fraction": "{ max = 0.1 }"},
    )
    result = run_cli("audit", cfg, "--out", folder / "out_gate", "--force", cwd=folder)
    assert result.returncode == 1, result.stderr
    assert "ood_ae.flagged_fraction" in result.stderr + result.stdout


def test_bad_options_are_config_errors(folder: Path) -> None:
    cfg = config(
        folder, "same.root", "ref.root", {"ood_ensemble": {"members": '["m2.onnx", "missing.onnx"]'}}
    )
    with pytest.raises(hepaudit.errors.ConfigError, match="missing.onnx"):
        hepaudit.audit(cfg, out=None)
    cfg = config(folder, "same.root", "ref.root", {"ood_ae": {"quantile": 1.5}})
    with pytest.raises(hepaudit.errors.ConfigError, match="quantile"):
        hepaudit.audit(cfg, out=None)


def test_builder_keeps_the_jet_momentum_of_what_it_built(tmp_path: Path) -> None:
    """OOD's jet pT and mass reuse the builder's constituent sums, for the arrays it built from only."""
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.model.session import Tagger
    from hepaudit.plugins import PluginHost

    save(mlp_model(dense_weights([90, 16, 1], seed=1)), tmp_path / "m.onnx")
    write_jets(tmp_path / "jets.root", make_jets(200, seed=5))
    cfg = load_config(constituents_config(tmp_path))
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, tagger.info.inputs)
    with uproot.open(tmp_path / "jets.root") as fh:
        arrays = fh["jets"].arrays(builder.branches)
    assert builder.jet_momentum(arrays, "x") is None  # not built yet
    builder.build(arrays)
    jet = builder.jet_momentum(arrays, "x")
    assert jet is not None and builder.jet_momentum(arrays[:10], "x") is None  # another object
    pt, mass = jet.pt_and_mass()
    want_pt, want_mass = summed_pt_and_mass(arrays)
    np.testing.assert_allclose(pt, want_pt, rtol=1e-6)
    np.testing.assert_allclose(mass, want_mass, rtol=1e-5, atol=1e-3)
    key = id(arrays)
    del arrays
    assert key not in builder._jets  # dropped with the arrays it was built from


def test_builder_sums_the_jet_momentum_of_arrays_it_did_not_build(tmp_path: Path) -> None:
    """The fallback for a chunk whose jets were dropped: the same sums, from the branches."""
    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.model.session import Tagger
    from hepaudit.plugins import PluginHost

    save(mlp_model(dense_weights([90, 16, 1], seed=1)), tmp_path / "m.onnx")
    write_jets(tmp_path / "jets.root", make_jets(120, seed=6))
    cfg = load_config(constituents_config(tmp_path))
    builder = InputBuilder(cfg.inputs, PluginHost().recipes().recipes, Tagger(cfg.model).info.inputs)
    with uproot.open(tmp_path / "jets.root") as fh:
        arrays = fh["jets"].arrays(builder.branches)
    pt, mass = builder.summed_jet_momentum(arrays[5:], "x").pt_and_mass()
    want_pt, want_mass = summed_pt_and_mass(arrays[5:])
    np.testing.assert_allclose(pt, want_pt, rtol=1e-6)
    np.testing.assert_allclose(mass, want_mass, rtol=1e-5, atol=1e-3)


def test_binned_fraction_leaves_out_values_beyond_the_edges() -> None:
    """Reference jets outside the audited range are not piled into the outermost bins."""
    edges = np.array([1000.0, 1100.0, 1200.0])
    values = np.array([600.0, 650.0, 1050.0, 1150.0, 1160.0, 1300.0, np.nan])
    flags = np.array([True, True, False, True, False, True, True])
    got = binned_fraction(values, flags, edges)
    assert got["jets"] == [1, 2]
    assert got["flagged_fraction"] == [0.0, 0.5]
