"""The per-jet attribution container: its naming rule, its round trip through a real ROOT
file, and a seeded sample that does not care how the jets were split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from hepaudit.explanation import Explanation, ExplanationSample


def make(n: int = 40, seed: int = 0) -> Explanation:
    rng = np.random.default_rng(seed)
    return Explanation(rng.normal(size=(n, 3)), ["pt_0", "eta_0", "phi_0"], np.arange(100, 100 + n),
                       base_values=rng.normal(size=n), data=rng.normal(size=(n, 3)),
                       std=rng.uniform(size=(n, 3)), labels=rng.integers(0, 2, n), scores=rng.uniform(size=n))


def test_branches_follow_the_naming_rule() -> None:
    e = make()
    main = e.branches("lrp")
    assert sorted(main) == sorted(["lrp_base_value", "lrp_pt_0", "lrp_eta_0", "lrp_phi_0", "lrp_std_pt_0",
                                   "lrp_std_eta_0", "lrp_std_phi_0"])
    own = e.branches("shap", own_tree=True)
    assert {"entry", "label", "score", "base_value", "shap_input_eta_0", "shap_std_phi_0"} <= set(own)
    np.testing.assert_array_equal(own["shap_eta_0"], e.values[:, 1])


def test_round_trip_through_a_root_file(tmp_path: Path) -> None:
    e = make()
    with uproot.recreate(tmp_path / "t.root") as f:
        columns = e.branches("shap", own_tree=True)
        f.mktree("shap", {k: v.dtype for k, v in columns.items()})
        f["shap"].extend(columns)
    with uproot.open(tmp_path / "t.root") as f:
        back = Explanation.from_branches(f["shap"].arrays(library="np"), "shap", e.feature_names)
    for name in ("values", "entries", "base_values", "data", "std", "labels", "scores"):
        np.testing.assert_array_equal(getattr(back, name), getattr(e, name), err_msg=name)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="values: expected shape"):
        Explanation(np.zeros((4, 2)), ["a", "b", "c"], np.arange(4))
    with pytest.raises(ValueError, match="entries: expected 4 rows"):
        Explanation(np.zeros((4, 3)), ["a", "b", "c"], np.arange(5))


@pytest.mark.parametrize("cuts", [[40], [7, 33], [1, 13, 26, 40], [20, 20, 40]])
def test_sample_is_the_same_however_the_jets_are_split(cuts: list[int]) -> None:
    """Bottom-k on a hash of the entry: the union of partial samples, cut again, is the sample
    of all jets; in entry order whatever the merge order."""
    e = make(40)
    whole = ExplanationSample(10, salt=7)
    whole.add(e)
    parts, start = [], 0
    for stop in cuts:
        part = ExplanationSample(10, salt=7)
        part.add(e.take(slice(start, stop)))
        parts.append(part)
        start = stop
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merged(part)
    right = parts[-1]
    for part in reversed(parts[:-1]):
        right = part.merged(right)
    for sample in (merged, right):
        assert sample.rows is not None and whole.rows is not None
        np.testing.assert_array_equal(sample.rows.entries, whole.rows.entries)
        np.testing.assert_array_equal(sample.rows.values, whole.rows.values)
    assert len(whole.rows.entries) == 10 and np.all(np.diff(whole.rows.entries) > 0)


@pytest.mark.parametrize("cuts", [[40], [7, 33], [1, 13, 26, 40], [3, 40]])
def test_only_the_wanted_rows_make_the_same_sample(cuts: list[int]) -> None:
    """Adding only the rows ``wanted`` names, chunk after chunk, gives the sample that adding every
    row gives; once the sample is full, few rows of a chunk are wanted."""
    e = make(40)
    every, wanted = ExplanationSample(10, salt=3), ExplanationSample(10, salt=3)
    start, counts = 0, []
    for stop in cuts:
        chunk = e.take(slice(start, stop))
        every.add(chunk)
        rows = wanted.wanted(chunk.entries)
        counts.append(int(rows.sum()))
        wanted.add(chunk.take(rows))
        start = stop
    assert every.rows is not None and wanted.rows is not None
    for name in ("entries", "values", "data", "labels"):
        np.testing.assert_array_equal(getattr(wanted.rows, name), getattr(every.rows, name), err_msg=name)
    assert all(c <= 10 for c in counts)  # never more rows than the sample holds
    assert ExplanationSample(0, salt=3).wanted(e.entries).sum() == 0


def test_numbers_behind_the_lrp_figures_and_shap_inputs_match_a_recomputation(tmp_path: Path) -> None:
    """LRP's profiles and signed class means in report.json, recomputed with numpy from the per-jet
    relevance in per_jet.root and the inputs in the ROOT file; SHAP's input columns are the jets' inputs."""
    import hepaudit
    from hepaudit.testing import tiny_audit

    config = tiny_audit(tmp_path, {"lrp": {}, "shap": {"jets": 10, "method": "permutation", "samples": 32}}, n=300)
    report = hepaudit.audit(config, out=tmp_path / "out")
    with uproot.open(tmp_path / "jets.root") as f:
        data = f["jets"].arrays(library="np")
    with uproot.open(tmp_path / "out" / "per_jet.root") as f:
        per_jet = f["hepaudit"].arrays(library="np")
        shap_tree = f["shap"].arrays(library="np")
    labels, weights = data["is_signal"], data["weight"]
    fields = report.explainers["lrp"].fields
    for name, means in fields["mean_signed_relevance"].items():
        r = per_jet[f"lrp_{name}"].astype(np.float64)
        for cls, key in ((1, "signal"), (0, "background")):
            sel = labels == cls
            assert means[key] == pytest.approx(np.average(r[sel], weights=weights[sel]), rel=1e-5, abs=1e-7)
    for name, profile in fields["profiles"].items():
        edges = np.array(profile["bin_edges"])
        x = np.clip(data[name].astype(np.float64), edges[0], edges[-1])  # outliers in the end bins
        r = per_jet[f"lrp_{name}"].astype(np.float64)
        for cls, key in ((1, "signal"), (0, "background")):
            sel = labels == cls
            counts = np.histogram(x[sel], edges)[0]
            sums = np.histogram(x[sel], edges, weights=r[sel])[0]
            assert profile[key]["jets"] == counts.tolist()
            got = np.array([np.nan if v is None else v for v in profile[key]["mean_relevance"]], float)
            want = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    rows = shap_tree["entry"]
    for k in range(4):
        np.testing.assert_array_equal(shap_tree[f"shap_input_f{k}"], data[f"f{k}"][rows].astype(np.float64))


@pytest.mark.parametrize("layout", ["flat", "particles", "channels"])
def test_per_particle_inputs_become_one_array_branch(layout: str) -> None:
    """A constituents input's attributions go to ``{prefix}_{input}`` of shape (particles,
    features), particle-major whatever the model's layout; jet-level inputs keep a branch per
    feature (issue 23)."""
    from hepaudit.config import InputConfig
    from hepaudit.data.builders import InputBuilder
    from hepaudit.model.graph import TensorInfo
    from hepaudit.options import parse_table

    p, f = 4, 3
    shape = {"flat": ("N", p * f), "particles": ("N", p, f), "channels": ("N", f, p)}[layout]
    tables = [{"name": "pf", "kind": "constituents", "features": ["pt", "eta", "phi"], "max_particles": p,
               "layout": layout, "momentum": {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "m"}},
              {"name": "glob", "kind": "jet", "branches": ["jet_mass", "jet_pt"]}]
    inputs = tuple(parse_table(InputConfig, t, f"inputs[{i}]") for i, t in enumerate(tables))
    builder = InputBuilder(inputs, {}, (TensorInfo("pf", shape, "float32"), TensorInfo("glob", ("N", 2), "float32")))
    grids = builder.particle_grids()
    assert list(grids) == ["pf"] and grids["pf"].features == ["pf.pt", "pf.eta", "pf.phi"]
    n = 5
    values = np.random.default_rng(1).normal(size=(n, len(builder.features)))
    e = Explanation(values, builder.features, np.arange(n), std=np.abs(values))
    out = e.branches("lrp", grids=grids)
    assert out["lrp_pf"].shape == (n, p, f) and out["lrp_std_pf"].shape == (n, p, f)
    for k, name in enumerate(builder.features):  # every feature exactly once, in its cell
        if name.startswith("pf."):
            base, particle = name[3:].rsplit("_", 1)
            np.testing.assert_array_equal(out["lrp_pf"][:, int(particle), ["pt", "eta", "phi"].index(base)],
                                          values[:, k])
            assert f"lrp_{name}" not in out
        else:
            np.testing.assert_array_equal(out[f"lrp_{name}"], values[:, k])
