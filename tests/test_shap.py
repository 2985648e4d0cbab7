"""The shap explainer against Shapley values computed from their definition.

Every check runs a real audit (ROOT files written with uproot, ONNX graphs built with
onnx.helper, run by onnxruntime) and compares with an independent computation: a brute
force over permutations with a numpy forward of the same network, the closed form for
linear models, and the Shapley axioms (symmetry, dummy, linearity) on constructed models.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from math import factorial
from pathlib import Path

import numpy as np
import onnx
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import (  # noqa: E402
    OPSET,
    dense_weights,
    make_flat_jets,
    mlp_forward,
    mlp_model,
    save,
    toml_dumps,
    write_jets,
)

import hepaudit  # noqa: E402
from hepaudit.explainers.shap.background import Reservoir, entry_keys  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

# -- helpers ---------------------------------------------------------------------------------------

def features(m: int) -> list[str]:
    return [f"f{k}" for k in range(m)]


def write_data(folder: Path, n: int, m: int, seed: int = 4, tie: tuple[int, int] | None = None) -> dict:
    jets = make_flat_jets(n, m, seed=seed)
    if tie is not None:  # make two features identical in every jet (for the symmetry axiom)
        jets[f"f{tie[1]}"] = np.array(jets[f"f{tie[0]}"])
    write_jets(folder / "jets.root", jets)
    return jets


def config(folder: Path, m: int, shap: dict, model: str = "m.onnx", step: int = 70, seed: int = 0,
           extra: dict | None = None, threads: int = 0) -> Path:
    doc = {
        "model": {"path": model, "threads": threads},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": step},
        "inputs": [{"name": "x", "kind": "jet", "branches": features(m)}],
        "execution": {"seed": seed, "progress": False},
        "explainers": {"shap": shap, **(extra or {})},
    }
    path = folder / f"audit_{abs(hash(json.dumps(shap, sort_keys=True))) % 10**8}_{model}_{step}_{seed}_{threads}.toml"
    path.write_text(toml_dumps(doc))
    return path


def run(folder: Path, m: int, shap: dict, **kw: object) -> tuple[dict, object]:
    report = hepaudit.audit(config(folder, m, shap, **kw), out=None, progress=False)
    result = report.explainers["shap"]
    assert result.status == "ok", result.error
    return result.trees["shap"], result


def feature_matrix(jets: dict, m: int) -> np.ndarray:
    return np.stack([np.asarray(jets[f"f{k}"], np.float32) for k in range(m)], axis=1).astype(np.float64)


def brute_force_shapley(f, x: np.ndarray, background: np.ndarray, players: list[list[int]]) -> np.ndarray:
    """φ from the definition: the mean over all orderings of the players of the marginal
    contribution v(pre ∪ {i}) − v(pre), v(S) = mean_b f(x_S, b_~S)."""
    m = len(players)

    def v(coalition: frozenset) -> float:
        z = background.copy()
        for p in coalition:
            z[:, players[p]] = x[players[p]]
        return float(np.mean(f(z)))

    cache: dict[frozenset, float] = {}
    phi = np.zeros(m)
    for order in itertools.permutations(range(m)):
        before: frozenset = frozenset()
        for p in order:
            after = before | {p}
            for s in (before, after):
                if s not in cache:
                    cache[s] = v(s)
            phi[p] += cache[after] - cache[before]
            before = after
    return phi / factorial(m)


def brute_force_subsets(f, x: np.ndarray, background: np.ndarray, players: list[list[int]]) -> np.ndarray:
    """φ_i = Σ_{S ⊆ N\\i} |S|!(M−|S|−1)!/M! (v(S∪i) − v(S)), written out over subsets."""
    m = len(players)

    def v(coalition: tuple) -> float:
        z = background.copy()
        for p in coalition:
            z[:, players[p]] = x[players[p]]
        return float(np.mean(f(z)))

    phi = np.zeros(m)
    for i in range(m):
        others = [p for p in range(m) if p != i]
        for size in range(m):
            w = factorial(size) * factorial(m - size - 1) / factorial(m)
            for s in itertools.combinations(others, size):
                phi[i] += w * (v(s + (i,)) - v(s))
    return phi


def shap_matrix(tree: dict, names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(tree[f"shap_{n}"]) for n in names], axis=1)


def linear_model(w: np.ndarray, b: float) -> onnx.ModelProto:
    """score = x·w + b with one Gemm and no activation: the score is not a probability."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["score"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", len(w)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "W"),
         numpy_helper.from_array(np.array([b], np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def sum_model(a: onnx.ModelProto, b: onnx.ModelProto) -> onnx.ModelProto:
    """One ONNX graph computing a(x) + b(x): both networks side by side, then Add."""
    pa = onnx.compose.add_prefix(a, "a_", rename_inputs=False)
    pb = onnx.compose.add_prefix(b, "b_", rename_inputs=False)
    add = helper.make_node("Add", ["a_score", "b_score"], ["score"])
    n_in = a.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        list(pa.graph.node) + list(pb.graph.node) + [add], "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        list(pa.graph.initializer) + list(pb.graph.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def sigmoid_score(weights):
    return lambda z: mlp_forward(weights, z)[:, 0]


# -- exact values against the definition ----------------------------------------------------------

@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_exact_equals_brute_force_with_mean_background(tmp_path: Path, style: str) -> None:
    m = 5
    jets = write_data(tmp_path, 300, m)
    weights = dense_weights([m, 16, 8, 1], seed=11)
    save(mlp_model(weights, style), tmp_path / "m.onnx")
    tree, result = run(tmp_path, m, {"jets": 6})
    x_all = feature_matrix(jets, m)
    mean = x_all.mean(axis=0, keepdims=True)  # x̄ over all audited jets, not over the subsample
    phi = shap_matrix(tree, features(m))
    assert result.fields["exact"] is True and len(tree["entry"]) == 12
    for j, entry in enumerate(tree["entry"]):
        want = brute_force_shapley(sigmoid_score(weights), x_all[entry], mean, [[k] for k in range(m)])
        np.testing.assert_allclose(phi[j], want, atol=1e-6, rtol=0)
        # additivity: φ_0 + Σφ = f(x), f from the independent numpy forward
        fx = mlp_forward(weights, x_all[entry][None])[0, 0]
        assert abs(tree["base_value"][j] + phi[j].sum() - fx) < 1e-6
    assert result.fields["additivity_max_abs_error"] < 1e-6
    assert abs(result.fields["base_value"] - mlp_forward(weights, mean)[0, 0]) < 1e-6


def test_exact_equals_brute_force_with_sampled_background(tmp_path: Path) -> None:
    """background = N with N >= the number of jets: the background is every audited jet."""
    m, n = 4, 50
    jets = write_data(tmp_path, n, m, seed=9)
    weights = dense_weights([m, 12, 1], seed=12)
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    tree, result = run(tmp_path, m, {"jets": 3, "background": 1000})
    x_all = feature_matrix(jets, m)
    phi = shap_matrix(tree, features(m))
    assert result.fields["background_rows"] == n
    for j, entry in enumerate(tree["entry"]):
        want = brute_force_subsets(sigmoid_score(weights), x_all[entry], x_all, [[k] for k in range(m)])
        np.testing.assert_allclose(phi[j], want, atol=1e-6, rtol=0)
        assert abs(tree["base_value"][j] - mlp_forward(weights, x_all)[:, 0].mean()) < 1e-6


def test_groups_exact_against_brute_force_over_groups(tmp_path: Path) -> None:
    m = 5
    jets = write_data(tmp_path, 200, m)
    weights = dense_weights([m, 16, 1], seed=13)
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    groups = {"ab": ["f0", "f1"], "cd": ["f2", "f4"]}
    tree, result = run(tmp_path, m, {"jets": 4, "groups": groups})
    players = [[0, 1], [2, 4], [3]]  # f3 is in no group: it stays a single player
    names = ["ab", "cd", "f3"]
    assert set(result.fields["error_estimate"]) == set(names) and result.fields["players"] == "groups"
    x_all = feature_matrix(jets, m)
    mean = x_all.mean(axis=0, keepdims=True)
    phi = shap_matrix(tree, names)
    for j, entry in enumerate(tree["entry"]):
        want = brute_force_shapley(sigmoid_score(weights), x_all[entry], mean, players)
        np.testing.assert_allclose(phi[j], want, atol=1e-6, rtol=0)
    # the players are what is ranked: mean |φ| per group
    ranked = {s.feature: s.score for s in result.feature_importance}
    np.testing.assert_allclose([ranked[n] for n in names], np.abs(phi).mean(axis=0), rtol=1e-12)


# -- axioms on constructed models -----------------------------------------------------------------

def test_symmetry_and_dummy(tmp_path: Path) -> None:
    m = 4
    write_data(tmp_path, 200, m, tie=(0, 1))  # f1 = f0 in every jet, so x̄_0 = x̄_1 too
    weights = dense_weights([m, 10, 1], seed=14)
    w0 = weights[0][0].copy()
    w0[1] = w0[0]  # the network is symmetric in inputs 0 and 1
    w0[3] = 0.0  # and ignores input 3
    weights[0] = (w0, weights[0][1])
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    tree, _ = run(tmp_path, m, {"jets": 8})
    phi = shap_matrix(tree, features(m))
    np.testing.assert_allclose(phi[:, 0], phi[:, 1], atol=1e-7)
    assert np.abs(phi[:, 3]).max() < 1e-9
    assert np.abs(phi[:, 0]).max() > 1e-3  # not trivially zero


def test_linearity_on_a_sum_model(tmp_path: Path) -> None:
    m = 4
    write_data(tmp_path, 200, m)
    wa, wb = dense_weights([m, 8, 1], seed=15), dense_weights([m, 6, 1], seed=16)
    a, b = mlp_model(wa, "gemm"), mlp_model(wb, "matmul")
    save(a, tmp_path / "a.onnx")
    save(b, tmp_path / "b.onnx")
    save(sum_model(a, b), tmp_path / "sum.onnx")
    trees = {name: run(tmp_path, m, {"jets": 5}, model=f"{name}.onnx")[0] for name in ("a", "b", "sum")}
    np.testing.assert_array_equal(trees["a"]["entry"], trees["sum"]["entry"])
    phis = {name: shap_matrix(t, features(m)) for name, t in trees.items()}
    np.testing.assert_allclose(phis["sum"], phis["a"] + phis["b"], atol=1e-6)
    base = trees["a"]["base_value"] + trees["b"]["base_value"]
    np.testing.assert_allclose(trees["sum"]["base_value"], base, atol=1e-6)
    assert np.abs(phis["a"]).max() > 1e-3 and np.abs(phis["b"]).max() > 1e-3


@pytest.mark.parametrize("options", [{}, {"max_exact": 0, "samples": 30}, {"background": "kmeans:4"},
                                     {"max_exact": 0, "method": "permutation", "samples": 20}])
def test_linear_model_closed_form(tmp_path: Path, options: dict) -> None:
    """f(x) = w·x + b with the mean background: φ_k = w_k (x_k − x̄_k) exactly. Kernel SHAP
    and permutation sampling are exact too on a linear game, whatever the budget; the k-means
    centres weighted by cluster size average to x̄ (the pool holds every jet here)."""
    m = 6
    jets = write_data(tmp_path, 240, m)
    w = np.array([0.5, -1.25, 2.0, 0.0, 3.5, -0.75])
    save(linear_model(w, 0.3), tmp_path / "m.onnx")
    tree, result = run(tmp_path, m, {"jets": 5, **options})
    x_all = feature_matrix(jets, m)
    want = w * (x_all[tree["entry"]] - x_all.mean(axis=0))
    np.testing.assert_allclose(shap_matrix(tree, features(m)), want, atol=2e-5)
    np.testing.assert_allclose(np.asarray(tree["score"]), x_all[tree["entry"]] @ w + 0.3, atol=1e-5)
    assert result.fields["exact"] is ("max_exact" not in options)


# -- Kernel SHAP convergence and its error estimate -----------------------------------------------

def test_kernel_shap_converges_to_exact(tmp_path: Path) -> None:
    m = 12
    write_data(tmp_path, 200, m)
    weights = dense_weights([m, 24, 12, 1], seed=17)
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    exact_tree, exact = run(tmp_path, m, {"jets": 10})
    assert exact.fields["exact"] is True
    reference = shap_matrix(exact_tree, features(m))
    scale = np.abs(reference).mean()
    errors, estimates = {}, {}
    for budget in (60, 2000):
        tree, result = run(tmp_path, m, {"jets": 10, "max_exact": 0, "samples": budget})
        np.testing.assert_array_equal(tree["entry"], exact_tree["entry"])
        assert result.fields["exact"] is False and result.fields["coalitions_per_jet"] <= budget
        assert result.fields["additivity_max_abs_error"] < 1e-6
        errors[budget] = np.sqrt(np.mean((shap_matrix(tree, features(m)) - reference) ** 2))
        estimates[budget] = np.sqrt(np.mean(np.square(list(result.fields["error_estimate"].values()))))
    assert errors[2000] < errors[60]
    assert errors[2000] < 0.05 * scale
    # the reported error estimate is the right order of magnitude
    for budget in errors:
        assert estimates[budget] / 4 < errors[budget] < estimates[budget] * 4, (budget, errors, estimates)

    tree, result = run(tmp_path, m, {"jets": 10, "max_exact": 0, "method": "permutation", "samples": 4000})
    perm_error = np.sqrt(np.mean((shap_matrix(tree, features(m)) - reference) ** 2))
    assert perm_error < 0.05 * scale and result.fields["method"] == "permutation"


def test_balanced_subsets_are_uniform_and_even() -> None:
    """The sampled subsets have the drawn sizes, every player is in about the same number of
    them per size, and each subset is still uniform: over many draws every player is picked
    at the rate s/m (a chi-square-free check: within 5 binomial standard errors)."""
    from hepaudit.explainers.shap.kernel import _balanced_subsets

    m = 90
    rng = np.random.default_rng(3)
    size = rng.choice([2, 7, 30, 45, 60, 88], size=3000)
    picked = _balanced_subsets(m, size, rng)
    np.testing.assert_array_equal(picked.sum(axis=1), size)
    # a subset larger than m/2 is drawn as the complement of a small one: balance holds for the small sides
    small = np.minimum(size, m - size)
    small_sides = np.where((size > m - size)[:, None], ~picked, picked)
    for s in (2, 7, 30):  # blocks of one permutation are disjoint: counts differ by at most 1 per permutation
        rows = small_sides[small == s]
        per_perm = m // s
        n_perm = -(-len(rows) // per_perm)
        counts = rows.sum(axis=0)
        assert counts.max() - counts.min() <= n_perm, (s, counts.min(), counts.max(), n_perm)
        assert counts.max() - counts.min() < 0.5 * counts.mean()
    # uniformity over many independent designs: player 0's inclusion rate for size 7
    hits = trials = 0
    for seed in range(200):
        p = _balanced_subsets(m, np.full(20, 7), np.random.default_rng(seed))
        hits += int(p[:, 0].sum())
        trials += len(p)
    rate, expected = hits / trials, 7 / m
    assert abs(rate - expected) < 5 * np.sqrt(expected * (1 - expected) / trials)


# -- the subsample: mergeable, seeded, chunking-independent ----------------------------------------

def test_reservoir_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(0)
    entries = rng.permutation(5000).astype(np.int64)
    x = rng.normal(size=(5000, 3)).astype(np.float32)
    keys = entry_keys(entries, salt=1234)
    whole = Reservoir(50)
    whole.add(keys, entries, {"x": x}, x[:, 0].astype(float), np.zeros(5000, np.int8))
    parts = []
    for lo, hi in ((0, 1700), (1700, 1800), (1800, 5000)):
        r = Reservoir(50)
        score, labels = x[lo:hi, 0].astype(float), np.zeros(hi - lo, np.int8)
        r.add(keys[lo:hi], entries[lo:hi], {"x": x[lo:hi]}, score, labels)
        parts.append(r)
    merged = parts[2].merged(parts[0]).merged(parts[1])
    # independent: the 50 entries with the smallest keys
    want = np.sort(entries[np.argsort(keys)[:50]])
    np.testing.assert_array_equal(np.sort(merged.entries), want)
    np.testing.assert_array_equal(np.sort(whole.entries), want)
    rows = [int(np.flatnonzero(entries == e)[0]) for e in want]
    np.testing.assert_array_equal(merged.inputs["x"][np.argsort(merged.entries)], x[rows])


def test_reproducible_per_seed_and_independent_of_chunking(tmp_path: Path) -> None:
    m = 12
    write_data(tmp_path, 400, m)
    save(mlp_model(dense_weights([m, 16, 1], seed=18), "gemm"), tmp_path / "m.onnx")
    opts = {"jets": 7, "max_exact": 0, "samples": 300}
    t1, _ = run(tmp_path, m, opts, seed=3, step=70)
    t2, _ = run(tmp_path, m, opts, seed=3, step=70)
    t3, _ = run(tmp_path, m, opts, seed=3, step=400)
    t4, _ = run(tmp_path, m, opts, seed=4, step=70)
    for key in t1:
        np.testing.assert_array_equal(t1[key], t2[key])
        np.testing.assert_allclose(t1[key], t3[key], atol=1e-9)
    assert set(t1["entry"]) != set(t4["entry"])
    assert np.all(np.diff(t1["entry"]) > 0)


def test_coalitions_scored_on_threads_give_the_values_of_one_thread(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of coalitions are scored on ``model.threads`` threads by a one-thread twin of the
    tagger: the same SHAP values, bit for bit, as on one thread."""
    m = 12
    write_data(tmp_path, 400, m)
    save(mlp_model(dense_weights([m, 16, 1], seed=18), "gemm"), tmp_path / "m.onnx")
    callers: set[str] = set()
    plain_run = Tagger.run

    def run_and_record(self: Tagger, *args: object, **kwargs: object) -> object:
        if self._meter is not self:  # the one-thread twin
            callers.add(threading.current_thread().name)
        return plain_run(self, *args, **kwargs)

    monkeypatch.setattr(Tagger, "run", run_and_record)
    # 20 jets x 4 background rows: 51 coalitions a block, 12 blocks of the 600 coalitions
    opts = {"jets": 20, "max_exact": 0, "samples": 600, "background": "kmeans:4"}
    one, _ = run(tmp_path, m, opts, threads=1)
    two, _ = run(tmp_path, m, opts, threads=2)
    assert len(callers) >= 2
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert np.abs(one["shap_f0"]).sum() > 0


# -- end to end through the command line -----------------------------------------------------------

def test_cli_writes_the_shap_tree(tmp_path: Path) -> None:
    m = 4
    jets = write_data(tmp_path, 300, m)
    weights = dense_weights([m, 8, 1], seed=19)
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    cfg = config(tmp_path, m, {"jets": 9, "background": 40})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    shap = report["explainers"]["shap"]
    assert shap["status"] == "ok" and shap["options"]["background"] == 40 and shap["options"]["jets"] == 9
    with uproot.open(out / "per_jet.root") as f:
        tree = f["shap"].arrays(library="np")
        main = f["hepaudit"].arrays(["entry", "score"], library="np")
    labels = np.asarray(jets["is_signal"])
    entries = tree["entry"]
    assert len(entries) == shap["jets_explained"] == 18
    assert sorted(np.bincount(labels[entries]).tolist()) == [9, 9] and len(set(entries)) == 18
    np.testing.assert_array_equal(tree["label"], labels[entries])
    # values equal what the report says
    for item in shap["feature_importance"]:
        assert abs(np.abs(tree[f"shap_{item['feature']}"]).mean() - item["score"]) < 1e-9
        sig = labels[entries] == 1
        assert abs(np.abs(tree[f"shap_{item['feature']}"][sig]).mean() - item["score_signal"]) < 1e-9
    assert abs(tree["base_value"].mean() - shap["base_value"]) < 1e-9
    # additivity against the per-jet tree's score and an independent forward pass
    phi_sum = sum(tree[f"shap_{f}"] for f in features(m))
    score_main = main["score"][np.searchsorted(main["entry"], entries)]
    np.testing.assert_allclose(tree["base_value"] + phi_sum, score_main, atol=1e-6)
    x = feature_matrix(jets, m)[entries]
    np.testing.assert_allclose(tree["score"], mlp_forward(weights, x)[:, 0], atol=1e-6)
    assert shap["additivity_max_abs_error"] < 1e-6
    assert (out / "figures" / "shap_beeswarm.png").stat().st_size > 1000
    assert (out / "figures" / "shap_dependence.png").exists()


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    m = 3
    write_data(tmp_path, 50, m)
    save(mlp_model(dense_weights([m, 4, 1], seed=1), "gemm"), tmp_path / "m.onnx")
    for shap, needle in (({"background": "median"}, "explainers.shap: background"),
                         ({"groups": True}, "explainers.shap: groups"),
                         ({"groups": {"g": ["nothing_*"]}}, "explainers.shap.groups.g"),
                         ({"groups": {"a": ["f0"], "b": ["f*"]}}, "'f0' is in both")):
        proc = subprocess.run([sys.executable, "-m", "hepaudit.cli", "audit", str(config(tmp_path, m, shap)),
                               "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (shap, proc.stderr)
        assert needle in proc.stderr, (shap, proc.stderr)


def test_particles_layout_with_mask_input(tmp_path: Path) -> None:
    """A (N, P, F) constituents input plus a mask input: particle groups own the right
    positions, the mask keeps the jet's values. Linear in the features, so with the mean
    background φ_particle_i = Σ_f W_{i,f} (x_{i,f} − x̄_{i,f}); the mask term never moves."""
    import onnxruntime as ort
    from builders import make_jets

    from hepaudit.config import load_config
    from hepaudit.data.builders import InputBuilder
    from hepaudit.model.graph import describe_model
    from hepaudit.plugins import PluginHost

    n_part = 6
    rng = np.random.default_rng(3)
    w = rng.normal(size=(n_part * 3, 1)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["features"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["z0"]),
             helper.make_node("ReduceSum", ["mask", "axes"], ["msum"], keepdims=1),
             helper.make_node("Mul", ["msum", "c"], ["mterm"]),
             helper.make_node("Add", ["z0", "mterm"], ["score"])]
    graph = helper.make_graph(
        nodes, "pfn_like",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_part, 3]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", n_part])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.25, np.float32), "c"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), tmp_path / "m.onnx")
    write_jets(tmp_path / "jets.root", make_jets(200, seed=5, max_const=9))
    doc = {
        "model": {"path": "m.onnx"},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 80},
        "inputs": [{"name": "features", "kind": "constituents", "preprocess": "pfn", "layout": "particles",
                    "max_particles": n_part,
                    "momentum": {"px": "part_px", "py": "part_py", "pz": "part_pz", "energy": "part_energy"}},
                   {"name": "mask", "kind": "mask"}],
        "execution": {"progress": False},
        "explainers": {"shap": {"jets": 4, "groups": "particle"}},
    }
    cfg = tmp_path / "pfn.toml"
    cfg.write_text(toml_dumps(doc))
    result = hepaudit.audit(cfg, out=None, progress=False).explainers["shap"]
    assert result.status == "ok", result.error
    tree = result.trees["shap"]
    # the inputs, built independently of the explainer by the host's one input builder
    model_path = tmp_path / "m.onnx"
    session = ort.InferenceSession(str(model_path))
    infos = describe_model(onnx.load(str(model_path)), model_path).inputs
    builder = InputBuilder(load_config(cfg).inputs, PluginHost().recipes().recipes, infos)
    with uproot.open(tmp_path / "jets.root") as f:
        built = builder.build(f["jets"].arrays(builder.branches))
    feats = built["features"].astype(np.float64)  # (N, P, 3)
    mean = feats.mean(axis=0)
    x = feats[tree["entry"]]
    want = ((x - mean) * w.reshape(n_part, 3)).sum(axis=2)  # (jets, P)
    phi = shap_matrix(tree, [f"particle_{i}" for i in range(n_part)])
    np.testing.assert_allclose(phi, want, atol=2e-5)
    score = session.run(["score"], {k: v[tree["entry"]] for k, v in built.items()})[0][:, 0]
    np.testing.assert_allclose(tree["base_value"] + phi.sum(axis=1), score, atol=2e-5)
    assert result.fields["exact"] is True and np.abs(want).max() > 1e-2


def test_kernel_shap_with_fewer_coalitions_than_players_stays_bounded() -> None:
    """90 players, 10 / 50 / 200 coalitions: the fit is under-determined below 90, yet φ stays
    finite and bounded, adds up to f(x) − v(∅), and approaches a converged permutation
    reference as the budget grows (the old solver gave |φ| ≈ 1e15 at 50 coalitions)."""
    from hepaudit.explainers.shap.kernel import kernel_design, kernel_shap, permutation_shap

    m, rng = 90, np.random.default_rng(3)
    a = rng.normal(size=m) * np.linspace(2.0, 0.1, m)
    x = rng.normal(size=(3, m))

    def game(coalitions: np.ndarray) -> np.ndarray:  # v(S) = tanh(Σ_{i∈S} a_i x_i) per jet
        return np.tanh(x @ (coalitions.T * a[:, None]) / 4.0)

    v_empty = np.zeros(3)
    f_x = game(np.ones((1, m), bool))[:, 0]
    reference, _ = permutation_shap(game, m, 4000, v_empty, f_x, np.random.default_rng(0))
    errors = []
    for budget in (10, 50, 200):
        design = kernel_design(m, budget, np.random.default_rng(budget))
        phi, err = kernel_shap(design, game(design.coalitions), v_empty, f_x)
        assert np.isfinite(phi).all()
        np.testing.assert_allclose(phi.sum(axis=1), f_x - v_empty, atol=1e-9)
        assert np.abs(phi).max() < 10 * np.abs(reference).max()
        assert np.isnan(err).all() == (len(design.coalitions) < m)  # no error estimate when under-determined
        errors.append(float(np.sqrt(((phi - reference) ** 2).mean())))
    assert errors[2] < errors[0]


def test_under_determined_shap_says_so(tmp_path: Path) -> None:
    """The audit reports an under-determined fit in its warnings, with no error estimate."""
    m = 20
    write_data(tmp_path, 140, m)
    weights = dense_weights([m, 8, 1], seed=2)
    save(mlp_model(weights), tmp_path / "m.onnx")
    _, result = run(tmp_path, m, {"samples": 12, "jets": 3})
    assert result.status == "ok"
    assert any("under-determined" in w for w in result.warnings)
    assert result.fields["error_estimate"] is None


def test_background_drawn_from_the_reference_sample(tmp_path: Path) -> None:
    """background = "reference:N" with N ≥ the reference's jets: the background is every jet of
    [reference] (the training sample, as the paper uses), not of the audited data."""
    m = 4
    jets = write_data(tmp_path, 60, m, seed=9)
    ref = make_flat_jets(25, m, seed=31)
    write_jets(tmp_path / "ref.root", ref)
    weights = dense_weights([m, 12, 1], seed=12)
    save(mlp_model(weights, "gemm"), tmp_path / "m.onnx")
    doc = {
        "model": {"path": "m.onnx"},
        "data": {"files": ["jets.root"], "tree": "jets", "label": "is_signal", "step_size": 70},
        "reference": {"files": ["ref.root"], "tree": "jets"},
        "inputs": [{"name": "x", "kind": "jet", "branches": features(m)}],
        "execution": {"progress": False},
        "explainers": {"shap": {"jets": 3, "background": "reference:1000"}},
    }
    path = tmp_path / "ref.toml"
    path.write_text(toml_dumps(doc))
    result = hepaudit.audit(path, out=None).explainers["shap"]
    assert result.status == "ok", result.error
    assert result.fields["background_rows"] == 25 and "reference" in result.fields["background_description"]
    tree = result.trees["shap"]
    x_all, x_ref = feature_matrix(jets, m), feature_matrix(ref, m)
    phi = shap_matrix(tree, features(m))
    for j, entry in enumerate(tree["entry"]):
        want = brute_force_subsets(sigmoid_score(weights), x_all[entry], x_ref, [[k] for k in range(m)])
        np.testing.assert_allclose(phi[j], want, atol=1e-6, rtol=0)
